"""Defect regions from an anomaly map: connected components above a threshold, measured on the cloud."""
from __future__ import annotations

from typing import List, Optional

import numpy as np
from scipy import ndimage

from .types import Region


def pixel_footprint_m2(xyz: np.ndarray) -> np.ndarray:
    """Surface area each pixel covers on the point cloud.

    xyz: (H, W, 3) float32 metres, invalid = 0 or NaN.
    Returns (H, W) float64 m^2: |dP/du x dP/dv| from central differences between valid neighbours;
    0 where the pixel or all of its neighbours are invalid.
    """
    p = np.asarray(xyz, dtype=np.float64)
    valid = np.isfinite(p).all(-1) & (np.abs(p).sum(-1) > 0)
    p = np.where(valid[..., None], p, np.nan)

    def diff(axis: int) -> np.ndarray:
        fwd = np.diff(p, axis=axis, append=np.nan)  # p[i+1] - p[i]
        bwd = -np.diff(p[::-1] if axis == 0 else p[:, ::-1], axis=axis, append=np.nan)
        bwd = bwd[::-1] if axis == 0 else bwd[:, ::-1]  # p[i] - p[i-1]
        both = np.stack([fwd, bwd])
        return np.nanmean(np.where(np.isfinite(both), both, np.nan), axis=0) if np.isfinite(both).any() else fwd

    with np.errstate(invalid="ignore"), np.testing.suppress_warnings() as sup:
        sup.filter(RuntimeWarning)
        du = diff(1)
        dv = diff(0)
    area = np.linalg.norm(np.cross(du, dv), axis=-1)
    return np.where(valid & np.isfinite(area), area, 0.0)


def extract_regions(
    anomaly_map: np.ndarray,
    threshold: float,
    xyz: Optional[np.ndarray] = None,
    min_area_px: int = 1,
    max_regions: int = 32,
) -> List[Region]:
    """Connected regions (8-connectivity) of ``anomaly_map > threshold``, largest first.

    anomaly_map: (H, W) float scores at input resolution.
    xyz: optional (H, W, 3) metres, pixel-aligned; gives each region's area in mm^2 and 3D centroid.
    """
    amap = np.asarray(anomaly_map, dtype=np.float32)
    labels, n = ndimage.label(amap > threshold, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return []
    footprint = pixel_footprint_m2(xyz) if xyz is not None else None
    regions: List[Region] = []
    for idx, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        inside = labels[sl] == idx
        area_px = int(inside.sum())
        if area_px < min_area_px:
            continue
        area_mm2 = float("nan")
        centroid = (float("nan"),) * 3
        if footprint is not None:
            area_mm2 = float(footprint[sl][inside].sum() * 1e6)
            pts = np.asarray(xyz[sl][inside], dtype=np.float64)
            ok = np.isfinite(pts).all(-1) & (np.abs(pts).sum(-1) > 0)
            if ok.any():
                centroid = tuple(float(c) for c in pts[ok].mean(0))
        regions.append(
            Region(
                bbox=(sl[1].start, sl[0].start, sl[1].stop - 1, sl[0].stop - 1),
                area_px=area_px,
                area_mm2=area_mm2,
                centroid_xyz=centroid,
                peak_score=float(amap[sl][inside].max()),
            )
        )
    regions.sort(key=lambda r: r.area_px, reverse=True)
    return regions[:max_regions]
