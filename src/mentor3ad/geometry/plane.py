"""The background plane of an organized cloud: a seeded RANSAC fit (refined by least squares) and its removal.

* :func:`fit_plane_ransac`: batched RANSAC in torch (CPU and CUDA, deterministic for a seed); the plane a
  feature extractor removes and the plane Eyecandies' conversion drops the candy's support with.
* :func:`fit_plane_open3d`: the peers' open3d ``segment_plane`` (CPU), selectable as ``plane_removal``.
* :func:`remove_plane`: drop the points within a distance of the plane fitted to the image border.
"""
from __future__ import annotations

import logging
from typing import Optional

import torch

from ..config import PLANE_METHODS
from ..errors import ConfigError

LOG = logging.getLogger(__name__)


def _border_mask(size: int, border_px: int, device: torch.device) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.bool, device=device)
    mask[:border_px] = True
    mask[-border_px:] = True
    mask[:, :border_px] = True
    mask[:, -border_px:] = True
    return mask


def fit_plane_ransac(
    points: torch.Tensor, distance: float, iterations: int = 256, seed: int = 0
) -> Optional[torch.Tensor]:
    """Batched RANSAC plane fit, refined by least squares on the inliers.

    points: (N, 3). Returns plane (4,) = (a, b, c, d) with unit normal, a x + b y + c z + d = 0,
    or None when fewer than 3 points or all hypotheses are degenerate.
    """
    if points.shape[0] < 3:
        return None
    generator = torch.Generator(device=points.device).manual_seed(seed)
    idx = torch.randint(0, points.shape[0], (iterations, 3), generator=generator, device=points.device)
    p0, p1, p2 = points[idx[:, 0]], points[idx[:, 1]], points[idx[:, 2]]
    normal = torch.linalg.cross(p1 - p0, p2 - p0)
    norm = normal.norm(dim=1, keepdim=True)
    good = norm[:, 0] > 1e-12
    normal = normal / norm.clamp_min(1e-12)
    offset = -(normal * p0).sum(1, keepdim=True)  # (K, 1)
    residual = (normal @ points.T + offset).abs()  # (K, N)
    counts = ((residual < distance) & good[:, None]).sum(1)
    best = torch.argmax(counts)
    inliers = residual[best] < distance
    # least-squares refinement: normal = smallest-eigenvalue eigenvector of the inlier covariance
    weights = inliers.float()
    count = weights.sum().clamp_min(1.0)
    centroid = (points * weights[:, None]).sum(0) / count
    centred = (points - centroid) * weights[:, None]
    covariance = centred.T @ centred / count
    _, vectors = torch.linalg.eigh(covariance)
    refined = vectors[:, 0]
    refined_plane = torch.cat([refined, -(refined * centroid).sum()[None]])
    ransac_plane = torch.cat([normal[best], offset[best]])
    # keep the refinement only when enough inliers support it (>= 3 points, otherwise covariance is rank-deficient)
    use_refined = weights.sum() >= 3
    return torch.where(use_refined, refined_plane, ransac_plane)


def fit_plane_open3d(points: torch.Tensor, distance: float, iterations: int = 1000, seed: int = 0) -> Optional[torch.Tensor]:
    """Peers' method: open3d ``segment_plane`` (CPU, numpy round trip). points (N, 3) -> plane (4,)."""
    if points.shape[0] < 3:
        return None
    import open3d as o3d

    o3d.utility.random.seed(seed)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.detach().cpu().double().numpy()))
    plane, _ = cloud.segment_plane(distance_threshold=distance, ransac_n=3, num_iterations=iterations)
    return torch.tensor(plane, dtype=points.dtype, device=points.device)


def remove_plane(
    xyz: torch.Tensor,
    valid: torch.Tensor,
    method: str = "ransac",
    distance: float = 0.005,
    border_px: int = 3,
    iterations: int = 256,
    seed: int = 0,
) -> torch.Tensor:
    """Drop points within ``distance`` metres of the background plane fitted to the image border.

    xyz (S, S, 3), valid (S, S) bool -> new valid mask (S, S) bool.
    """
    if method == "none":
        return valid
    if method not in PLANE_METHODS:
        raise ConfigError(f"plane_removal must be one of {PLANE_METHODS}, got {method!r}")
    border = valid & _border_mask(xyz.shape[0], border_px, xyz.device)
    border_points = xyz[border]
    fit = fit_plane_ransac if method == "ransac" else fit_plane_open3d
    plane = fit(border_points, distance, iterations=iterations, seed=seed)
    if plane is None:
        LOG.debug("plane removal skipped: fewer than 3 valid border points")
        return valid
    distances = (xyz @ plane[:3] + plane[3]).abs()
    return valid & (distances >= distance)


__all__ = ["fit_plane_ransac", "fit_plane_open3d", "remove_plane"]
