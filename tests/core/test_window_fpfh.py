"""FPFH with pixel-window neighbourhoods (``point_options.neighbourhood: window``) against a per-point
reference written from the definition (open3d's ComputePairFeatures / SPFH / FPFH, full disk of neighbours)."""
import math

import numpy as np
import pytest
import torch

from helpers import synthetic_sample
from mentor3ad.backbones.fpfh import FPFHOptions
from mentor3ad.config import FeatureConfig
from mentor3ad.errors import ConfigError
from mentor3ad.features.extractor import FeatureExtractor
from mentor3ad.geometry.window_fpfh import (_pair_bins, half_disk_offsets, smallest_eigenvector, window_fpfh_image,
                                            window_means, window_normals)

from test_fpfh import FPFH


def reference_pair(p1, n1, p2, n2):
    """open3d's ComputePairFeatures for one pair -> (alpha, phi, theta)."""
    d = p2 - p1
    dist = np.linalg.norm(d)
    if dist == 0:
        return 0.0, 0.0, 0.0
    a1, a2 = n1 @ d / dist, n2 @ d / dist
    if math.acos(abs(a1)) > math.acos(abs(a2)):
        n1, n2, d, theta = n2, n1, -d, -a2
    else:
        theta = a1
    v = np.cross(d, n1)
    if np.linalg.norm(v) == 0:
        return 0.0, 0.0, 0.0
    v = v / np.linalg.norm(v)
    w = np.cross(n1, v)
    return math.atan2(w @ n2, n1 @ n2), v @ n2, theta


def reference_fpfh(points, normals, valid, radius, step):
    """Per point, loops only: neighbours = valid pixels of the full disk lattice. -> (S, S, 33)."""
    size = valid.shape[0]
    r = int(radius)
    disk = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)
            if dy % step == 0 and dx % step == 0 and (dy or dx) and dy * dy + dx * dx <= radius * radius]
    def neighbours(y, x):
        return [(y + dy, x + dx) for dy, dx in disk
                if 0 <= y + dy < size and 0 <= x + dx < size and valid[y + dy, x + dx]]
    spfh = np.zeros((size, size, 33))
    for y, x in zip(*np.nonzero(valid)):
        near = neighbours(y, x)
        for ny, nx in near:
            alpha, phi, theta = reference_pair(points[y, x], normals[y, x], points[ny, nx], normals[ny, nx])
            bins = (math.floor(11 * (alpha + math.pi) / (2 * math.pi)), math.floor(11 * (phi + 1) * 0.5),
                    math.floor(11 * (theta + 1) * 0.5))
            for group, b in enumerate(bins):
                spfh[y, x, group * 11 + min(max(b, 0), 10)] += 100.0 / len(near)
    fpfh = np.zeros_like(spfh)
    for y, x in zip(*np.nonzero(valid)):
        total = np.zeros(33)
        for ny, nx in neighbours(y, x):
            total += spfh[ny, nx] / np.sum((points[ny, nx] - points[y, x]) ** 2)
        sums = total.reshape(3, 11).sum(1)
        fpfh[y, x] = (total.reshape(3, 11) * np.where(sums > 0, 100.0 / np.maximum(sums, 1e-300), 0)[:, None]).reshape(33)
        fpfh[y, x] += spfh[y, x]
    return fpfh


def bumpy_cloud(size=20, seed=0):
    """An organized cloud ~0.4 m from the camera: a wavy surface with a hole. -> grid (S, S, 3) m, valid."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    z = 0.4 + 0.003 * np.sin(u / 3.0) * np.cos(v / 4.0) + 0.0005 * rng.normal(size=u.shape)
    grid = np.stack([(u - size / 2) * 0.001, (v - size / 2) * 0.001, z], -1)
    valid = np.ones((size, size), bool)
    valid[8:11, 5:9] = False
    valid[0, :] = False
    grid[~valid] = 0
    return torch.from_numpy(grid.astype(np.float32)), torch.from_numpy(valid)


@pytest.mark.parametrize("radius, step", [(6.0, 2), (2.5, 1)])
def test_window_fpfh_is_fpfh_over_the_pixel_disk(radius, step):
    grid, valid = bumpy_cloud()
    image = window_fpfh_image(grid, valid, normal_radius_px=2, feature_radius_px=radius, feature_step_px=step)
    normals, index = window_normals(grid, valid, 2)
    normal_image = np.zeros((20 * 20, 3))
    normal_image[index.numpy()] = normals.double().numpy()
    expect = reference_fpfh(grid.double().numpy(), normal_image.reshape(20, 20, 3), valid.numpy(), radius, step)
    got = image.permute(1, 2, 0).double().numpy()
    assert image.shape == (33, 20, 20) and not got[~valid.numpy()].any()
    assert np.abs(got - expect).max() < 1e-2 * np.abs(expect).max()  # float32 against float64, same bins
    assert np.allclose(got[valid.numpy()].reshape(-1, 3, 11).sum(-1), 200.0, atol=0.05)  # 100 % SPFH + 100 % neighbours


def test_pair_features_do_not_depend_on_the_order_of_the_pair():
    rng = np.random.default_rng(1)
    p1, p2 = torch.from_numpy(rng.normal(size=(500, 3))).float(), torch.from_numpy(rng.normal(size=(500, 3))).float()
    n1, n2 = [torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(500, 3))).float(), dim=1) for _ in "ab"]
    assert torch.equal(_pair_bins(p1, n1, p2, n2), _pair_bins(p2, n2, p1, n1))


def test_half_disk_and_its_mirror_are_the_disk():
    for radius, step in ((6.0, 2), (5.0, 2), (5.6, 1), (3.0, 3)):
        half = {tuple(o) for o in half_disk_offsets(radius, step).tolist()}
        full = {(dy, dx) for dy in range(-6, 7) for dx in range(-6, 7)
                if dy % step == 0 and dx % step == 0 and (dy or dx) and dy * dy + dx * dx <= radius * radius}
        assert len(half) * 2 == len(full) and half | {(-a, -b) for a, b in half} == full


def test_plane_normals_face_the_camera_when_oriented_and_give_the_flat_histogram():
    v, u = np.mgrid[0:16, 0:16].astype(np.float32)
    tilted = np.stack([u * 0.001, v * 0.001, 0.4 + 0.3 * u * 0.001], -1)  # a plane seen from the origin
    grid, valid = torch.from_numpy(tilted), torch.ones(16, 16, dtype=torch.bool)
    normals, index = window_normals(grid, valid, 3, orient=True)
    points = grid.reshape(-1, 3)[index]
    assert ((normals * points).sum(1) < 0).all()
    expected = torch.tensor([0.3, 0.0, -1.0]) / math.sqrt(1.09)
    assert torch.allclose(normals, expected.expand_as(normals), atol=1e-4)
    unoriented, _ = window_normals(grid, valid, 3)
    assert torch.allclose(unoriented.abs(), normals.abs(), atol=1e-5)
    image = window_fpfh_image(grid, valid, orient=True)  # normals of one sign: every pair is the flat pair
    flat = torch.zeros(33)
    flat[[5, 16, 27]] = 200.0  # every pair: alpha = phi = theta = 0 -> the middle bins, SPFH + neighbours
    assert torch.allclose(image.permute(1, 2, 0).reshape(-1, 33), flat.expand(256, 33), atol=1e-3)


def test_window_option_in_the_extractor_and_its_identity():
    sample, bump = synthetic_sample(3), synthetic_sample(3, defect="bump")
    window = FeatureExtractor(FeatureConfig(**{**FPFH, "point_options": {"neighbourhood": "window"}}))
    knn = FeatureExtractor(FeatureConfig(**FPFH))
    a, c = window.extract(sample.rgb, sample.xyz), window.extract(bump.rgb, bump.xyz)
    assert a.xyz.shape == (33, 8, 8) and torch.isfinite(a.xyz).all() and (c.xyz - a.xyz).abs().sum() > 0
    assert "neighbourhood" not in knn.identity()["points"]["options"]  # k-NN models keep their identity
    assert window.identity()["points"]["options"]["neighbourhood"] == "window"
    assert window.identity_hash() != knn.identity_hash()
    with pytest.raises(ConfigError, match="neighbourhood"):
        FPFHOptions(neighbourhood="kdtree")
    with pytest.raises(ConfigError, match="window radii"):
        FPFHOptions(neighbourhood="window", feature_radius_px=40)


def test_normals_are_open3d_normals_sign_included():
    """open3d's normals are unoriented: their sign comes from its closed-form 3x3 eigensolver, and the
    descriptors depend on it; on the same neighbourhoods ours are the same vectors."""
    o3d = pytest.importorskip("open3d")
    grid, valid = bumpy_cloud(size=24, seed=3)
    points = grid.reshape(-1, 3)[valid.reshape(-1)].double().numpy()
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    cloud.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(12))
    tree = o3d.geometry.KDTreeFlann(cloud)
    covariances = []
    for point in points:
        near = points[np.asarray(tree.search_knn_vector_3d(point, 12)[1])]
        mean = near.mean(0)
        covariances.append((near[:, :, None] * near[:, None, :]).mean(0) - mean[:, None] * mean[None, :])
    ours = smallest_eigenvector(torch.from_numpy(np.stack(covariances))).numpy()
    agree = (ours * np.asarray(cloud.normals)).sum(1)
    assert (agree > 0.9999).mean() > 0.995  # same vector and sign (a near-degenerate neighbourhood may differ)
    rng = np.random.default_rng(0)
    matrices = torch.from_numpy(rng.normal(size=(200, 3, 3)))
    matrices = matrices @ matrices.transpose(1, 2)
    values, vectors = torch.linalg.eigh(matrices)
    assert torch.allclose(smallest_eigenvector(matrices).abs(), vectors[:, :, 0].abs(), atol=1e-6)
    diagonal = torch.diag_embed(torch.tensor([[3.0, 1.0, 2.0], [1.0, 2.0, 3.0]], dtype=torch.float64))
    assert torch.equal(smallest_eigenvector(diagonal), torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64))


@pytest.mark.parametrize("radius", [1, 3, 4])
def test_window_means_are_the_zero_padded_box_filter(radius):
    """Shifted adds (the normals' window moments) = avg_pool2d's square window with zero padding, divided by the
    whole window, to float64 rounding; a non-square map, windows clipped at every border."""
    maps = torch.randn(4, 23, 31, dtype=torch.float64, generator=torch.Generator().manual_seed(radius)) * 0.01
    size = 2 * radius + 1
    reference = torch.nn.functional.avg_pool2d(maps[None], size, 1, radius, count_include_pad=True)[0]
    ours = window_means(maps, radius)
    assert ours.shape == maps.shape and ours.dtype == torch.float64
    assert torch.allclose(ours, reference, rtol=1e-13, atol=1e-17)
