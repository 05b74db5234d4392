"""Point-cloud primitives in plain PyTorch (CPU and CUDA, no compiled extensions).

All functions are batched and deterministic. Point sets of different sizes are padded to a common
length ``N`` and described by ``lengths`` (B,) int64: entries at index >= lengths[b] are ignored.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch


def _check_points(points: torch.Tensor, name: str = "points") -> None:
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (B, N, 3), got {tuple(points.shape)}")


def _lengths_or_full(points: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
    batch, num_points, _ = points.shape
    if lengths is None:
        return torch.full((batch,), num_points, dtype=torch.long, device=points.device)
    lengths = lengths.to(device=points.device, dtype=torch.long)
    if lengths.shape != (batch,):
        raise ValueError(f"lengths must have shape ({batch},), got {tuple(lengths.shape)}")
    return lengths


def farthest_point_sampling(
    points: torch.Tensor, num_samples: int, lengths: Optional[torch.Tensor] = None, start_index: int = 0
) -> torch.Tensor:
    """Farthest-point sampling.

    points: (B, N, 3); lengths: (B,) valid counts (None = all N valid); start_index: first centre
    (fixed, so the result is deterministic). Returns indices (B, num_samples) int64 into dim 1.
    Every sample needs at least ``num_samples`` valid points.
    """
    _check_points(points)
    batch, num_points, _ = points.shape
    lengths = _lengths_or_full(points, lengths)
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if int(lengths.min()) < num_samples:
        raise ValueError(
            f"farthest_point_sampling needs >= {num_samples} valid points per sample, got {lengths.tolist()}"
        )
    if not 0 <= start_index < int(lengths.min()):
        raise ValueError(f"start_index {start_index} outside the valid points")
    device = points.device
    # Coordinate planes (3, B, N): each per-axis difference is a contiguous (B, N) operation instead of
    # a strided (B, N, 3) one, and every per-iteration result goes into a preallocated buffer (no
    # allocation, no host synchronisation in the loop).
    planes = points.permute(2, 0, 1).contiguous()
    # padded points get distance -1 so they are never selected
    valid = torch.arange(num_points, device=device)[None, :] < lengths[:, None]
    min_dist = torch.full((batch, num_points), float("inf"), dtype=points.dtype, device=device)
    min_dist.masked_fill_(~valid, -1.0)
    dist = torch.empty_like(min_dist)
    axis_diff = torch.empty_like(min_dist)
    selected = torch.empty(batch, num_samples, dtype=torch.long, device=device)
    current = torch.full((batch, 1), start_index, dtype=torch.long, device=device)
    for i in range(num_samples):
        selected[:, i : i + 1] = current
        # squared distance to the current centre, rounded like ((points - centre) ** 2).sum(-1)
        # (x + y, then + z), so the indices are bit-identical to that formulation
        torch.sub(planes[0], torch.gather(planes[0], 1, current), out=dist).mul_(dist)
        for axis in (1, 2):
            torch.sub(planes[axis], torch.gather(planes[axis], 1, current), out=axis_diff)
            dist.add_(axis_diff.mul_(axis_diff))  # not addcmul_: its fused multiply-add rounds differently
        torch.minimum(min_dist, dist, out=min_dist)
        current = torch.argmax(min_dist, dim=1, keepdim=True)
    return selected


def knn(
    queries: torch.Tensor,
    points: torch.Tensor,
    k: int,
    lengths: Optional[torch.Tensor] = None,
    chunk_size: int = 4096,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """k nearest neighbours of each query among ``points`` (exact, squared Euclidean distance).

    queries: (B, M, 3); points: (B, N, 3) with optional lengths (B,). Returns (sq_dist (B, M, k)
    float, index (B, M, k) int64), sorted by increasing distance; ties broken by the lower index.
    Queries are processed in chunks of ``chunk_size`` to bound memory (B * chunk * N floats).
    """
    _check_points(queries, "queries")
    _check_points(points)
    if queries.shape[0] != points.shape[0]:
        raise ValueError(f"batch sizes differ: queries {queries.shape[0]} vs points {points.shape[0]}")
    lengths = _lengths_or_full(points, lengths)
    if k < 1 or int(lengths.min()) < k:
        raise ValueError(f"knn needs 1 <= k <= valid points per sample; k={k}, valid={lengths.tolist()}")
    num_points = points.shape[1]
    invalid = torch.arange(num_points, device=points.device)[None, None, :] >= lengths[:, None, None]
    point_sq = (points ** 2).sum(-1)[:, None, :]  # (B, 1, N)
    dists, indices = [], []
    for start in range(0, queries.shape[1], chunk_size):
        q = queries[:, start:start + chunk_size]
        # ||q - p||^2 = ||q||^2 - 2 q.p + ||p||^2, clamped at 0 against rounding
        sq = (q ** 2).sum(-1, keepdim=True) - 2.0 * torch.bmm(q, points.transpose(1, 2)) + point_sq
        sq = sq.clamp_min_(0.0).masked_fill_(invalid, float("inf"))
        d, idx = torch.topk(sq, k, dim=-1, largest=False, sorted=True)
        dists.append(d)
        indices.append(idx)
    return torch.cat(dists, 1), torch.cat(indices, 1)


def gather_points(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values (B, N, C), index (B, ...) int64 into N -> (B, ..., C)."""
    batch = values.shape[0]
    flat = index.reshape(batch, -1)
    out = torch.gather(values, 1, flat[..., None].expand(-1, -1, values.shape[-1]))
    return out.reshape(*index.shape, values.shape[-1])


def group_points(
    points: torch.Tensor, num_groups: int, group_size: int, lengths: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Point-MAE grouping: FPS centres + k-NN neighbourhoods relative to their centre.

    points: (B, N, 3) metres. Returns (neighbourhoods (B, G, K, 3) centred on their centre,
    centres (B, G, 3)).
    """
    centre_index = farthest_point_sampling(points, num_groups, lengths)
    centres = gather_points(points, centre_index)
    _, neighbour_index = knn(centres, points, group_size, lengths)
    neighbourhoods = gather_points(points, neighbour_index) - centres[:, :, None, :]
    return neighbourhoods, centres


def three_nn_weights(
    queries: torch.Tensor, centres: torch.Tensor, k: int = 3, eps: float = 1e-8
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Inverse-distance interpolation weights (PointNet++ ``three_interpolate``).

    queries: (B, M, 3); centres: (B, G, 3). Returns (index (B, M, k) int64 into G, weights (B, M, k)
    summing to 1, proportional to 1 / (distance + eps)).
    """
    sq_dist, index = knn(queries, centres, k)
    inverse = 1.0 / (sq_dist.sqrt() + eps)
    return index, inverse / inverse.sum(-1, keepdim=True)


def interpolate_features(
    queries: torch.Tensor, centres: torch.Tensor, centre_features: torch.Tensor, k: int = 3
) -> torch.Tensor:
    """Features at ``queries`` (B, M, 3) from centre features (B, G, C): 3-NN inverse distance -> (B, M, C)."""
    index, weights = three_nn_weights(queries, centres, k)
    return (gather_points(centre_features, index) * weights[..., None]).sum(-2)
