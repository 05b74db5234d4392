"""The one threshold record (model/threshold.py): built from scores by the calibration rules, carried by every
detector, stored in the model file, and rebuilt for model files written before it."""
import json
import math
import re

import pytest

from helpers import train_tiny_model
from mentor3ad.config import CalibrationConfig
from mentor3ad.errors import ConfigError
from mentor3ad.model.calibration import calibrate_by_config, calibrate_f1, calibration_outliers
from mentor3ad.model.threshold import (ThresholdRecord, ThresholdSource, from_good_scores, from_labelled_scores, manual,
                                       significant)


def test_a_good_scores_record_holds_rule_sources_rates_and_the_sorted_scores():
    scores = [1.2345678, 0.5, 0.75, 0.6, 9.0, 0.55, 0.7]
    calibration = CalibrationConfig(target_false_reject_rate=0.05, margin=0.1)
    record = from_good_scores(scores, calibration, [ThresholdSource("validation", 7)], set_by="train")
    assert record.value == calibrate_by_config(scores, calibration)
    assert (record.rule, record.target_false_reject_rate, record.margin) == ("tail", 0.05, 0.1)
    assert record.calibration_scores == (0.5, 0.55, 0.6, 0.7, 0.75, 1.23457, 9.0)  # sorted, 6 significant digits
    assert record.outliers == tuple(significant(scores[i]) for i in calibration_outliers(scores)) == (9.0,)
    assert set(record.expected_false_reject_rate) == {"expected", "low", "high", "empirical"}
    assert record.expected_false_reject_rate["empirical"] == 0.0 and record.source == "validation"
    assert record.set_by == "train" and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record.set_at)
    assert ThresholdRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record  # JSON round trip
    with pytest.raises(ConfigError, match="kind"):
        ThresholdSource("holdout", 3)


def test_labelled_and_manual_records():
    scores, labels = [0.1, 0.2, 0.3, 0.35, 0.6, 0.7, 0.8], [0, 0, 0, 1, 0, 1, 1]
    source = ThresholdSource("recalibration", 7, "cell (test split)")
    record, f1 = from_labelled_scores(scores, labels, [source], "calibrate", replaced=0.9)
    assert (record.value, f1) == calibrate_f1(scores, labels)
    assert record.rule == "f1" and record.target_false_reject_rate is None and record.replaced == 0.9
    assert record.calibration_scores == (0.1, 0.2, 0.3, 0.6)  # the good parts' scores only
    assert record.expected_false_reject_rate["empirical"] == pytest.approx(0.25)
    assert "cell (test split)" in record.describe()
    first = manual(0.5, replaced=math.inf)
    assert first.rule == "manual" and first.replaced is None and first.sources == (ThresholdSource("manual", 0),)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("threshold") / "tiny.safetensors"
    return train_tiny_model(path, n_val=3), path


def test_the_record_travels_with_the_model_file(saved):
    from mentor3ad.model.detector import Detector

    detector, path = saved
    record = detector.threshold_record
    assert record.value == detector.threshold and record.set_by == "train"
    assert record.sources == (ThresholdSource("validation", 3),) and len(record.calibration_scores) == 3
    loaded = Detector.load(path)
    assert loaded.threshold_record == record and loaded.training_info["threshold"] == record.to_dict()
    loaded.threshold = 2 * record.value  # set by hand: a manual record that names the value it replaced
    assert loaded.threshold_record.rule == "manual" and loaded.threshold_record.replaced == record.value
    with pytest.raises(ValueError, match="NaN"):
        loaded.threshold = float("nan")


def test_a_model_file_from_before_the_record_loads_with_a_legacy_one(saved, tmp_path):
    from safetensors.torch import load_file, safe_open, save_file

    from mentor3ad.model.checkpoint import METADATA_KEY
    from mentor3ad.model.detector import Detector

    detector, path = saved
    with safe_open(str(path), "pt") as handle:
        metadata = json.loads(handle.metadata()[METADATA_KEY])
    info = metadata["training_info"]
    del info["threshold"]  # the keys training wrote before the record:
    info.update(threshold_source="validation+cv", calibration_outliers=[7.5],
                threshold_rule="tail, target false-reject rate 0.02 on 3 held-out + 6 cross-validated training good scores",
                expected_false_reject_rate={"expected": 0.004, "low": None, "high": None, "empirical": 0.0, "n": 9})
    old = tmp_path / "old.safetensors"
    save_file(load_file(str(path)), str(old), metadata={METADATA_KEY: json.dumps(metadata)})
    loaded = Detector.load(old)
    record = loaded.threshold_record
    assert loaded.model_id == detector.model_id and record.value == detector.threshold
    assert (record.set_by, record.rule, record.target_false_reject_rate) == ("legacy", "tail", 0.02)
    assert [s.kind for s in record.sources] == ["validation", "cv"] and record.outliers == (7.5,)
    assert record.expected_false_reject_rate == {"expected": 0.004, "low": None, "high": None, "empirical": 0.0}
    assert record.set_at == metadata["saved_at"] and record.calibration_scores == ()
    assert "threshold_source" not in loaded.training_info  # one format in memory (and in the file once re-saved)
