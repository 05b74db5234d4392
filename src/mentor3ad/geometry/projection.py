"""3D features -> dense image-grid features at the heads' working resolution R x R.

* :func:`project_point_features` (group features of point transformers such as Point-MAE): each valid
  pixel's 3D point gets the 3-NN inverse-distance interpolation of the group-centre features
(PointNet++ ``three_interpolate``, as M3DM/CFM), is scattered onto the ``image_size`` grid, smoothed
with a ``smoothing_kernel`` box filter and average-pooled to ``resolution`` x ``resolution`` cells.
All steps are linear in the centre features, so they are folded into one (R*R, G) operator that
multiplies the (G, C) centre features: no (C, 224, 224) intermediate is materialised. Averages are
taken over valid pixels only (mask-normalised), so object borders are not darkened by empty pixels.
* :func:`pool_pixel_features` (per-pixel descriptors such as FPFH): the same box filter and cell means
  over valid pixels, directly on a (C, S, S) descriptor image.
* :func:`cell_fraction`: the share of each cell's pixels that hold a valid (cleaned) 3D point; cells below
  ``features.min_cell_fraction`` are not valid patches (thin silhouette cells carry unstable descriptors).
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

from .pointops import interpolate_features, three_nn_weights

DENSE_OPERATOR_LIMIT = 8_000_000  # elements of the (R*R, G) operator above which a sparse matmul is used


def project_point_features(
    points: torch.Tensor,
    pixel_index: torch.Tensor,
    centres: torch.Tensor,
    centre_features: torch.Tensor,
    image_size: int,
    resolution: int,
    smoothing_kernel: int = 3,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Project group features onto the image grid.

    points: (N, 3) valid points (metres); pixel_index: (N,) int64 flat index y * image_size + x;
    centres: (G, 3); centre_features: (G, C). Returns (features (C, R, R) float32,
    valid (R, R) bool = cell holds at least one valid point).
    """
    if image_size % resolution:
        raise ValueError(f"image_size {image_size} must be a multiple of the working resolution {resolution}")
    if smoothing_kernel < 1 or smoothing_kernel % 2 == 0:
        raise ValueError(f"smoothing_kernel must be an odd number >= 1, got {smoothing_kernel}")
    device = points.device
    factor = image_size // resolution
    num_groups, channels = centre_features.shape
    neighbour, weight = three_nn_weights(points[None], centres[None])
    neighbour, weight = neighbour[0], weight[0]  # (N, 3)
    py, px = pixel_index // image_size, pixel_index % image_size
    radius = smoothing_kernel // 2
    offsets = torch.arange(-radius, radius + 1, device=device)
    ty = (py[:, None, None] + offsets[None, :, None]).expand(-1, smoothing_kernel, smoothing_kernel)
    tx = (px[:, None, None] + offsets[None, None, :]).expand(-1, smoothing_kernel, smoothing_kernel)
    inside = (ty >= 0) & (ty < image_size) & (tx >= 0) & (tx < image_size)  # (N, k, k)
    cell = (ty.clamp(0, image_size - 1) // factor) * resolution + tx.clamp(0, image_size - 1) // factor
    share = inside.to(centre_features.dtype) / float(smoothing_kernel * smoothing_kernel)  # (N, k, k)
    num_cells = resolution * resolution
    # rows: the cell each (point, offset) lands in; columns: the point's 3 nearest centres
    rows = cell.reshape(-1, 1).expand(-1, 3).reshape(-1)
    cols = neighbour[:, None, :].expand(-1, smoothing_kernel * smoothing_kernel, -1).reshape(-1)
    values = (share.reshape(-1, smoothing_kernel * smoothing_kernel, 1) * weight[:, None, :]).reshape(-1)
    # sums of duplicate indices with bincount: serial (bit-reproducible) on the CPU, unlike index_add_ /
    # index_put_(accumulate=True), whose parallel accumulation order varies with thread scheduling
    denominator = torch.bincount(cell.reshape(-1), weights=share.reshape(-1), minlength=num_cells)
    if num_cells * num_groups <= DENSE_OPERATOR_LIMIT:
        operator = torch.bincount(rows * num_groups + cols, weights=values, minlength=num_cells * num_groups)
        summed = operator.reshape(num_cells, num_groups).to(centre_features.dtype) @ centre_features
    else:
        operator = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (num_cells, num_groups),
                                           check_invariants=False)
        summed = torch.sparse.mm(operator, centre_features)
    features = summed / denominator.to(summed.dtype).clamp_min(1e-12)[:, None]
    own_cell = (py // factor) * resolution + px // factor
    valid = torch.bincount(own_cell, minlength=num_cells) > 0
    return features.T.reshape(channels, resolution, resolution).contiguous(), valid.reshape(resolution, resolution)


def project_point_features_reference(
    points: torch.Tensor, pixel_index: torch.Tensor, centres: torch.Tensor, centre_features: torch.Tensor,
    image_size: int, resolution: int, smoothing_kernel: int = 3,
) -> torch.Tensor:
    """Direct (memory-hungry) version of ``project_point_features`` for tests: (C, R, R)."""
    channels = centre_features.shape[1]
    per_point = interpolate_features(points[None], centres[None], centre_features[None])[0]  # (N, C)
    grid = torch.zeros(channels, image_size * image_size, dtype=per_point.dtype, device=points.device)
    mask = torch.zeros(1, image_size * image_size, dtype=per_point.dtype, device=points.device)
    grid[:, pixel_index] = per_point.T
    mask[:, pixel_index] = 1.0
    grid, mask = grid.reshape(1, channels, image_size, image_size), mask.reshape(1, 1, image_size, image_size)
    pad = smoothing_kernel // 2
    box = torch.nn.functional.avg_pool2d
    grid = box(grid, smoothing_kernel, 1, pad, count_include_pad=True)
    mask = box(mask, smoothing_kernel, 1, pad, count_include_pad=True)
    factor = image_size // resolution
    grid, mask = box(grid, factor, factor), box(mask, factor, factor)
    return (grid / mask.clamp_min(1e-12))[0]


def pool_pixel_features(values: torch.Tensor, valid: torch.Tensor, resolution: int,
                        smoothing_kernel: int = 3) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel descriptors (C, S, S) (any value on invalid pixels), valid (S, S) bool -> (features
    (C, R, R): per cell the mean over valid pixels after a ``smoothing_kernel`` box filter over valid
    pixels, valid (R, R) bool = the cell holds a valid pixel)."""
    channels, size, _ = values.shape
    if size % resolution:
        raise ValueError(f"point image size {size} must be a multiple of the working resolution {resolution}")
    mask = valid.to(values.dtype)[None, None]
    summed = (values * mask[0])[None]
    if smoothing_kernel > 1:
        pad = smoothing_kernel // 2
        summed = F.avg_pool2d(summed, smoothing_kernel, 1, pad, count_include_pad=True)
        weight = F.avg_pool2d(mask, smoothing_kernel, 1, pad, count_include_pad=True)
    else:
        weight = mask
    factor = size // resolution
    features = F.avg_pool2d(summed, factor, factor)[0] / F.avg_pool2d(weight, factor, factor)[0].clamp_min(1e-12)
    return features.contiguous(), cell_fraction(valid, resolution) > 0


def maps_to_grid(maps: torch.Tensor, resolution: int) -> torch.Tensor:
    """(B, C, h, w) feature maps -> (B, C, R, R): average-pooled when finer than the grid R = ``resolution``,
    bilinearly upsampled when coarser, unchanged when already R x R."""
    if maps.shape[-2:] == (resolution, resolution):
        return maps
    if maps.shape[-1] > resolution:
        return F.adaptive_avg_pool2d(maps, resolution)
    return F.interpolate(maps, size=(resolution, resolution), mode="bilinear", align_corners=False)


def cell_fraction(valid: torch.Tensor, resolution: int) -> torch.Tensor:
    """(S, S) bool -> (R, R) float: the share of each cell's pixels that are valid."""
    factor = valid.shape[-1] // resolution
    return F.avg_pool2d(valid.float()[None, None], factor, factor)[0, 0]
