"""Issue 5 acceptance over real DDS, every node started as its console script:
train from a bag (trainer_node), replay a test bag (replay_node) through inspector + evaluator, and
compare the evaluator's report with the offline evaluation of the same bag."""
import json

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("torch")
pytest.importorskip("rosbags")

from helpers import TINY_MODEL_CONFIG  # noqa: E402
from mentor3ad.ros.tooling.graph import NodeProcess, ResultCollector, spin_until  # noqa: E402
from mentor3ad.package_files import package_executable  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow, pytest.mark.timeout(300)]

SIZE = (64, 64)
TEST_DEFECTS = ["good", "good", "good", "bump", "scratch", "bump", "scratch"]


def _exe(name):
    path = package_executable(name)
    assert path, f"console script {name} not installed (run ./run.sh setup or colcon build)"
    return path


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    """A training bag of good parts and a labelled test bag, written by the data tools."""
    import yaml

    from mentor3ad.io.bags import write_dataset_bag
    from mentor3ad.io.datasets.synthetic import DEFECT_TYPES, camera_matrix, generate_sample

    root = tmp_path_factory.mktemp("acceptance")
    defects = [d if d == "good" or d in DEFECT_TYPES else DEFECT_TYPES[i % len(DEFECT_TYPES)]
               for i, d in enumerate(TEST_DEFECTS)]
    K = camera_matrix(SIZE)
    train = [generate_sample(i, SIZE, name=f"train/{i:03d}") for i in range(8)]
    test = [generate_sample(500 + i, SIZE, defect=d, name=f"test/{d}/{i:03d}") for i, d in enumerate(defects)]
    train_bag = write_dataset_bag(train, root / "train_bag", camera_info=K)
    test_bag = write_dataset_bag(test, root / "test_bag", storage="mcap", camera_info=K,
                                 start_stamp_ns=1_750_000_000 * 10**9)
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(json.loads(json.dumps(TINY_MODEL_CONFIG))))
    return {"root": root, "train": train_bag, "test": test_bag, "config": config, "n_test": len(test)}


def run_trainer(extra_params, timeout=180):
    args = [_exe("trainer_node"), "--ros-args"]
    for key, value in extra_params.items():
        args += ["-p", f"{key}:={value}"]
    with NodeProcess(args) as trainer:
        code = trainer.wait(timeout)
        return code, trainer.output()


def test_trainer_refuses_a_bag_without_the_topics_and_lists_them(bags):
    code, output = run_trainer({"bag_paths": f"['{bags['train']}']", "image_topic": "/camera/rgb",
                                "output_model_path": str(bags["root"] / "never.m3ad"),
                                "config_file": str(bags["config"]), "device": "cpu"})
    assert code == 1, output
    assert "/camera/rgb" in output and "/camera/image" in output and "/camera/points" in output, output
    assert not (bags["root"] / "never.m3ad").exists()


def wait_for_a_clean_graph(ros_node, collector) -> None:
    """No inspector, evaluator or camera reader of an earlier test left in the DDS graph: a stale one there (its
    endpoints can outlive its process for a while) would let this test's replay start before its own nodes are
    up, and the evaluator would wait for results that never come."""
    assert spin_until(ros_node, lambda: collector.sub.get_publisher_count() == 0
                      and ros_node.count_subscribers("/inspector/result") == 1  # the collector alone
                      and ros_node.count_subscribers("/camera/image") == 0, 30.0), ros_node.get_node_names()


def test_train_from_bag_then_replay_through_inspector_and_evaluator(bags, ros_node, tmp_path):
    from diagnostic_msgs.msg import DiagnosticStatus
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    # --- train with the trainer node; progress arrives on ~/progress
    model = tmp_path / "model.m3ad"
    progress = []
    ros_node.create_subscription(DiagnosticStatus, "/trainer/progress", progress.append, QoSProfile(
        depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    code, output = run_trainer({"bag_paths": f"['{bags['train']}']", "output_model_path": str(model),
                                "config_file": str(bags["config"]), "device": "cpu", "val_fraction": 0.25})
    assert code == 0, output
    assert model.is_file() and not list(tmp_path.glob("*.tmp*"))
    assert "training on 6 pairs, calibrating on 2 held-out pairs" in output, output
    spin_until(ros_node, lambda: any(s.values and s.values[0].value == "done" for s in progress), 5.0)
    assert progress and progress[-1].level == DiagnosticStatus.OK and "model written" in progress[-1].message

    # --- live graph: inspector + evaluator, then replay the test bag with /clock
    report_dir = tmp_path / "ros_report"
    inspector_cmd = [_exe("inspector_node"), "--ros-args", "-p", f"model_path:={model}", "-p", "device:=cpu",
                     "-p", "use_sim_time:=true", "-p", "queue_size:=64",
                     "-r", "image:=/camera/image", "-r", "points:=/camera/points"]
    for topic in ("camera/image", "camera/points"):
        inspector_cmd += ["-p", f"qos_overrides./{topic}.subscription.reliability:=reliable",
                          "-p", f"qos_overrides./{topic}.subscription.depth:=50"]
    evaluator_cmd = [_exe("evaluator_node"), "--ros-args", "-p", f"ground_truth_bag:={bags['test']}",
                     "-p", f"output_dir:={report_dir}", "-p", "exit_when_done:=true", "-p", "use_sim_time:=true",
                     "-r", "result:=/inspector/result", "-r", "anomaly_map:=/inspector/anomaly_map"]
    collector = ResultCollector(ros_node, "/inspector/result")
    wait_for_a_clean_graph(ros_node, collector)
    with NodeProcess(inspector_cmd) as inspector, NodeProcess(evaluator_cmd) as evaluator:
        assert collector.wait_for_publisher(60.0), inspector.output()
        assert collector.wait_for_readers(2, 60.0), evaluator.output()  # the evaluator must not miss a result
        replay_cmd = [_exe("replay_node"), str(bags["test"]), "--rate", "5", "--clock", "--wait-for-subscribers",
                      "--topics", "/camera/image", "/camera/points"]
        with NodeProcess(replay_cmd) as replay:
            collector.wait_for(bags["n_test"], 90.0)
            assert replay.wait(60.0) == 0, replay.output()
        assert evaluator.wait(60.0) == 0, evaluator.output() + inspector.output()
        collector.wait_for(bags["n_test"] + 1, 0.5)
        assert inspector.proc.poll() is None, inspector.output()

    # every replayed pair got exactly one result with its stamp
    from mentor3ad.io.bags import read_bag_samples

    samples = list(read_bag_samples(bags["test"]))
    stamps = [s.stamp_ns for s in samples]
    assert sorted(r.stamp_ns for r in collector.results) == stamps
    assert all(r.verdict in ("PASS", "FAIL") for r in collector.results), collector.results

    # the evaluator's report equals `mentor3ad evaluate` on the same bag
    import subprocess

    cli = subprocess.run([package_executable("mentor3ad"), "evaluate", "--model", str(model),
                          "--data", str(bags["test"]), "--out", str(tmp_path / "offline"), "--no-naive",
                          "--no-progress"], capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    offline = json.loads((tmp_path / "offline" / "report.json").read_text())
    ros_report = json.loads((report_dir / "report.json").read_text())
    summary = json.loads((report_dir / "ros_summary.json").read_text())
    assert summary["evaluated_pairs"] == len(samples) and summary["not_evaluated"] == []
    assert set(ros_report["metrics"]) == set(offline["metrics"])
    assert all(np.isfinite(offline["metrics"][k]) for k in ("i_auroc", "p_auroc", "aupro_30"))
    for key, value in offline["metrics"].items():
        if isinstance(value, float) and np.isfinite(value):
            assert ros_report["metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert [s["name"] for s in ros_report["samples"]] == [s.name for s in samples]
    assert ros_report["verdicts"]["true_positives"] == offline["verdicts"]["true_positives"]


def test_evaluator_lists_pairs_it_could_not_evaluate(bags, ros_node, tmp_path):
    report_dir = tmp_path / "no_model_report"
    inspector_cmd = [_exe("inspector_node"), "--ros-args", "-r", "image:=/camera/image", "-r", "points:=/camera/points"]
    for topic in ("camera/image", "camera/points"):
        inspector_cmd += ["-p", f"qos_overrides./{topic}.subscription.reliability:=reliable"]
    evaluator_cmd = [_exe("evaluator_node"), "--ros-args", "-p", f"ground_truth_bag:={bags['test']}",
                     "-p", f"output_dir:={report_dir}", "-p", "exit_when_done:=true",
                     "-r", "result:=/inspector/result", "-r", "anomaly_map:=/inspector/anomaly_map"]
    collector = ResultCollector(ros_node, "/inspector/result")
    wait_for_a_clean_graph(ros_node, collector)
    with NodeProcess(inspector_cmd) as inspector, NodeProcess(evaluator_cmd) as evaluator:
        assert collector.wait_for_publisher(60.0), inspector.output()
        assert collector.wait_for_readers(2, 60.0), evaluator.output()  # the evaluator must not miss a result
        with NodeProcess([_exe("replay_node"), str(bags["test"]), "--rate", "10", "--wait-for-subscribers",
                          "--topics", "/camera/image", "/camera/points"]) as replay:
            assert replay.wait(60.0) == 0, replay.output()
        assert evaluator.wait(60.0) == 1, evaluator.output()
        assert "no pair could be evaluated" in evaluator.output()
    summary = json.loads((report_dir / "ros_summary.json").read_text())
    assert summary["evaluated_pairs"] == 0 and len(summary["not_evaluated"]) == bags["n_test"]
    assert all(p["verdict"] == "ERROR" and "model_path is empty" in p["reason"] for p in summary["not_evaluated"])
    assert [p["name"] for p in summary["not_evaluated"]][0].startswith("test/")
