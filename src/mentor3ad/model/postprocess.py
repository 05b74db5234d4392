"""From the heads' maps to an answer: upsampling + smoothing, the verdict, and the defect regions.

* :func:`upsample_maps`: (B, R, R) grid maps -> (B, H, W) anomaly maps at the input resolution
  (bilinear to ``image_size``, Gaussian smoothing in pixels of that grid, bilinear to the input size).
* :func:`decide`: an anomaly map + threshold -> :class:`~mentor3ad.types.InspectionResult`. The one place a
  verdict is made: image score = max of the map; a non-finite map or threshold is an ERROR naming the
  cause (never a PASS); FAIL when score > threshold, with the connected regions above the threshold.
* :func:`extract_regions`: connected components measured on the cloud (area in mm^2, 3D centroid and extent).
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..geometry.observation import valid_point_mask
from ..types import InspectionResult, Region, Verdict


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of (B, H, W) maps, kernel radius 4 sigma, reflect padding."""
    if sigma <= 0:
        return maps
    radius = max(1, int(4.0 * sigma + 0.5))
    radius = min(radius, maps.shape[-1] - 1, maps.shape[-2] - 1)
    if radius < 1:
        return maps
    offsets = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = maps.unsqueeze(1)
    x = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = F.pad(x, (0, 0, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    return x.squeeze(1)


def upsample_maps(maps: torch.Tensor, image_size: int, sigma: float, output_size: Tuple[int, int]) -> torch.Tensor:
    """(B, R, R) -> (B, H, W): bilinear to image_size, Gaussian blur (sigma in pixels of that grid),
    bilinear to ``output_size``."""
    x = F.interpolate(maps.unsqueeze(1).float(), size=(image_size, image_size), mode="bilinear", align_corners=False)
    x = gaussian_blur(x.squeeze(1), sigma)
    if tuple(output_size) != (image_size, image_size):
        x = F.interpolate(x.unsqueeze(1), size=tuple(output_size), mode="bilinear", align_corners=False).squeeze(1)
    return x


def decide(anomaly_map: np.ndarray, threshold: float, xyz: Optional[np.ndarray] = None,
           model_id: str = "") -> InspectionResult:
    """The verdict for one part from its (H, W) anomaly map (see module docstring)."""
    amap = np.asarray(anomaly_map, dtype=np.float32)
    if amap.size == 0:
        return InspectionResult.error(f"empty anomaly map (shape {amap.shape}): the part cannot be judged",
                                      score=math.nan, threshold=float(threshold), anomaly_map=amap,
                                      model_id=model_id)
    finite = np.isfinite(amap)
    if not finite.all():
        nan, inf = int(np.isnan(amap).sum()), int((~finite).sum() - np.isnan(amap).sum())
        return InspectionResult.error(
            f"non-finite anomaly map ({nan} NaN, {inf} infinite values of {amap.size}): the model's weights or "
            "its features are broken; the part cannot be judged", score=math.nan, threshold=float(threshold),
            anomaly_map=amap, model_id=model_id)
    score = float(amap.max())
    if not math.isfinite(threshold):
        return InspectionResult.error(f"the decision threshold is {threshold} (model not calibrated)",
                                      score=score, threshold=float(threshold), anomaly_map=amap, model_id=model_id)
    failed = score > threshold
    return InspectionResult(Verdict.FAIL if failed else Verdict.PASS, score=score, threshold=float(threshold),
                            regions=extract_regions(amap, threshold, xyz) if failed else [], anomaly_map=amap,
                            model_id=model_id)


def pixel_footprint_m2(xyz: np.ndarray, rows: Optional[np.ndarray] = None,
                       cols: Optional[np.ndarray] = None) -> np.ndarray:
    """Surface area each pixel covers on the point cloud.

    xyz: (H, W, 3) metres, invalid = 0 or NaN; rows, cols: (N,) the pixels to compute (default: all).
    Returns float64 m^2, (H, W) for all pixels or (N,) for the given ones: |dP/du x dP/dv| from the
    differences to the valid neighbours (central, one-sided at holes); 0 where the pixel is invalid or has
    no valid neighbour along an axis. Region areas compute their pixels only (the whole image took ~150 ms
    per FAIL part at 1280x720).
    """
    points = np.asarray(xyz)
    height, width = points.shape[:2]
    whole = rows is None
    if whole:
        rows, cols = (axis.ravel() for axis in np.indices((height, width)))

    def at(dr: int, dc: int):
        """Points (float64, 0 where invalid) and validity at (rows + dr, cols + dc); invalid outside the image."""
        r, c = rows + dr, cols + dc
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        q = np.asarray(points[np.clip(r, 0, height - 1), np.clip(c, 0, width - 1)], dtype=np.float64)
        ok = inside & valid_point_mask(q)
        return np.where(ok[:, None], q, 0.0), ok

    centre, valid = at(0, 0)

    def step(forward, backward):
        """Metric step to the next pixel: central difference, one-sided at holes, else 0."""
        (q_fwd, ok_fwd), (q_bwd, ok_bwd) = forward, backward
        fwd_ok, bwd_ok = valid & ok_fwd, valid & ok_bwd
        fwd = np.where(fwd_ok[:, None], q_fwd - centre, 0.0)
        bwd = np.where(bwd_ok[:, None], centre - q_bwd, 0.0)
        return (fwd + bwd) / np.maximum(fwd_ok.astype(np.float64) + bwd_ok, 1.0)[:, None]

    area = np.where(valid, np.linalg.norm(np.cross(step(at(0, 1), at(0, -1)), step(at(1, 0), at(-1, 0))), axis=-1),
                    0.0)
    return area.reshape(height, width) if whole else area


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
    objects = ndimage.find_objects(labels)
    area_of = None
    if xyz is not None:  # footprints of the region pixels only, summed per region
        rows, cols = np.nonzero(labels)
        area_of = np.bincount(labels[rows, cols], weights=pixel_footprint_m2(xyz, rows, cols), minlength=n + 1)
    regions: List[Region] = []
    for idx, sl in enumerate(objects, start=1):
        if sl is None:
            continue
        inside = labels[sl] == idx
        area_px = int(inside.sum())
        if area_px < min_area_px:
            continue
        area_mm2 = float("nan")
        centroid = extent = (float("nan"),) * 3
        if area_of is not None:
            area_mm2 = float(area_of[idx] * 1e6)
            pts = np.asarray(xyz[sl][inside], dtype=np.float64)
            ok = valid_point_mask(pts)
            if ok.any():
                centroid = tuple(float(c) for c in pts[ok].mean(0))
                extent = tuple(float(c) for c in pts[ok].max(0) - pts[ok].min(0))
        regions.append(
            Region(
                bbox=(sl[1].start, sl[0].start, sl[1].stop - 1, sl[0].stop - 1),
                area_px=area_px,
                area_mm2=area_mm2,
                centroid_xyz=centroid,
                peak_score=float(amap[sl][inside].max()),
                extent_xyz=extent,
            )
        )
    regions.sort(key=lambda r: r.area_px, reverse=True)
    return regions[:max_regions]
