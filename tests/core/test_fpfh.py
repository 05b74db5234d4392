"""The weight-free FPFH 3D backbone, the separate point image size and the minimum cell fraction."""
import numpy as np
import pytest
import torch

from helpers import TINY_RGB_OPTIONS, synthetic_sample
from mentor3ad.config import FeatureConfig
from mentor3ad.errors import ConfigError, InputError
from mentor3ad.features.extractor import FeatureExtractor
from mentor3ad.geometry.projection import cell_fraction, pool_pixel_features
from mentor3ad.timing import StageTimer

pytest.importorskip("open3d")
FPFH = dict(rgb_backbone="vit_base_patch8_224.dino", rgb_weights="none", rgb_options=TINY_RGB_OPTIONS,
            point_backbone="fpfh", point_weights="none", image_size=64, point_image_size=0, feature_resolution=8,
            min_cell_fraction=0.0,  # FPFH's 15 / 50 nearest points, the packaged default until 2026-12-07
            point_options={"normal_radius_mm": 100.0, "normal_max_nn": 15, "feature_radius_mm": 250.0,
                           "feature_max_nn": 50})


def test_fpfh_features_on_the_grid_are_deterministic_and_see_geometry():
    extractor = FeatureExtractor(FeatureConfig(**FPFH))
    assert extractor.xyz_dim == 33 and extractor.identity()["points"]["weights"] == "weight-free"
    good, bump = synthetic_sample(3), synthetic_sample(3, defect="bump")
    a, b = extractor.extract(good.rgb, good.xyz), extractor.extract(good.rgb, good.xyz)
    assert a.xyz.shape == (33, 8, 8) and a.valid.any() and torch.equal(a.xyz, b.xyz)
    assert torch.isfinite(a.xyz).all()
    timer = StageTimer()
    c = extractor.extract(bump.rgb, bump.xyz, timer)
    changed = (c.xyz - a.xyz).abs().sum(0)
    cells = torch.from_numpy(bump.mask).float()[None, None]
    defect_cells = torch.nn.functional.avg_pool2d(cells, 8)[0, 0] > 0.3
    assert changed[defect_cells & a.valid].mean() > 2 * changed[~defect_cells & a.valid].mean()
    assert set(timer.seconds) >= {"point_descriptors", "projection", "rgb_backbone"}


def test_point_image_size_and_min_cell_fraction():
    sample = synthetic_sample(4)
    rgb_128 = {"model_kwargs": {**TINY_RGB_OPTIONS["model_kwargs"], "img_size": 128}}
    wide = FeatureExtractor(FeatureConfig(**{**FPFH, "image_size": 128, "point_image_size": 64, "rgb_options": rgb_128}))
    features = wide.extract(sample.rgb, sample.xyz)
    assert features.rgb.shape[1:] == (8, 8) and features.xyz.shape == (33, 8, 8)
    strict = FeatureExtractor(FeatureConfig(**{**FPFH, "min_cell_fraction": 0.5})).extract(sample.rgb, sample.xyz)
    loose = FeatureExtractor(FeatureConfig(**FPFH)).extract(sample.rgb, sample.xyz)
    assert strict.valid.sum() < loose.valid.sum() and not (strict.valid & ~loose.valid).any()
    with pytest.raises(ConfigError, match="point_image_size"):
        FeatureConfig(**{**FPFH, "point_image_size": 60})
    with pytest.raises(ConfigError, match="min_cell_fraction"):
        FeatureConfig(**{**FPFH, "min_cell_fraction": 1.0})
    with pytest.raises(ConfigError, match="weight-free"):
        FeatureExtractor(FeatureConfig(**{**FPFH, "point_weights": "models/x.pth"}))


def test_pixel_pooling_is_the_masked_cell_mean():
    rng = np.random.default_rng(0)
    values = torch.from_numpy(rng.normal(size=(2, 8, 8)).astype(np.float32))
    valid = torch.from_numpy(rng.random((8, 8)) > 0.4)
    pooled, cells = pool_pixel_features(values, valid, 2, smoothing_kernel=1)
    for y in range(2):
        for x in range(2):
            block = valid[4 * y:4 * y + 4, 4 * x:4 * x + 4]
            expect = values[:, 4 * y:4 * y + 4, 4 * x:4 * x + 4][:, block].mean(1) if block.any() else torch.zeros(2)
            assert torch.allclose(pooled[:, y, x], expect, atol=1e-6) and bool(cells[y, x]) == bool(block.any())
    assert torch.allclose(cell_fraction(valid, 2)[0, 0], valid[:4, :4].float().mean())


def test_too_few_points_is_bad_input():
    extractor = FeatureExtractor(FeatureConfig(**FPFH))
    sample = synthetic_sample(5)
    with pytest.raises(InputError, match="FPFH needs at least"):
        extractor.extract(sample.rgb, np.zeros_like(sample.xyz))


def test_a_model_that_names_some_fpfh_options_keeps_the_neighbourhoods_it_was_trained_with():
    """FPFH's configs name the 15 / 50 nearest points; the option defaults stay BTF's 30 / 100, so a model
    file written with only some options (`--set 'features.point_options={neighbourhood: window}'`, before or
    after the packaged default changed) rebuilds the identity it stored and loads."""
    from mentor3ad.config import load_config

    stored_before = {"normal_radius_mm": 100.0, "normal_max_nn": 30, "feature_radius_mm": 250.0, "feature_max_nn": 100,
                     "orient_normals": False, "smoothing_kernel": 3, "neighbourhood": "window", "normal_radius_px": 3,
                     "feature_radius_px": 6.0, "feature_step_px": 2}  # such a model's identity, written 2026-12-05
    window = FeatureExtractor(FeatureConfig(**{**FPFH, "point_options": {"neighbourhood": "window"}}))
    assert window.identity()["points"]["options"] == stored_before
    from mentor3ad.backbones.fpfh import FPFHOptions

    assert (FPFHOptions().normal_max_nn, FPFHOptions().feature_max_nn) == (30, 100)
    # the 15 / 50 that FPFH models trained as the packaged default (until 2026-12-07) name in full
    named = load_config(None, ["features.point_backbone=fpfh", "features.point_options={normal_radius_mm: 100.0, "
                               "normal_max_nn: 15, feature_radius_mm: 250.0, feature_max_nn: 50}"]).features
    options = FeatureExtractor(named).identity()["points"]["options"]
    assert (options["normal_max_nn"], options["feature_max_nn"]) == (15, 50)
