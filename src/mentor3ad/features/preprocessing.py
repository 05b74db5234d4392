"""Input preprocessing for the frozen backbones, in torch on the configured device.

As M3DM/CFM do for MVTec 3D-AD: RGB resized to ``image_size`` (bicubic, antialiased, ImageNet
normalisation happens in the backbone), XYZ resized with nearest neighbour, the background plane
removed (RANSAC fit on the image border, points within ``plane_distance_m`` of it dropped) and only
the largest connected cluster kept. Peers run open3d RANSAC + DBSCAN offline; here the default is a
batched RANSAC in torch and a connected-component labelling on the organized grid (3D distance
gated), both deterministic and cheap on CPU and CUDA. ``plane_removal="open3d"`` keeps the peers'
exact open3d RANSAC as an option.
"""
from __future__ import annotations

import logging
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..config import PLANE_METHODS
from ..errors import ConfigError, InputError

LOG = logging.getLogger(__name__)



def check_inputs(rgb, xyz) -> None:
    """Raise InputError unless rgb is (H, W, 3) uint8 and xyz is (H, W, 3) float with the same H, W.

    Both may be numpy arrays or torch tensors (e.g. already uploaded to the device).
    """
    kinds = (np.ndarray, torch.Tensor)
    if not isinstance(rgb, kinds) or not isinstance(xyz, kinds):
        raise InputError(f"rgb and xyz must be numpy arrays or torch tensors, got {type(rgb).__name__} and "
                         f"{type(xyz).__name__}")
    rgb_uint8 = rgb.dtype == (torch.uint8 if isinstance(rgb, torch.Tensor) else np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or not rgb_uint8:
        raise InputError(f"rgb must be (H, W, 3) uint8, got {tuple(rgb.shape)} {rgb.dtype}")
    xyz_float = xyz.is_floating_point() if isinstance(xyz, torch.Tensor) else np.issubdtype(xyz.dtype, np.floating)
    if xyz.ndim != 3 or xyz.shape[2] != 3 or not xyz_float:
        raise InputError(f"xyz must be (H, W, 3) float (metres), got {tuple(xyz.shape)} {xyz.dtype}")
    if tuple(rgb.shape[:2]) != tuple(xyz.shape[:2]):
        raise InputError(f"rgb {tuple(rgb.shape[:2])} and xyz {tuple(xyz.shape[:2])} are not pixel-aligned (different H, W)")
    if min(rgb.shape[:2]) < 2:
        raise InputError(f"image too small: {tuple(rgb.shape[:2])}")


def upload(rgb, xyz, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """numpy arrays or tensors -> device tensors: rgb (H, W, 3) uint8, xyz (H, W, 3) float32 (NaN kept)."""
    check_inputs(rgb, xyz)
    if isinstance(rgb, np.ndarray):
        # read-only arrays (e.g. from PIL) are copied: torch cannot wrap them
        rgb = torch.from_numpy(np.ascontiguousarray(rgb if rgb.flags.writeable else rgb.copy()))
    if isinstance(xyz, np.ndarray):
        xyz = torch.from_numpy(np.ascontiguousarray(xyz if xyz.flags.writeable else xyz.copy(), dtype=np.float32))
    return rgb.to(device, non_blocking=True), xyz.to(device, dtype=torch.float32, non_blocking=True)


def resize_rgb(rgb: torch.Tensor, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, size, size) float32 in [0, 1], bicubic with antialiasing."""
    image = rgb.permute(2, 0, 1)[None].float().div_(255.0)
    if image.shape[-2:] != (size, size):
        image = F.interpolate(image, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return image[0].clamp_(0.0, 1.0)


def resize_xyz(xyz: torch.Tensor, size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(H, W, 3) metres, invalid 0/NaN -> (xyz (size, size, 3) with invalid = 0, valid (size, size) bool).

    Nearest-neighbour resizing (never mixes points of different surfaces).
    """
    finite = torch.isfinite(xyz).all(-1)
    clean = torch.where(finite[..., None], xyz, torch.zeros_like(xyz))
    if clean.shape[:2] != (size, size):
        clean = F.interpolate(clean.permute(2, 0, 1)[None], size=(size, size), mode="nearest")[0].permute(1, 2, 0)
    valid = (clean != 0).any(-1)
    return clean.contiguous(), valid


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


_OFFSETS_CACHE = {}


def _offsets(radius: int):
    if radius not in _OFFSETS_CACHE:
        _OFFSETS_CACHE[radius] = [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
                                  if (dy, dx) > (0, 0)]
    return _OFFSETS_CACHE[radius]


def largest_cluster(xyz: torch.Tensor, valid: torch.Tensor, eps: float = 0.006, radius_px: int = 1,
                    max_iterations: int = 512) -> torch.Tensor:
    """Keep the largest connected cluster of valid points on the organized grid.

    Two valid pixels at most ``radius_px`` apart (Chebyshev) are linked when their 3D distance is
    below ``eps`` metres. Labels propagate by max over links plus pointer jumping until stable.
    xyz (S, S, 3), valid (S, S) bool -> (S, S) bool.
    """
    height, width = valid.shape
    device = xyz.device
    index = torch.arange(height * width, device=device).reshape(height, width)
    labels = torch.where(valid, index, torch.full_like(index, -1))
    # links as (offset, mask over the overlapping window); symmetric, so both directions are stored
    links = []
    for dy, dx in _offsets(radius_px):
        ys_a, ys_b = slice(max(0, -dy), height - max(0, dy)), slice(max(0, dy), height - max(0, -dy) or None)
        xs_a, xs_b = slice(max(0, -dx), width - max(0, dx)), slice(max(0, dx), width - max(0, -dx) or None)
        a, b = (ys_a, xs_a), (ys_b, xs_b)
        close = valid[a] & valid[b] & ((xyz[a] - xyz[b]).square().sum(-1) < eps * eps)
        links.append((a, b, close))
    flat_valid = valid.reshape(-1)
    for iteration in range(max_iterations):
        previous = labels
        labels = labels.clone()
        for a, b, close in links:
            la, lb = labels[a], labels[b]
            best = torch.maximum(la, lb)
            labels[a] = torch.where(close, best, la)
            labels[b] = torch.where(close, torch.maximum(labels[b], best), labels[b])
        # pointer jumping: a pixel adopts its representative's label
        flat = labels.reshape(-1)
        jumped = torch.where(flat_valid, flat[flat.clamp_min(0)], flat)
        labels = torch.maximum(flat, jumped).reshape(height, width)
        if torch.equal(labels, previous):
            break
    sizes = torch.bincount(labels[valid], minlength=height * width)
    return valid & (labels == torch.argmax(sizes))
