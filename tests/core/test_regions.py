"""Defect regions: connected components, pixel boxes, area on the cloud, 3D centroid."""
import numpy as np
import pytest

from mentor3ad.model.postprocess import extract_regions, pixel_footprint_m2


def _plane(h=40, w=50, pitch=0.001, z=0.5):
    """Fronto-parallel plane at z metres with ``pitch`` metres between pixels."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.dstack([u * pitch, v * pitch, np.full_like(u, z)]).astype(np.float32)


def test_footprint_of_a_regular_grid_is_pitch_squared():
    xyz = _plane(pitch=0.002)
    area = pixel_footprint_m2(xyz)
    np.testing.assert_allclose(area, 4e-6, rtol=1e-5)  # float32 input coordinates


def test_footprint_is_zero_on_invalid_points_and_handles_holes():
    xyz = _plane()
    xyz[10, 10] = np.nan
    xyz[20, 20] = 0.0
    area = pixel_footprint_m2(xyz)
    assert area[10, 10] == 0 and area[20, 20] == 0
    # neighbours of a hole fall back to one-sided differences and keep the true footprint
    np.testing.assert_allclose(area[10, 11], 1e-6, rtol=1e-6)
    assert np.isfinite(area).all()


def test_regions_boxes_areas_and_centroids():
    xyz = _plane(pitch=0.001, z=0.5)
    amap = np.zeros((40, 50), np.float32)
    amap[5:10, 8:20] = 0.9  # 5 x 12 = 60 px
    amap[30:32, 40:42] = 0.7  # 4 px
    amap[31, 44] = 0.6  # diagonal neighbour of nothing: separate 1 px region
    regions = extract_regions(amap, threshold=0.5, xyz=xyz)
    assert [r.area_px for r in regions] == [60, 4, 1]
    big = regions[0]
    assert big.bbox == (8, 5, 19, 9)
    assert big.peak_score == np.float32(0.9)
    np.testing.assert_allclose(big.area_mm2, 60.0, rtol=1e-6)  # 60 px x 1 mm^2
    np.testing.assert_allclose(big.centroid_xyz, (0.0135, 0.007, 0.5), atol=1e-6)


def test_eight_connectivity_and_no_regions_below_threshold():
    amap = np.zeros((10, 10), np.float32)
    amap[2, 2] = amap[3, 3] = 1.0  # diagonal: one region with 8-connectivity
    assert len(extract_regions(amap, 0.5)) == 1
    assert extract_regions(amap, 1.0) == []
    r = extract_regions(amap, 0.5)[0]
    assert np.isnan(r.area_mm2) and all(np.isnan(r.centroid_xyz))


def test_region_areas_equal_the_whole_image_footprint():
    """Areas come from the footprints of the region pixels only; they must equal the whole image's there, also
    for regions at the image border and next to holes (summed in another order: equal to 1e-12)."""
    rng = np.random.default_rng(3)
    v, u = np.mgrid[0:60, 0:80].astype(np.float64)
    xyz = np.dstack([u * 0.001, v * 0.0012, 0.5 + 0.01 * np.sin(u / 7) * np.cos(v / 5)]).astype(np.float32)
    xyz[rng.random((60, 80)) < 0.1] = 0.0  # holes
    amap = np.zeros((60, 80), np.float32)
    amap[0:6, 0:5] = 2.0  # the top-left corner
    amap[30:40, 70:80] = 3.0  # the right edge
    amap[50:52, 20:26] = 4.0
    regions = extract_regions(amap, 1.0, xyz)
    full = reference_footprint(xyz)
    expected = {(0, 0, 4, 5): full[0:6, 0:5].sum(), (70, 30, 79, 39): full[30:40, 70:80].sum(),
                (20, 50, 25, 51): full[50:52, 20:26].sum()}
    got = {r.bbox: r.area_mm2 for r in regions}
    assert set(got) == set(expected)
    for box, area in expected.items():
        assert got[box] == pytest.approx(area * 1e6, rel=1e-12) and area > 0


def reference_footprint(xyz):
    """The whole-image footprint written with array shifts (the implementation before per-pixel areas)."""
    p = np.asarray(xyz, dtype=np.float64)
    valid = np.isfinite(p).all(-1) & (p != 0).any(-1)
    p = np.where(valid[..., None], p, 0.0)

    def shifted(a, offset, axis, fill):
        out = np.full_like(a, fill)
        src, dst = [slice(None)] * a.ndim, [slice(None)] * a.ndim
        src[axis], dst[axis] = (slice(offset, None), slice(None, -offset)) if offset > 0 else \
            (slice(None, offset), slice(-offset, None))
        out[tuple(dst)] = a[tuple(src)]
        return out

    def step(axis):
        fwd_ok = valid & shifted(valid, 1, axis, False)
        bwd_ok = valid & shifted(valid, -1, axis, False)
        fwd = np.where(fwd_ok[..., None], shifted(p, 1, axis, 0.0) - p, 0.0)
        bwd = np.where(bwd_ok[..., None], p - shifted(p, -1, axis, 0.0), 0.0)
        return (fwd + bwd) / np.maximum(fwd_ok.astype(np.float64) + bwd_ok, 1.0)[..., None]

    return np.where(valid, np.linalg.norm(np.cross(step(1), step(0)), axis=-1), 0.0)


def test_footprint_of_a_box_is_the_whole_image_footprint_there():
    rng = np.random.default_rng(5)
    xyz = rng.normal(0.0, 0.01, (30, 40, 3)).astype(np.float32) + np.float32([0.0, 0.0, 0.5])
    xyz[rng.random((30, 40)) < 0.15] = 0.0
    xyz[3, 7] = np.nan
    expected = reference_footprint(xyz)
    assert np.array_equal(pixel_footprint_m2(xyz), expected)  # bit-identical
    for box in ((slice(0, 30), slice(0, 40)), (slice(0, 1), slice(39, 40)), (slice(2, 9), slice(5, 30)),
                (slice(29, 30), slice(0, 40)), (slice(3, 4), slice(7, 8))):  # whole, corners, inside, a NaN pixel
        assert np.array_equal(pixel_footprint_m2(xyz, box), expected[box])
