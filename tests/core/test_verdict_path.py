"""The verdict path never turns a broken number into PASS: non-finite maps, scores and thresholds are ERROR
with a reason naming the cause, in ``decide()`` and through ``Detector.predict`` of a model broken in memory."""
import math
import re

import numpy as np
import pytest
import torch

from helpers import train_tiny_model
from mentor3ad.io.datasets.synthetic import generate_sample
from mentor3ad.model.detector import Detector
from mentor3ad.model.postprocess import decide
from mentor3ad.types import Verdict


def _map(value=None, where=(3, 4)):
    amap = np.full((8, 8), 0.2, np.float32)
    if value is not None:
        amap[where] = value
    return amap


@pytest.mark.parametrize("value, counts", [(np.nan, "1 NaN, 0 infinite"), (np.inf, "0 NaN, 1 infinite"),
                                           (-np.inf, "0 NaN, 1 infinite")])
def test_decide_non_finite_map_is_error(value, counts):
    result = decide(_map(value), threshold=0.5)
    assert result.verdict is Verdict.ERROR
    assert f"non-finite anomaly map ({counts} values of 64)" in result.reason
    assert math.isnan(result.score) and not result.regions


def test_decide_all_nan_map_is_error_not_pass():
    result = decide(np.full((8, 8), np.nan, np.float32), threshold=1e30)
    assert result.verdict is Verdict.ERROR and "64 NaN" in result.reason


def test_decide_empty_map_is_error():
    result = decide(np.zeros((0, 8), np.float32), threshold=1.0)
    assert result.verdict is Verdict.ERROR and "empty anomaly map" in result.reason


@pytest.mark.parametrize("threshold", [math.nan, math.inf, -math.inf])
def test_decide_non_finite_threshold_is_error(threshold):
    result = decide(_map(), threshold=threshold)
    assert result.verdict is Verdict.ERROR
    assert f"the decision threshold is {threshold}" in result.reason


def test_decide_finite_inputs_decide():
    assert decide(_map(), threshold=0.5).verdict is Verdict.PASS
    failed = decide(_map(0.9), threshold=0.5)
    assert failed.verdict is Verdict.FAIL and failed.score == pytest.approx(0.9) and failed.regions


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    path = tmp_path_factory.mktemp("verdicts") / "tiny.safetensors"
    trained = train_tiny_model(path)
    return Detector.load(path, extractor=trained.extractor)


@pytest.fixture(scope="module")
def part():
    sample = generate_sample(7, (64, 64), "dent")
    return sample.rgb, sample.xyz


def _broken(detector, name, value):
    """Context: one head tensor overwritten in memory (restored afterwards)."""
    class Broken:
        def __enter__(self):
            self.tensor = dict(detector.heads.named_parameters(), **dict(detector.heads.named_buffers()))[name]
            self.saved = self.tensor.detach().clone()
            with torch.no_grad():
                self.tensor.fill_(value)
            detector._model_id = None

        def __exit__(self, *exc):
            with torch.no_grad():
                self.tensor.copy_(self.saved)
            detector._model_id = None

    return Broken()


def test_predict_of_a_healthy_model_decides(detector, part):
    assert detector.predict(*part).verdict in (Verdict.PASS, Verdict.FAIL)


@pytest.mark.parametrize("name", ["mfm.fusion_mlp.0.weight", "mgm.rgb_to_xyz.head.4.bias", "voting.ocsvm.rho"])
def test_nan_weights_in_memory_give_error(detector, part, name):
    with _broken(detector, name, float("nan")):
        for threshold in (None, 1e30):  # also an override high enough that any finite score would PASS
            result = detector.predict(*part, threshold=threshold)
            assert result.verdict is Verdict.ERROR, result
            assert "non-finite anomaly map" in result.reason and "NaN" in result.reason
            assert math.isnan(result.score)
    assert detector.predict(*part).verdict is not Verdict.ERROR  # restored


@pytest.mark.parametrize("value, counts", [(np.inf, r"0 NaN, 1 infinite"), (-np.inf, r"0 NaN, 1 infinite"),
                                           (np.nan, r"1 NaN, 0 infinite")])
def test_non_finite_grid_value_through_predict_gives_error(detector, part, monkeypatch, value, counts):
    # one patch of the heads' grid is non-finite: upsampling spreads it, the verdict must be ERROR
    original = detector.maps_from_features

    def one_bad_patch(rgb, xyz, valid):
        maps = original(rgb, xyz, valid).clone()
        maps[:, 2, 3] = float(value)
        return maps

    monkeypatch.setattr(detector, "maps_from_features", one_bad_patch)
    result = detector.predict(*part, threshold=1e30)
    assert result.verdict is Verdict.ERROR and "non-finite anomaly map (" in result.reason
    assert re.search(r"\d+ (NaN|infinite)", result.reason) and math.isnan(result.score)


def test_infinite_offset_in_memory_is_not_a_pass(detector, part):
    # rho = +inf: the Voting Module clamps exp()'s argument at 60, so the map saturates: FAIL, never PASS
    with _broken(detector, "voting.ocsvm.rho", float("inf")):
        result = detector.predict(*part)
    assert result.verdict is Verdict.FAIL and result.score > 1e25


def test_negative_infinite_offset_in_memory_is_not_a_pass(detector, part):
    with _broken(detector, "voting.ocsvm.rho", float("-inf")):
        result = detector.predict(*part)
    assert result.verdict is Verdict.ERROR


def test_predict_with_a_non_finite_threshold_override(detector, part):
    for threshold in (math.inf, -math.inf, math.nan):
        result = detector.predict(*part, threshold=threshold)
        assert result.verdict is Verdict.ERROR and "decision threshold is" in result.reason

