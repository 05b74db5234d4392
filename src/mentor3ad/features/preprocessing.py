"""Input preprocessing for the frozen backbones, in torch on the configured device.

As M3DM/CFM do for MVTec 3D-AD: RGB resized to ``image_size`` (bicubic, antialiased, ImageNet
normalisation happens in the backbone), XYZ resized with nearest neighbour. The extractor then removes
the background plane and keeps the largest cluster (:mod:`mentor3ad.geometry.plane`,
:mod:`mentor3ad.geometry.cluster`).
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..geometry.observation import check_observation, valid_point_mask


def upload(rgb, xyz, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """numpy arrays or tensors -> device tensors: rgb (H, W, 3) uint8, xyz (H, W, 3) float32 (NaN kept);
    InputError for anything that is not one observation (:func:`~mentor3ad.geometry.observation.check_observation`)."""
    rgb, xyz = check_observation(rgb, xyz)
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
    return clean.contiguous(), valid_point_mask(clean)


__all__ = ["upload", "resize_rgb", "resize_xyz"]
