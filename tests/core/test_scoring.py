"""The scoring protocol (model/scoring.py) that the Detector, the PatchCore yardstick and the naive baseline share:
score_samples -> one map per part at its input size, predict_samples = judge of exactly those maps."""
import inspect

import numpy as np
import pytest

from helpers import synthetic_sample, train_tiny_model
from mentor3ad.eval.baselines import NaiveBaseline
from mentor3ad.eval.patchcore import PatchCore
from mentor3ad.model.scoring import PartScorer
from mentor3ad.types import Verdict


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    # the peak above the part level, as configured (not left to calibration.image_score auto's choice)
    return train_tiny_model(tmp_path_factory.mktemp("scoring") / "tiny.safetensors", calibration={"image_score": "level"})


def test_detector_patchcore_and_naive_answer_through_one_protocol(detector, tmp_path):
    from mentor3ad.features.cache import extract_features
    from mentor3ad.features.extractor import stack_features

    train = [synthetic_sample(i) for i in range(4)]
    parts = [synthetic_sample(31), synthetic_sample(32, defect="stain"), synthetic_sample(33, size=96)]
    core = PatchCore.for_detector(detector.config, "rgb+xyz", extractor=detector.extractor)
    core.fit(stack_features(extract_features(train, detector.extractor)))
    naive = NaiveBaseline().fit(train)
    for scorer, samples in ((detector, parts), (core, parts), (naive, parts[:2])):  # naive: one image size only
        assert inspect.signature(type(scorer).predict_samples) == inspect.signature(PartScorer.predict_samples)
        scored = scorer.score_samples(samples, cache_dir=tmp_path)
        assert [m.shape for m in scored.maps] == [s.rgb.shape[:2] for s in samples]
        answers = scorer.predict_samples(samples, cache_dir=tmp_path)
        assert [a.score for a in answers] == scored.image_scores
        assert all(np.array_equal(a.anomaly_map, m) for a, m in zip(answers, scored.maps))
        assert all(a.threshold == scorer.threshold and a.model_id == scorer.model_id for a in answers)
        assert scorer.threshold_record.value == scorer.threshold
        assert all(a.verdict is Verdict.FAIL for a in scorer.predict_samples(samples, threshold=-1.0))
    assert naive.threshold == max(naive.score_samples(train).image_scores)  # its rule: the largest training score
    assert core.threshold_record.set_by == "patchcore" and naive.threshold_record.set_by == "naive"
    assert {"features", "heads", "post_upsample", "post_decide"} <= set(detector.timings())  # the detector's timer


def test_part_level_is_a_percentile_of_the_positive_pixels():
    from mentor3ad.model.scoring import part_level

    amap = np.zeros((10, 10), np.float32)
    assert part_level(amap, 90) == 0.0  # nothing positive: no level
    amap[:5] = np.arange(1, 51, dtype=np.float32).reshape(5, 10)  # 50 positive pixels 1..50, 50 background
    assert part_level(amap, 90) == pytest.approx(np.percentile(np.arange(1, 51), 90))
    assert part_level(np.full((4, 4), np.nan, np.float32), 90) == 0.0  # decide() answers ERROR for it


def test_post_processing_subtracts_the_capped_part_level():
    import torch

    from mentor3ad.model.scoring import PostProcessing, part_level

    grid = torch.zeros(1, 8, 8)
    grid[0, 2:6, 2:6] = 1.0
    grid[0, 3, 3] = 3.0
    raw, zero = PostProcessing(32, 0.0).upsample(grid, (32, 32))
    assert zero == 0.0 and raw.max() > 1.0  # level_percentile 0: the raw map (the paper's rule)
    level = part_level(raw, 90)
    shifted, got = PostProcessing(32, 0.0, 90.0).upsample(grid, (32, 32))
    assert got == pytest.approx(level) and np.allclose(shifted, raw - level)
    capped, got = PostProcessing(32, 0.0, 90.0, level_cap=0.25).upsample(grid, (32, 32))
    assert got == pytest.approx(level) and np.allclose(capped, raw - 0.25)  # never more than the cap
    assert (raw <= 0).any() and np.all(capped[raw <= 0] == np.float32(-0.25))  # no part: -cap for every part


def test_calibration_caps_the_level_at_the_largest_held_out_level(detector, tmp_path):
    """The tiny model is trained with level_percentile 90: its cap is the largest level of its 3 validation
    parts, their scores are what the capped detector gives them, and a part whose whole map is raised (a wrong
    part, a broken model) keeps everything above the cap in its score: it FAILs."""
    from helpers import TINY_MODEL_CONFIG
    from mentor3ad.config import Mentor3ADConfig
    from mentor3ad.features.cache import extract_features
    from mentor3ad.features.extractor import stack_features
    from mentor3ad.io.datasets.synthetic import generate_sample
    from mentor3ad.model.detector import Detector
    from mentor3ad.model.scoring import PostProcessing, score_feature_set

    assert detector.config.model.level_percentile == Mentor3ADConfig.from_dict(TINY_MODEL_CONFIG).model.level_percentile == 90
    val = [generate_sample(100 + i, (64, 64), name=f"val/{i}") for i in range(3)]
    features = stack_features(extract_features(val, detector.extractor))
    uncapped = score_feature_set(detector.grid_maps, features, None, PostProcessing.of(detector.config), 8)
    assert detector.level_cap == pytest.approx(max(uncapped.levels))
    assert detector.image_scores(features, None, 8) == pytest.approx(uncapped.image_scores, rel=1e-6)
    assert detector.threshold_record.calibration_scores == pytest.approx(sorted(uncapped.image_scores), rel=1e-5)

    raised = lambda batch: detector.grid_maps(batch) + 10.0 * detector.threshold  # every cell far above normal
    scored = score_feature_set(raised, features, None, detector.post, 8)
    assert all(s >= 10.0 * detector.threshold - detector.level_cap for s in scored.image_scores)
    uncapped_raised = score_feature_set(raised, features, None, PostProcessing.of(detector.config), 8)
    assert max(uncapped_raised.image_scores) < 10.0 * detector.threshold  # without the cap it would hide
    detector.save(tmp_path / "saved.safetensors")
    loaded = Detector.load(tmp_path / "saved.safetensors")
    assert loaded.level_cap == detector.level_cap and loaded.model_id == detector.model_id


def test_a_model_file_without_the_level_key_keeps_the_raw_map(detector, tmp_path):
    """Files from before model.level_percentile were calibrated on the raw map's maximum: they load with 0."""
    import json

    from mentor3ad.model import checkpoint
    from mentor3ad.model.detector import LEVEL_CAP_KEY, Detector

    metadata = detector.metadata()
    del metadata["config"]["model"]["level_percentile"]
    metadata["training_info"].pop(LEVEL_CAP_KEY)
    path = checkpoint.write_checkpoint(tmp_path / "old.safetensors", detector.state_tensors(), metadata)
    old = Detector.load(path, self_test=False)
    assert old.config.model.level_percentile == 0.0 and old.post.level_percentile == 0.0
    assert json.loads(json.dumps(old.training_info)).get(LEVEL_CAP_KEY) is None


@pytest.mark.parametrize("cap", [-1.0, float("nan"), "2", True])
def test_a_stored_level_cap_that_is_not_a_finite_number_is_refused(detector, tmp_path, cap):
    from mentor3ad.errors import ModelLoadError
    from mentor3ad.model import checkpoint
    from mentor3ad.model.detector import LEVEL_CAP_KEY, Detector

    metadata = detector.metadata()
    metadata["training_info"][LEVEL_CAP_KEY] = cap
    path = checkpoint.write_checkpoint(tmp_path / "bad.safetensors", detector.state_tensors(), metadata)
    with pytest.raises(ModelLoadError, match=LEVEL_CAP_KEY):
        Detector.load(path)


def test_a_model_with_part_levels_but_no_cap_is_refused(detector, tmp_path):
    from mentor3ad.errors import ModelLoadError
    from mentor3ad.model import checkpoint
    from mentor3ad.model.detector import LEVEL_CAP_KEY, Detector

    metadata = detector.metadata()
    metadata["training_info"].pop(LEVEL_CAP_KEY)
    path = checkpoint.write_checkpoint(tmp_path / "uncapped.safetensors", detector.state_tensors(), metadata)
    with pytest.raises(ModelLoadError, match="no calibrated cap"):
        Detector.load(path)


def test_a_minus_infinite_pixel_is_not_replaced_by_the_background_value():
    """Pixels without the part get -cap; a -inf pixel (a broken model) must stay, so decide() answers ERROR."""
    import torch

    from mentor3ad.model.postprocess import decide
    from mentor3ad.model.scoring import PostProcessing

    grid = torch.zeros(1, 8, 8)
    grid[0, 2:6, 2:6] = 1.0
    grid[0, 4, 4] = float("-inf")
    amap, _ = PostProcessing(32, 0.0, 90.0, level_cap=0.5).upsample(grid, (32, 32))
    assert np.isneginf(amap).any() and decide(amap, 1.0).verdict is Verdict.ERROR


def test_upsampling_and_smoothing_as_one_operator_per_axis_is_the_three_step_resample():
    """upsample_maps runs bilinear -> Gaussian (reflect padding) -> bilinear as one (H, R) and one (W, R) matrix;
    the reference below does the three steps on the images: the same maps to float rounding, for a smoothed
    448 intermediate, camera sizes, no smoothing, and a kernel clipped by a small image."""
    import torch
    import torch.nn.functional as F

    from mentor3ad.model.postprocess import upsample_maps

    def blur(x, sigma):  # (B, 1, S, S): separable convolutions on reflect-padded images
        radius = min(max(1, int(4.0 * sigma + 0.5)), x.shape[-1] - 1) if sigma > 0 else 0
        if radius < 1:
            return x
        offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
        kernel = kernel / kernel.sum()
        x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
        return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))

    def reference(maps, image_size, sigma, output_size):
        x = F.interpolate(maps.unsqueeze(1), size=(image_size, image_size), mode="bilinear", align_corners=False)
        x = blur(x, sigma)
        if tuple(output_size) != (image_size, image_size):
            x = F.interpolate(x, size=tuple(output_size), mode="bilinear", align_corners=False)
        return x.squeeze(1)

    generator = torch.Generator().manual_seed(4)
    for grid, image_size, sigma, output_size in ((56, 448, 8.0, (224, 224)), (56, 224, 4.0, (720, 1280)),
                                                 (28, 224, 0.0, (480, 640)), (7, 8, 4.0, (9, 5)), (16, 16, 2.0, (16, 16))):
        maps = torch.rand(2, grid, grid, generator=generator) * 5.0
        got, want = upsample_maps(maps, image_size, sigma, output_size), reference(maps, image_size, sigma, output_size)
        assert got.shape == want.shape == (2, *output_size) and got.dtype == torch.float32
        assert torch.allclose(got, want, rtol=0.0, atol=2e-5), (grid, image_size, sigma, output_size)
