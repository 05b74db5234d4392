"""Seeded pseudo-defects (io/datasets/pseudo_defects.py) on synthetic-cell good parts: each kind changes the
part inside its mask only, geometry along the viewing rays, deterministically for a seed."""
import numpy as np
import pytest

from mentor3ad.errors import InputError
from mentor3ad.io.datasets.pseudo_defects import (GEOMETRIC, KINDS, make_pseudo_defect, object_mask, pseudo_defects,
                                                  with_pseudo_defects)
from mentor3ad.io.datasets.synthetic import generate_sample
from mentor3ad.types import Sample


@pytest.fixture(scope="module")
def good():
    return [generate_sample(100 + i, (96, 96), name=f"val/{i}") for i in range(2)]


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_changes_the_part_inside_its_mask_only(good, kind):
    sample = good[0]
    defect = make_pseudo_defect(sample, kind, np.random.default_rng(7))
    mask = defect.mask.astype(bool)
    assert defect.label == 1 and defect.defect == kind and defect.name == f"val/0/pseudo-{kind}"
    assert mask.any() and not (mask & ~object_mask(sample.xyz)).any()  # a footprint, on the part
    rgb_changed = (defect.rgb != sample.rgb).any(-1)
    xyz_changed = (defect.xyz != sample.xyz).any(-1)
    assert rgb_changed.any() or xyz_changed.any()
    assert not (rgb_changed & ~mask).any() and not (xyz_changed & ~mask).any()
    if kind in GEOMETRIC:
        assert xyz_changed.any()
        old, new = sample.xyz[xyz_changed].astype(np.float64), defect.xyz[xyz_changed].astype(np.float64)
        moved = np.linalg.norm(new, axis=-1) > 0  # a hole also drops points (xyz 0)
        assert moved.any() and (kind == "hole" or moved.all())
        cross = np.linalg.norm(np.cross(old[moved], new[moved]), axis=-1)
        assert np.all(cross <= 1e-5 * np.linalg.norm(old[moved], axis=-1) * np.linalg.norm(new[moved], axis=-1))
        assert np.all(np.sum(old[moved] * new[moved], axis=-1) > 0)  # along the ray, not through the camera
    else:
        assert not xyz_changed.any() and rgb_changed.any()


def test_deterministic_per_seed_and_different_across_seeds(good):
    first, again, other = (pseudo_defects(good, per_kind=1, seed=s) for s in (3, 3, 4))
    assert [d.defect for d in first] == list(KINDS) * len(good) and len(first) == len(good) * len(KINDS)
    assert all(np.array_equal(a.rgb, b.rgb) and np.array_equal(a.xyz, b.xyz) and np.array_equal(a.mask, b.mask)
               for a, b in zip(first, again))
    assert any(not np.array_equal(a.mask, b.mask) for a, b in zip(first, other))
    labelled = with_pseudo_defects(good, seed=3)
    assert [s.label for s in labelled] == [0] * len(good) + [1] * len(first)
    assert np.array_equal(labelled[-1].rgb, first[-1].rgb) and not labelled[0].mask.any()


def test_a_sample_without_a_part_is_refused_clearly(good):
    flat = good[0].xyz.copy()
    flat[..., 2] = 0.5  # the background plane everywhere: nothing stands above it
    empty = Sample(rgb=good[0].rgb, xyz=flat, name="empty")
    with pytest.raises(InputError, match="empty: the part covers 0 pixels above the background plane"):
        make_pseudo_defect(empty, "dent", np.random.default_rng(0))
    assert pseudo_defects([empty, good[1]], kinds=("dent",)) != []  # skipped, the next part still gets one
    with pytest.raises(InputError, match="too few"):
        pseudo_defects([empty], kinds=("dent",), skip_unusable=False)
    with pytest.raises(InputError, match="unknown pseudo-defect kind 'crack'"):
        make_pseudo_defect(good[0], "crack", np.random.default_rng(0))


def _part_in_pieces():
    """A 96x96 cloud 0.5 m away (1 mm pixels): a flat background, a body (40x30 px), a nut beside it (40x12 px)
    that the 3 px erosion cuts off from the body (a 4 px seam at the background's height), a 3x3 px speck."""
    ys, xs = np.mgrid[0:96, 0:96].astype(np.float32)
    xyz = np.stack([(xs - 48) * 0.001, (ys - 48) * 0.001, np.full_like(xs, 0.5)], -1)
    body, nut, speck = np.zeros((96, 96), bool), np.zeros((96, 96), bool), np.zeros((96, 96), bool)
    body[20:60, 20:50], nut[20:60, 54:66], speck[80:89, 80:89] = True, True, True
    xyz[..., 2] -= 0.01 * (body | nut | speck)  # 10 mm above the background plane
    return xyz, body, nut, speck


def test_pseudo_defects_land_on_every_large_piece_of_the_part():
    """The erosion that keeps defects off the silhouette cuts a cable gland's nut from its body (2 of the 10
    validation parts: the nut 39 % of the body's pixels): every piece of >= 10 % of the largest is kept (the
    cluster filter's rule), stray specks are not."""
    xyz, body, nut, speck = _part_in_pieces()
    mask = object_mask(xyz)
    assert mask[body].mean() > 0.6 and mask[nut].mean() > 0.1  # both pieces, eroded
    assert not mask[speck].any() and not (mask & ~(body | nut)).any()
    rgb = np.full((96, 96, 3), 128, np.uint8)
    on = [make_pseudo_defect(Sample(rgb=rgb, xyz=xyz, name="p"), "stain", np.random.default_rng(seed)).mask.astype(bool)
          for seed in range(40)]
    assert any((m & nut).any() for m in on) and any((m & body).any() for m in on)
