"""The MFM and MGM training losses and the patches they see (no training loop: :mod:`.training`).

Patches are rows: (P, C) per modality, the valid cells of a FeatureSet's (B, C, R, R) maps, sample-major,
standardised with the heads' training statistics. In bf16 the MLPs see them zero-padded to a few row counts
(:func:`padded_patches`); losses use the real rows only.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from ..backbones import autocast
from ..features.extractor import FeatureSet
from .heads import Mentor3ADHeads, cosine_loss, info_nce, padded_count, to_patches


def valid_patches(features: FeatureSet, device, heads: Optional[Mentor3ADHeads] = None) -> Dict[str, torch.Tensor]:
    """Valid patches (P, C) per modality, standardised by ``heads`` when given."""
    valid = features.valid.to(device)
    patches = {"rgb": to_patches(features.rgb.to(device))[valid], "xyz": to_patches(features.xyz.to(device))[valid]}
    if heads is not None:
        patches = {name: heads.normalize_patches(name, value) for name, value in patches.items()}
    return patches


def padded_patches(patches: Dict[str, torch.Tensor], precision: str) -> Dict[str, torch.Tensor]:
    """Patches (P, C) per modality zero-padded to :func:`padded_count` rows: in bf16 the MLPs see a few
    shapes instead of a new one per batch (oneDNN builds its kernels per shape: an MGM step measured 2x
    slower with a new row count every batch). Rows are independent through the MLPs; callers slice [:P]."""
    count = next(iter(patches.values())).shape[0]
    extra = padded_count(count, precision) - count
    return patches if extra == 0 else {name: F.pad(value, (0, 0, 0, extra)) for name, value in patches.items()}


def mfm_loss(heads: Mentor3ADHeads, batch: FeatureSet, generator: torch.Generator, device) -> torch.Tensor:
    """InfoNCE over the valid patches of a batch: RGB vs XYZ projections of the same patch are positives;
    plus (weight model.mfm_fused_contrast_weight) F_Mtr vs each projection, which trains the fusion MLP.
    Computed in ``heads.precision`` (autocast); the loss is float32."""
    config = heads.config
    patches = valid_patches(batch, device, heads)
    count = patches["rgb"].shape[0]
    if count < 2:
        return None
    if count > config.infonce_max_patches:
        keep = torch.randperm(count, generator=generator)[:config.infonce_max_patches].to(device)
        patches = {name: value[keep] for name, value in patches.items()}
    count = patches["rgb"].shape[0]
    padded = padded_patches(patches, heads.precision)
    with autocast(device, heads.precision):
        rgb_projected = heads.mfm.rgb_projection(padded["rgb"])[:count]
        xyz_projected = heads.mfm.xyz_projection(padded["xyz"])[:count]
        loss = info_nce(rgb_projected, xyz_projected, config.infonce_temperature)
        if config.mfm_fused_contrast_weight > 0:
            mentor = heads.mfm.fuse(rgb_projected, xyz_projected)
            loss = loss + 0.5 * config.mfm_fused_contrast_weight * (
                info_nce(mentor, rgb_projected, config.infonce_temperature)
                + info_nce(mentor, xyz_projected, config.infonce_temperature))
    return loss.float()


@torch.no_grad()
def mentor_of(heads: Mentor3ADHeads, patches: Dict[str, torch.Tensor], device) -> torch.Tensor:
    """The MFM's F_Mtr (P, mentor_dim) of standardised patches (P, C) per modality, in ``heads.precision``."""
    with autocast(device, heads.precision):
        return heads.mfm.fuse(heads.mfm.rgb_projection(patches["rgb"]), heads.mfm.xyz_projection(patches["xyz"]))


def mentor_table(heads: Mentor3ADHeads, features: FeatureSet, device,
                 batch_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The frozen MFM's F_Mtr of every valid patch of ``features`` (P, mentor_dim), sample-major as
    :func:`valid_patches` orders them, and each sample's first row (N + 1,) int64: computed once for the MGM's
    epochs (it was computed again in each of its steps, ~10 % of one), ``batch_size`` samples per call."""
    counts = features.valid.flatten(1).sum(1)
    starts = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
    chunks = []
    for first in range(0, len(features), batch_size):
        patches = valid_patches(features.subset(slice(first, first + batch_size)), device, heads)
        chunks.append(mentor_of(heads, padded_patches(patches, heads.precision), device)[:patches["rgb"].shape[0]])
    return torch.cat(chunks), starts


def table_rows(starts: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The rows of samples ``index`` in a sample-major table with first rows ``starts`` (N + 1,), in that order."""
    return torch.cat([torch.arange(int(starts[i]), int(starts[i + 1])) for i in index.tolist()])


def mgm_loss(heads: Mentor3ADHeads, batch: FeatureSet, device,
             mentor: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Cosine reconstruction loss (paper eq. 4) of both directions over the valid patches of a batch; the
    MLPs run in ``heads.precision`` (autocast), the cosine and the loss in float32. ``mentor``: the frozen
    MFM's F_Mtr of those patches (P, mentor_dim; :func:`mentor_table`), else computed here."""
    patches = valid_patches(batch, device, heads)
    count = patches["rgb"].shape[0]
    if count == 0:
        return None
    padded = padded_patches(patches, heads.precision)
    if not heads.config.use_mentor:
        mentor = None
    elif mentor is None:
        mentor = mentor_of(heads, padded, device)
    else:
        mentor = F.pad(mentor, (0, 0, 0, padded["rgb"].shape[0] - count))
    with autocast(device, heads.precision):
        xyz_rec = heads.mgm.rgb_to_xyz.map_patches(padded["rgb"], mentor)[:count]
        rgb_rec = heads.mgm.xyz_to_rgb.map_patches(padded["xyz"], mentor)[:count]
    ones = torch.ones(count, dtype=torch.bool, device=device)
    # patches are rows here: cosine over the channel dim = dim 1 of (P, C)
    return cosine_loss(rgb_rec.float(), patches["rgb"], ones) + cosine_loss(xyz_rec.float(), patches["xyz"], ones)
