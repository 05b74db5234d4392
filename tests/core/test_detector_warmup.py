"""Detector.warmup pays lazy initialisation on a synthetic part and leaves the model unchanged."""
import numpy as np
import pytest

pytest.importorskip("torch")

from mentor3ad.io.datasets.synthetic import generate_sample  # noqa: E402
from helpers import train_tiny_model  # noqa: E402


def test_warmup_runs_a_prediction_and_changes_nothing(tmp_path):
    detector = train_tiny_model(tmp_path / "m.safetensors")
    sample = generate_sample(7, (64, 64))
    before = detector.predict(sample.rgb, sample.xyz)
    seconds = detector.warmup(runs=2)
    assert 0.0 < seconds < 60.0
    after = detector.predict(sample.rgb, sample.xyz)
    np.testing.assert_array_equal(before.anomaly_map, after.anomaly_map)
    assert detector.timings()["total"] > 0
