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
