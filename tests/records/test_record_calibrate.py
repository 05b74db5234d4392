"""`mentor3ad calibrate --record`: a real (tiny) model re-calibrated from the parts an operator confirmed good."""
import json

import pytest

from helpers import run_mentor3ad, synthetic_sample, train_tiny_model
from mentor3ad.records import RecordReader, RecordWriter


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    pytest.importorskip("torch")
    path = tmp_path_factory.mktemp("record_model") / "model.safetensors"
    train_tiny_model(path)
    return path


def test_calibrate_from_parts_an_operator_confirmed(tiny_model, tmp_path):
    from mentor3ad.errors import InputError
    from mentor3ad.model.calibration import calibrate_by_config
    from mentor3ad.model.detector import Detector
    from mentor3ad.records.recalibration import recalibrate_from_record

    record = tmp_path / "line.sqlite"
    detector = Detector.load(tiny_model)
    code, stdout, output = run_mentor3ad("record", "add-model", "--record", record, "--model", tiny_model)
    assert code == 0 and json.loads(stdout)["model_id"] == detector.model_id, output
    samples = [synthetic_sample(200 + i, size=64) for i in range(8)]
    results = detector.predict_batch([(s.rgb, s.xyz) for s in samples])
    writer = RecordWriter(record, cell="cell-1")
    for index, result in enumerate(results):
        writer.submit(result, part_id=f"G-{index}")
    assert writer.close()
    with pytest.raises(InputError, match="0 parts of model .* mentor3ad record confirm"):
        recalibrate_from_record(detector, RecordReader(record))
    confirmed = [f"G-{i}" for i in range(6)]  # the operator checked six of the eight parts
    assert run_mentor3ad("record", "confirm", "--record", record, "--operator", "alice",
                         *[a for p in confirmed for a in ("--part", p)])[0] == 0
    code, stdout, output = run_mentor3ad("calibrate", "--model", tiny_model, "--record", record, "--target-frr", "0.2",
                                         "--out", tmp_path / "m2.safetensors")
    assert code == 0, output
    summary = json.loads(stdout.strip().splitlines()[-1])
    scores = [r.score for r in results[:6]]
    expected = calibrate_by_config(scores, detector.config.calibration, 0.2)
    assert summary["threshold"] == pytest.approx(expected) and summary["confirmed_parts"] == 6
    assert summary["parent_model_id"] == detector.model_id
    recalibrated = Detector.load(tmp_path / "m2.safetensors")
    assert recalibrated.threshold == pytest.approx(expected)
    assert recalibrated.training_info["threshold"]["calibration_scores"] == pytest.approx(sorted(scores), rel=1e-5)
    reader = RecordReader(record)
    assert reader.model(summary["model_id"]).parent_model_id == detector.model_id
    assert reader.lineage(summary["model_id"]) == [summary["model_id"], detector.model_id]
    # the re-calibrated model finds its parent's confirmed parts again (same heads, same scores)
    again = recalibrate_from_record(recalibrated, reader, 0.2)
    assert again["confirmed_parts"] == 6 and again["threshold"] == pytest.approx(expected)
