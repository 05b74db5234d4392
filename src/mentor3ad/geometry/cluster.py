"""Connected clusters of an organized cloud (3D-distance-gated links on the pixel grid): the largest one,
and every cluster of at least a fraction of its size (a part's raised boss beyond a steep wall without points)."""
from __future__ import annotations

import torch


_OFFSETS_CACHE = {}


def _offsets(radius: int):
    if radius not in _OFFSETS_CACHE:
        _OFFSETS_CACHE[radius] = [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
                                  if (dy, dx) > (0, 0)]
    return _OFFSETS_CACHE[radius]


def cluster_labels(xyz: torch.Tensor, valid: torch.Tensor, eps: float = 0.006, radius_px: int = 1,
                   max_iterations: int = 512) -> torch.Tensor:
    """Label the connected clusters of valid points on the organized grid.

    Two valid pixels at most ``radius_px`` apart (Chebyshev) are linked when their 3D distance is
    below ``eps`` metres. Labels propagate by max over links plus pointer jumping until stable.
    xyz (S, S, 3), valid (S, S) bool -> (S, S) int64: a cluster's label (a pixel index), -1 where invalid.
    """
    full_height, full_width = valid.shape
    index = torch.arange(full_height * full_width, device=xyz.device).reshape(full_height, full_width)
    rows, cols = torch.nonzero(valid.any(1)).squeeze(1), torch.nonzero(valid.any(0)).squeeze(1)
    if not rows.numel():
        return torch.full_like(index, -1)
    # the same labels on the valid pixels' bounding box (links never leave it): less to propagate over
    box = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
    labels = torch.full_like(index, -1)
    labels[box] = _propagate(xyz[box], valid[box], index[box], eps, radius_px, max_iterations)
    return labels


def _propagate(xyz: torch.Tensor, valid: torch.Tensor, index: torch.Tensor, eps: float, radius_px: int,
               max_iterations: int) -> torch.Tensor:
    """:func:`cluster_labels` on a window: ``index`` (h, w) the pixels' indices in the whole grid (the labels)."""
    height, width = valid.shape
    labels = torch.where(valid, index, torch.full_like(index, -1))
    position = torch.zeros(int(index.max()) + 1, dtype=torch.long, device=index.device)  # label -> window pixel
    position[index.reshape(-1)] = torch.arange(index.numel(), device=index.device)
    # links as (offset, mask over the overlapping window); symmetric, so both directions are stored
    links = []
    for dy, dx in _offsets(radius_px):
        ys_a, ys_b = slice(max(0, -dy), height - max(0, dy)), slice(max(0, dy), height - max(0, -dy))
        xs_a, xs_b = slice(max(0, -dx), width - max(0, dx)), slice(max(0, dx), width - max(0, -dx))
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
        jumped = torch.where(flat_valid, flat[position[flat.clamp_min(0)]], flat)
        labels = torch.maximum(flat, jumped).reshape(height, width)
        if torch.equal(labels, previous):
            break
    return labels


def _kept_labels(sizes: torch.Tensor, min_fraction: float) -> torch.Tensor:
    """sizes (L,) points per label -> (L,) bool: the largest label and, with ``min_fraction`` < 1, every label of
    at least that fraction of its points (the one keep rule of :func:`largest_cluster`)."""
    if min_fraction >= 1.0:
        return torch.arange(sizes.numel(), device=sizes.device) == torch.argmax(sizes)
    return sizes >= max(1.0, min_fraction * float(sizes.max()))


def largest_cluster(xyz: torch.Tensor, valid: torch.Tensor, eps: float = 0.006, radius_px: int = 1,
                    min_fraction: float = 1.0) -> torch.Tensor:
    """Keep the largest connected cluster (:func:`cluster_labels`) and, with ``min_fraction`` < 1, every
    cluster of at least that fraction of its points. xyz (S, S, 3), valid (S, S) bool -> (S, S) bool."""
    labels = cluster_labels(xyz, valid, eps, radius_px)
    kept = _kept_labels(torch.bincount(labels[valid], minlength=valid.numel()), min_fraction)
    return valid & kept[labels.clamp_min(0)]


def largest_dropped_share(xyz: torch.Tensor, valid: torch.Tensor, eps: float = 0.006, radius_px: int = 1,
                          min_fraction: float = 1.0) -> float:
    """The largest cluster :func:`largest_cluster` drops, as a share of the largest cluster's points (0: none)."""
    labels = cluster_labels(xyz, valid, eps, radius_px)
    sizes = torch.bincount(labels[valid], minlength=valid.numel())
    dropped = sizes[(sizes > 0) & ~_kept_labels(sizes, min_fraction)]
    return float(dropped.max()) / float(sizes.max()) if dropped.numel() else 0.0


__all__ = ["cluster_labels", "largest_cluster", "largest_dropped_share"]
