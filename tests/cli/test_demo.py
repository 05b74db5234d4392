"""The README's main job (`mentor3ad demo`) end to end on a tiny configuration: synthetic cell ->
training -> offline evaluation -> rosbag replay through the live inspector and evaluator nodes."""
import json
import re
import subprocess

import pytest
from helpers import TINY_MODEL_CONFIG, set_arguments
from mentor3ad.package_files import package_executable

pytest.importorskip("rclpy")
pytestmark = [pytest.mark.ros, pytest.mark.slow, pytest.mark.timeout(600)]

TINY = ["--set", "features.rgb_weights=none", *set_arguments({key: TINY_MODEL_CONFIG[key] for key in ("features", "train")})]


def test_demo_runs_every_stage_and_ros_replay_matches_offline(tmp_path):
    mentor3ad = package_executable("mentor3ad")
    cmd = [str(mentor3ad), "demo", "--dataset-scale", "0.25", "--resolution", "64", "--no-progress",
           "--data", str(tmp_path / "data"), "--work-dir", str(tmp_path / "run"),
           "--cache-dir", str(tmp_path / "cache"), "--models-dir", str(tmp_path / "models"), *TINY]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=500)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    for stage in ("[1/4]", "[2/4]", "[3/4]", "[4/4]"):
        assert stage in out, out
    assert re.search(r"\| Mentor3AD \| [0-9.]+ \|", out) and "| naive baseline |" in out, out
    n_test = sum(1 for p in (tmp_path / "data" / "test").glob("*/rgb/*.png"))
    assert f"{n_test} results for {n_test} parts" in out, out
    assert "ROS replay verdicts and metrics match the offline evaluation" in out, out
    report = json.loads((tmp_path / "run" / "report" / "report.json").read_text())
    ros_report = json.loads((tmp_path / "run" / "ros_report" / "report.json").read_text())
    assert ros_report["metrics"]["i_auroc"] == pytest.approx(report["metrics"]["i_auroc"], abs=1e-6)
    assert (tmp_path / "run" / "model.safetensors").is_file()
    # every replayed part is in the inspection record, once, as the inspector answered it
    from mentor3ad.records import RecordReader

    record = tmp_path / "run" / "record.sqlite"
    assert f"inspection record: {n_test} of {n_test} parts in {record}" in out, out
    assert f"./run.sh mentor3ad dashboard --record {record}" in out, out
    reader = RecordReader(record)
    rows = reader.session().query("SELECT stamp_ns, verdict, model_id, part_type, overlay FROM results")
    printed = re.search(r"results for \d+ parts: PASS (\d+), FAIL (\d+), ERROR (\d+), SKIPPED (\d+)", out).groups()
    assert len(rows) == len({row["stamp_ns"] for row in rows}) == n_test
    assert [sum(row["verdict"] == v for row in rows) for v in ("PASS", "FAIL", "ERROR", "SKIPPED")] == list(
        map(int, printed))
    (model,) = reader.models()
    assert {row["model_id"] for row in rows} == {model.model_id} and model.calibration_scores
    assert all((reader.evidence_dir / row["overlay"]).is_file() for row in rows if row["verdict"] == "FAIL")
    assert {row["part_type"] for row in rows} == {"synthetic_cell"}
    reader.close()

    # a second run reuses the dataset and the feature cache
    proc = subprocess.run(cmd + ["--no-ros"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[1/4] generating" not in proc.stdout and "ROS replay skipped" in proc.stdout
