"""Seeded pseudo-defects on real good parts: an estimate of the escape rate before any defective part exists.

A new cell has good parts only. :func:`make_pseudo_defect` turns a good :class:`~mentor3ad.types.Sample` into a
defective copy with a ground-truth mask, one of six kinds (:data:`KINDS`):

* ``dent`` / ``bump``: the surface pushed away from / toward the camera along the viewing rays in a smooth
  elliptical patch (depth 2-5 pixel pitches, about 0.5-1.2 mm on MVTec 3D-AD's cable gland), with the
  shading change a light from the upper left would give;
* ``hole``: a deeper pit whose core loses most of its 3D points, darkened in the image;
* ``cut``: a narrow groove along a line segment, darkened in the image;
* ``stain``: a colour change only (no geometry);
* ``texture``: a patch of the part's own surface pasted elsewhere, rotated (no geometry).

Sizes scale with the image (radii 1.25-3 % of the image side) and the part's pixel pitch (depths), so the
same generator serves a 224 px synthetic cell and a 1280x720 camera. Defects are placed on the part: pixels
more than a few millimetres above the background plane fitted to the image border, eroded away from the
silhouette, on every piece of at least a tenth of the largest one's pixels (the erosion cuts a cable gland's
nut from its body: the cluster filter's rule, ``features.cluster_min_fraction``). The mask is the defect's
whole footprint (the smooth profile's support): nothing changes outside it. Used by calibration
(:mod:`mentor3ad.model.escape`, from :func:`mentor3ad.model.training.calibrate_detector` and ``mentor3ad
calibrate``: the pseudo-defect escape rate next to the expected false-reject rate); :func:`with_pseudo_defects`
makes a labelled "dev-real" set of held-out good parts and their pseudo-defects. Deterministic for a seed;
numpy and scipy only.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
from scipy import ndimage

from ...config import FeatureConfig
from ...errors import InputError
from ...geometry.observation import pixel_pitch_m, valid_point_mask
from ...types import Sample

KINDS = ("dent", "bump", "hole", "cut", "stain", "texture")
GEOMETRIC = ("dent", "bump", "hole", "cut")
OBJECT_HEIGHT_M = 0.004  # a pixel belongs to the part when it is this far above the background plane
MIN_OBJECT_PX = 64
MIN_PIECE_FRACTION = FeatureConfig.cluster_min_fraction  # pieces of the eroded part kept: the cluster filter's default


def object_mask(xyz: np.ndarray) -> np.ndarray:
    """(H, W, 3) metres -> (H, W) bool: valid points above the plane fitted to the valid border points,
    eroded by 3 px; of its connected pieces the largest and every one of at least MIN_PIECE_FRACTION of its pixels
    (all valid points when no plane can be fitted)."""
    valid = valid_point_mask(xyz) & (np.nan_to_num(xyz[..., 2]) > 0)
    h, w = valid.shape
    border = np.zeros_like(valid)
    b = max(2, min(h, w) // 50)
    border[:b], border[-b:], border[:, :b], border[:, -b:] = True, True, True, True
    points = np.asarray(xyz[valid & border], np.float64)
    obj = valid
    if len(points) >= 10:
        centre = points.mean(0)
        normal = np.linalg.svd(points - centre, full_matrices=False)[2][2]
        height = np.abs((np.nan_to_num(np.asarray(xyz, np.float64)) - centre) @ normal)
        obj = valid & (height > OBJECT_HEIGHT_M)
    obj = ndimage.binary_erosion(obj, iterations=3)
    labels, count = ndimage.label(obj)
    if count:
        sizes = ndimage.sum(obj, labels, range(1, count + 1))
        kept = np.flatnonzero(sizes >= MIN_PIECE_FRACTION * sizes.max()) + 1
        obj = np.isin(labels, kept)
    return obj


def _along_rays(xyz: np.ndarray, delta_m: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Move points along their viewing rays by delta_m metres (positive: away from the camera)."""
    out = xyz.copy()
    z = out[..., 2]
    ok = where & (z > 0)
    out[ok] *= ((z[ok] + delta_m[ok]) / z[ok])[:, None]
    return out


def _ellipse(shape, cy, cx, radius, rng) -> np.ndarray:
    """cos^2 profile (H, W) in [0, 1] of a random ellipse around (cy, cx)."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    angle, squash = rng.uniform(0, np.pi), rng.uniform(0.6, 1.0)
    u = ((xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)) / radius
    v = (-(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)) / (radius * squash)
    d2 = np.minimum(u * u + v * v, 1.0)
    return np.where(d2 < 1.0, np.cos(np.sqrt(d2) * np.pi / 2) ** 2, 0.0).astype(np.float32)


def _segment(shape, cy, cx, side, rng) -> np.ndarray:
    """Profile (H, W) in [0, 1] of a narrow line segment through (cy, cx)."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    length, width = rng.uniform(0.04, 0.09) * side, max(1.0, rng.uniform(0.004, 0.0075) * side)
    angle = rng.uniform(0, np.pi)
    along = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
    across = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
    return (np.sqrt(np.clip(1 - np.abs(across) / width, 0, 1)) * (np.abs(along) < length / 2)).astype(np.float32)


def _shaded(rgb: np.ndarray, height: np.ndarray, strength: float) -> np.ndarray:
    gy, gx = np.gradient(height)
    return np.clip(rgb.astype(np.float32) * (1.0 + strength * 0.7 * (gx + gy))[..., None], 0, 255).astype(np.uint8)


def _darkened(rgb: np.ndarray, profile: np.ndarray, keep: float) -> np.ndarray:
    return (rgb.astype(np.float32) * (1 - profile[..., None] * (1 - keep))).astype(np.uint8)


def make_pseudo_defect(sample: Sample, kind: str, rng: np.random.Generator) -> Sample:
    """A defective copy of the good ``sample`` (rgb (H, W, 3) uint8, xyz (H, W, 3) metres) with a defect of
    ``kind`` at a random place on the part; mask (H, W) uint8 1 = the defect's footprint (every pixel that
    may differ from ``sample``, all on the part), label 1, defect = kind. Geometric kinds move points along
    their viewing rays (a hole also drops points: xyz 0); stain and texture leave xyz unchanged.
    InputError for an unknown kind or when the part covers fewer than 64 pixels."""
    if kind not in KINDS:
        raise InputError(f"unknown pseudo-defect kind {kind!r} (known: {', '.join(KINDS)})")
    rgb, xyz = sample.rgb.copy(), np.nan_to_num(np.asarray(sample.xyz, np.float32)).copy()
    obj = object_mask(xyz)
    if obj.sum() < MIN_OBJECT_PX:
        raise InputError(f"{sample.name or 'sample'}: the part covers {int(obj.sum())} pixels above the background "
                         f"plane, too few to place a pseudo-defect on")
    inner = ndimage.binary_erosion(obj, iterations=max(1, min(obj.shape) // 40))
    ys, xs = np.nonzero(inner if inner.sum() >= MIN_OBJECT_PX else obj)
    pick = rng.integers(len(ys))
    cy, cx = ys[pick], xs[pick]
    side = float(min(obj.shape))
    if kind == "cut":
        profile = _segment(obj.shape, cy, cx, side, rng)
    else:
        profile = _ellipse(obj.shape, cy, cx, rng.uniform(0.0125, 0.03) * side, rng)
    profile *= obj
    pitch = pixel_pitch_m(xyz, obj)
    if kind in ("dent", "bump"):
        depth = rng.uniform(2.0, 5.0) * pitch * (1 if kind == "dent" else -1)
        xyz = _along_rays(xyz, depth * profile, profile > 0)
        rgb = _shaded(rgb, profile * 8.0 * depth / pitch / 4.0, 0.25)
    elif kind == "hole":
        xyz = _along_rays(xyz, 10.0 * pitch * profile, profile > 0)
        xyz[(profile > 0.35) & (rng.uniform(size=profile.shape) < 0.6)] = 0.0
        rgb = _darkened(rgb, profile, rng.uniform(0.15, 0.4))
    elif kind == "cut":
        xyz = _along_rays(xyz, rng.uniform(2.0, 6.0) * pitch * profile, profile > 0)
        rgb = _darkened(rgb, profile, rng.uniform(0.3, 0.6))
    elif kind == "stain":
        alpha = 0.8 * profile[..., None]
        tint = rng.uniform(0.3, 1.3, size=3).astype(np.float32)
        rgb = np.clip(rgb * (1 - alpha) + rgb * tint * alpha, 0, 255).astype(np.uint8)
    else:  # texture: the part's own surface from elsewhere, rotated when the image is square
        other = rng.integers(len(ys))
        source = np.roll(rgb, (cy - ys[other], cx - xs[other]), axis=(0, 1))
        if source.shape[0] == source.shape[1]:
            source = np.rot90(source, k=int(rng.integers(1, 4)))
        alpha = np.clip(profile * 1.5, 0, 1)[..., None]
        rgb = (rgb * (1 - alpha) + source * alpha).astype(np.uint8)
    mask = profile > 0  # the defect's whole footprint on the part: nothing changes outside it
    return Sample(rgb=np.where(mask[..., None], rgb, sample.rgb),
                  xyz=np.where(mask[..., None], xyz, sample.xyz).astype(np.float32), mask=mask.astype(np.uint8),
                  label=1, defect=kind, name=f"{sample.name}/pseudo-{kind}" if sample.name else f"pseudo-{kind}")


def pseudo_defects(good: Sequence[Sample], kinds: Sequence[str] = KINDS, per_kind: int = 1, seed: int = 0,
                   skip_unusable: bool = True) -> List[Sample]:
    """``per_kind`` pseudo-defects of every kind on every good sample (in sample order); parts too small to
    carry one are skipped (``skip_unusable``) or raise InputError."""
    rng = np.random.default_rng(seed)
    out: List[Sample] = []
    for sample in good:
        for _ in range(per_kind):
            for kind in kinds:
                try:
                    out.append(make_pseudo_defect(sample, kind, rng))
                except InputError:
                    if not skip_unusable:
                        raise
    return out


def with_pseudo_defects(good: Sequence[Sample], seed: int = 0, per_kind: int = 1,
                        kinds: Optional[Sequence[str]] = None) -> List[Sample]:
    """The good samples (label 0, empty masks) followed by their pseudo-defects: a labelled evaluation set
    ("dev-real" when the good parts are real held-out parts)."""
    goods = [Sample(rgb=s.rgb, xyz=s.xyz, mask=np.zeros(s.rgb.shape[:2], np.uint8), label=0, defect="good",
                    name=s.name, source=s.source) for s in good]
    return goods + pseudo_defects(good, kinds or KINDS, per_kind, seed)


__all__ = ["KINDS", "GEOMETRIC", "make_pseudo_defect", "pseudo_defects", "with_pseudo_defects", "object_mask",
           "pixel_pitch_m"]
