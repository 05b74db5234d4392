"""`mentor3ad calibrate`: the threshold is re-computed by the chosen rule and stored in the model file."""
import json

import numpy as np
import pytest
from helpers import run_mentor3ad

pytest.importorskip("torch")

from mentor3ad.model.calibration import calibrate_f1, calibrate_false_reject  # noqa: E402
from mentor3ad.io.datasets.mvtec import load_mvtec_split  # noqa: E402
from mentor3ad.io.datasets.synthetic import generate_cell_dataset  # noqa: E402
from mentor3ad.model.detector import Detector  # noqa: E402
from helpers import train_tiny_model  # noqa: E402


def _cli(*args):
    return run_mentor3ad("calibrate", "--no-progress", *args)


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("calibrate")
    data = root / "cell"
    generate_cell_dataset(data, n_train=2, n_val=4, n_test_good=3, n_test_per_defect=1, resolution=(64, 64), seed=3)
    model = root / "model.safetensors"
    train_tiny_model(model)
    return model, data


def test_false_reject_rule_on_good_parts_rewrites_the_model(model_and_data, tmp_path):
    model, data = model_and_data
    out = tmp_path / "frr.safetensors"
    original = Detector.load(model).threshold
    code, stdout, output = _cli("--model", str(model), "--data", str(data), "--target-frr", "0.5", "--out", str(out))
    assert code == 0, output
    detector = Detector.load(out)
    scores = [p.score for p in detector.predict_samples(load_mvtec_split(data, "validation"), progress=False)]
    expected = calibrate_false_reject(scores, 0.5)
    assert detector.threshold == pytest.approx(expected)
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["threshold"] == pytest.approx(expected) and summary["old_threshold"] == pytest.approx(original)
    assert np.mean(np.asarray(scores) > detector.threshold) <= 0.5
    assert Detector.load(model).threshold == original  # --out leaves the input model untouched
    # both expected rates at the new threshold and the alternatives, the chosen one marked, before the JSON line
    record = detector.threshold_record
    lines = stdout.strip().splitlines()
    assert f"pseudo-defect escape rate: {6 * len(scores)} pseudo-defects of {len(scores)} calibration parts" in stdout
    said = [line for line in lines if line.startswith(f"at threshold {record.value:.4g}: expected false-reject")]
    assert len(said) == 1 and "pseudo-defect escape rate" in said[0] and "not real defects" in said[0]
    rows = [line for line in lines
            if line.startswith("  ") and ("target false-reject" in line or "max calibration" in line)]
    assert len(rows) == 6 and [line[2] for line in rows].count("*") == 1  # 0.5/1/2/5 %, the chosen 50 %, the max
    assert "* target false-reject 50 %" in stdout and record.expected_escape_rate["n"] == 6 * len(scores)
    assert summary["expected_escape_rate"]["rate"] == record.expected_escape_rate["rate"]
    assert [r["threshold"] for r in summary["alternatives"]] == [r["threshold"] for r in record.alternatives]


def test_f1_rule_on_labelled_parts(model_and_data, tmp_path):
    model, data = model_and_data
    out = tmp_path / "f1.safetensors"
    code, stdout, output = _cli("--model", str(model), "--data", str(data), "--rule", "f1", "--out", str(out))
    assert code == 0, output
    test = load_mvtec_split(data, "test")
    scores = [p.score for p in Detector.load(model).predict_samples(test, progress=False)]
    threshold, f1 = calibrate_f1(scores, [s.label for s in test])
    assert Detector.load(out).threshold == pytest.approx(threshold)
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["f1"] == pytest.approx(f1) and summary["split"] == "test"
    assert [s.data for s in Detector.load(out).threshold_record.sources] == [f"{data} (test split)"]
    # without --split the test split is used, and a warning line says so (not on stdout: its last line is JSON)
    warning = [line for line in output.splitlines() if "calibrate: warning" in line]
    assert len(warning) == 1 and "mentor3ad calibrate: warning: --rule f1 without --split" in warning[0]
    assert "test split" in warning[0] and "optimistic" in warning[0] and "calibrate: warning" not in stdout


def test_f1_rule_on_an_explicit_split_says_nothing_more(model_and_data, tmp_path):
    model, data = model_and_data
    code, stdout, output = _cli("--model", str(model), "--data", str(data), "--rule", "f1", "--split", "test",
                                "--out", str(tmp_path / "f1.safetensors"))
    assert code == 0, output
    assert "calibrate: warning" not in output and json.loads(stdout.strip().splitlines()[-1])["split"] == "test"
    # the validation split holds good parts only: F1 needs defective ones, one line says so
    code, _, output = _cli("--model", str(model), "--data", str(data), "--rule", "f1", "--split", "validation")
    assert code == 1 and "needs at least one anomalous sample" in output and "Traceback" not in output


def test_false_reject_rule_refuses_defective_parts(model_and_data):
    model, data = model_and_data
    code, _, output = _cli("--model", str(model), "--data", str(data), "--split", "test")
    assert code != 0 and "needs good parts only" in output
