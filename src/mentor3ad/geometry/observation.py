"""What one observation of a part is, checked in one place: an RGB image and a pixel-aligned organized cloud.

* :func:`check_observation`: rgb (H, W, 3) uint8 + xyz (H, W, 3) floating metres of the same H, W (both at
  least 2), numpy arrays or torch tensors; an :class:`~mentor3ad.errors.InputError` naming the problem
  otherwise. Used by the message conversion (:mod:`mentor3ad.io.inputs`), recordings, the feature
  extractor and every detector.
* :func:`valid_point_mask`: the valid-point rule: a point is valid when all three coordinates are finite
  and not all zero (MVTec marks background as 0, ROS drivers as NaN). Sensor-frame data is further
  limited to z > 0 and the working volume by :func:`mentor3ad.io.inputs.apply_volume`.

numpy only; torch is used when the inputs already are tensors (it is then imported).
"""
from __future__ import annotations

import sys
from typing import Any, Tuple

import numpy as np

from ..errors import InputError


def _is_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _is_floating(array: Any) -> bool:
    return array.is_floating_point() if _is_tensor(array) else np.issubdtype(array.dtype, np.floating)


def _is_uint8(array: Any) -> bool:
    return str(array.dtype) in ("uint8", "torch.uint8")


def check_observation(rgb: Any, xyz: Any) -> Tuple[Any, Any]:
    """Validate one observation -> (rgb (H, W, 3) uint8, xyz (H, W, 3) float metres); numpy inputs come back
    as arrays with xyz float32, tensors as they are. InputError naming the problem."""
    if not _is_tensor(rgb):
        rgb = np.asarray(rgb)
    if not _is_tensor(xyz):
        xyz = np.asarray(xyz)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InputError(f"rgb must be an (H, W, 3) colour image, got shape {tuple(rgb.shape)}")
    if not _is_uint8(rgb):
        raise InputError(f"rgb must be uint8, got {rgb.dtype}")
    if xyz.ndim != 3 or xyz.shape[2] != 3:
        raise InputError(f"xyz must be an organized (H, W, 3) point map in metres, got shape {tuple(xyz.shape)}")
    if not _is_floating(xyz):
        raise InputError(f"xyz must be floating point metres, got {xyz.dtype}")
    if tuple(rgb.shape[:2]) != tuple(xyz.shape[:2]):
        raise InputError(f"rgb and xyz are not pixel-aligned: image size {rgb.shape[1]}x{rgb.shape[0]} does not "
                         f"match point cloud size {xyz.shape[1]}x{xyz.shape[0]} (width x height)")
    if min(rgb.shape[:2]) < 2:
        raise InputError(f"image too small: {tuple(rgb.shape[:2])}")
    if _is_tensor(xyz):
        return rgb, xyz
    return rgb, xyz.astype(np.float32, copy=False)


def valid_point_mask(xyz: Any) -> Any:
    """(..., 3) points (numpy or torch) -> (...) bool: all coordinates finite and not all zero."""
    if _is_tensor(xyz):
        import torch

        return torch.isfinite(xyz).all(-1) & (xyz != 0).any(-1)
    x, y, z = (np.asarray(xyz)[..., axis] for axis in range(3))  # per coordinate: 7x faster than reducing axis -1
    return np.isfinite(x) & np.isfinite(y) & np.isfinite(z) & ((x != 0) | (y != 0) | (z != 0))


def pixel_pitch_m(xyz: np.ndarray, mask: np.ndarray) -> float:
    """(H, W, 3) metres, (H, W) bool -> median metric distance between horizontally neighbouring pixels of
    ``mask`` (metres; 1e-3 when no two neighbours are in it): the spacing of an organized cloud's points."""
    both = mask[:, 1:] & mask[:, :-1]
    if not both.any():
        return 1e-3
    steps = np.linalg.norm(np.asarray(xyz[:, 1:] - xyz[:, :-1], np.float64)[both], axis=-1)
    return float(np.median(steps)) if steps.size else 1e-3


__all__ = ["check_observation", "pixel_pitch_m", "valid_point_mask"]
