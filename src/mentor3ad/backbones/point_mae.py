"""Point-MAE encoder (Pang et al., ECCV 2022) as used by M3DM/CFM for point features.

Module and parameter names follow the public Point-MAE ``MaskTransformer`` exactly, so a public
``pretrain.pth`` loads through an explicit prefix map (``MAE_encoder.`` -> ``""``) with a strict
key check. Groups: FPS centres + k-NN neighbourhoods (``pointops``), mini-PointNet group embedding
(``encoder``), centre positional MLP (``pos_embed``), ``depth`` pre-norm transformer blocks; the
output concatenates the final-norm'ed tokens of the selected blocks.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, InputError
from ..geometry import pointops
from ..geometry.projection import project_point_features
from ..timing import NO_TIMER, StageTimer
from . import autocast, options_dict, register
from .weights import NO_WEIGHTS, file_sha256, preview_keys, read_state_file, strict_load


# public Point-MAE pretrain.pth: keys under "base_model", optionally with a DDP "module." prefix
POINT_MAE_PREFIX_MAP: Dict[str, str] = {"MAE_encoder.": ""}
# parts of the pretraining network the feature extractor deliberately does not use (decoder side)
POINT_MAE_IGNORED_PREFIXES: Tuple[str, ...] = ("MAE_decoder.", "decoder_pos_embed.", "increase_dim.", "mask_token")


class GroupEmbedding(nn.Module):
    """Point-MAE ``Encoder``: mini-PointNet over each group. (B, G, K, 3) -> (B, G, C)."""

    def __init__(self, channels: int):
        super().__init__()
        self.encoder_channel = channels
        self.first_conv = nn.Sequential(nn.Conv1d(3, 128, 1), nn.BatchNorm1d(128), nn.ReLU(inplace=True), nn.Conv1d(128, 256, 1))
        self.second_conv = nn.Sequential(
            nn.Conv1d(512, 512, 1), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Conv1d(512, channels, 1)
        )

    def forward(self, groups: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.reference_forward(groups)
        return self.fast_forward(groups)

    def reference_forward(self, groups: torch.Tensor) -> torch.Tensor:
        """Point-MAE's own formulation (conv1d on concatenated global + local features)."""
        batch, num_groups, group_size, _ = groups.shape
        x = groups.reshape(batch * num_groups, group_size, 3).transpose(1, 2)
        feature = self.first_conv(x)  # (BG, 256, K)
        global_feature = feature.max(dim=2, keepdim=True)[0]
        feature = torch.cat([global_feature.expand(-1, -1, group_size), feature], dim=1)
        feature = self.second_conv(feature)  # (BG, C, K)
        return feature.max(dim=2)[0].reshape(batch, num_groups, self.encoder_channel)

    @staticmethod
    def _folded(conv: nn.Conv1d, norm: nn.BatchNorm1d) -> Tuple[torch.Tensor, torch.Tensor]:
        """Eval-mode BatchNorm folded into the preceding 1x1 conv: (weight (out, in), bias (out,))."""
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        weight = conv.weight[:, :, 0] * scale[:, None]
        bias = (conv.bias - norm.running_mean) * scale + norm.bias
        return weight, bias

    def fast_forward(self, groups: torch.Tensor) -> torch.Tensor:
        """Same result as ``reference_forward`` (eval mode), cheaper: channels-last matmuls, BatchNorm
        folded, and the global half of ``second_conv[0]`` applied once per group instead of per point."""
        batch, num_groups, group_size, _ = groups.shape
        x = groups.reshape(batch * num_groups, group_size, 3)
        w0, b0 = self._folded(self.first_conv[0], self.first_conv[1])
        h = F.linear(torch.relu(F.linear(x, w0, b0)), self.first_conv[3].weight[:, :, 0], self.first_conv[3].bias)
        global_feature = h.max(dim=1)[0]  # (BG, 256)
        w1, b1 = self._folded(self.second_conv[0], self.second_conv[1])
        half = h.shape[-1]
        h = F.linear(h, w1[:, half:]) + F.linear(global_feature, w1[:, :half], b1)[:, None, :]
        h = F.linear(torch.relu(h), self.second_conv[3].weight[:, :, 0], self.second_conv[3].bias)
        return h.max(dim=1)[0].reshape(batch, num_groups, self.encoder_channel)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention, qkv without bias (as Point-MAE)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"width {dim} is not divisible by heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TransformerEncoder(nn.Module):
    """Holds ``blocks`` (ModuleList) so keys read ``blocks.blocks.N...`` like Point-MAE."""

    def __init__(self, dim: int, depth: int, num_heads: int):
        super().__init__()
        self.blocks = nn.ModuleList([Block(dim, num_heads) for _ in range(depth)])


class PointMAEEncoder(nn.Module):
    """Frozen Point-MAE feature extractor.

    forward(points (B, N, 3) metres, lengths (B,) or None) -> (features (B, G, len(feature_blocks)*width),
    centres (B, G, 3)).
    """

    def __init__(
        self,
        num_groups: int = 1024,
        group_size: int = 32,
        depth: int = 12,
        width: int = 384,
        num_heads: int = 6,
        feature_blocks: Sequence[int] = (3, 7, 11),
    ):
        super().__init__()
        if not feature_blocks or any(not 0 <= b < depth for b in feature_blocks):
            raise ConfigError(f"feature_blocks {tuple(feature_blocks)} must be non-empty indices in [0, {depth})")
        if num_groups < 1 or group_size < 1:
            raise ConfigError(f"num_groups and group_size must be >= 1, got {num_groups}, {group_size}")
        self.num_groups = num_groups
        self.group_size = group_size
        self.width = width
        self.feature_blocks = tuple(int(b) for b in feature_blocks)
        self.encoder = GroupEmbedding(width)
        self.pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, width))
        self.blocks = TransformerEncoder(width, depth, num_heads)
        self.norm = nn.LayerNorm(width)
        self._init_weights()

    @property
    def out_dim(self) -> int:
        return self.width * len(self.feature_blocks)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def group(self, points: torch.Tensor, lengths: torch.Tensor | None = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, N, 3) -> (neighbourhoods (B, G, K, 3), centres (B, G, 3))."""
        return pointops.group_points(points, self.num_groups, self.group_size, lengths)

    def encode_groups(self, neighbourhoods: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        """Transformer part: (B, G, K, 3), (B, G, 3) -> (B, G, out_dim)."""
        x = self.encoder(neighbourhoods)
        pos = self.pos_embed(centres)
        outputs: List[torch.Tensor] = []
        last = max(self.feature_blocks)
        for i, block in enumerate(self.blocks.blocks[: last + 1]):
            x = block(x + pos)
            if i in self.feature_blocks:
                outputs.append(self.norm(x))
        return torch.cat(outputs, dim=-1)

    def forward(self, points: torch.Tensor, lengths: torch.Tensor | None = None) -> Tuple[torch.Tensor, torch.Tensor]:
        neighbourhoods, centres = self.group(points, lengths)
        return self.encode_groups(neighbourhoods, centres), centres


def _strip_module_prefix(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def map_point_mae_state_dict(raw: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Public Point-MAE ``base_model`` dict -> encoder state dict (explicit prefix map).

    Keys under POINT_MAE_IGNORED_PREFIXES (decoder) are dropped; any other key outside the prefix map
    raises ValueError naming it.
    """
    mapped: Dict[str, torch.Tensor] = {}
    unknown: List[str] = []
    for key, value in _strip_module_prefix(raw).items():
        for source, target in POINT_MAE_PREFIX_MAP.items():
            if key.startswith(source):
                mapped[target + key[len(source):]] = value
                break
        else:
            if not key.startswith(POINT_MAE_IGNORED_PREFIXES):
                unknown.append(key)
    if unknown:
        raise ConfigError(
            f"Point-MAE checkpoint has {len(unknown)} unexpected key(s) outside the known layout "
            f"(expected prefixes {list(POINT_MAE_PREFIX_MAP)} or ignored {list(POINT_MAE_IGNORED_PREFIXES)}): "
            f"{preview_keys(unknown)}"
        )
    return mapped


def load_point_mae_weights(model: PointMAEEncoder, path: str | Path) -> None:
    """Load a public Point-MAE ``pretrain.pth`` (or a bare encoder state dict) strictly into ``model``."""
    raw = read_state_file(path)
    if isinstance(raw, dict) and "base_model" in raw:
        raw = raw["base_model"]
    elif isinstance(raw, dict) and "model" in raw and isinstance(raw["model"], dict):
        raw = raw["model"]
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ConfigError(f"{path}: expected a state dict (optionally under 'base_model'), got {type(raw).__name__}")
    state = _strip_module_prefix(raw)
    if not any(k.startswith(tuple(POINT_MAE_PREFIX_MAP)) for k in state):
        # a bare encoder state dict (e.g. saved from PointMAEEncoder): keys are taken as they are
        strict_load(model, state, f"Point-MAE weights {path}")
    else:
        strict_load(model, map_point_mae_state_dict(state), f"Point-MAE weights {path}")


LOG = logging.getLogger(__name__)


@dataclass
class PointMAEOptions:
    """Point-MAE encoder and grouping (paper/peers: 1024 groups of 32 points, blocks 3/7/11 -> 1152-d).

    num_groups: FPS centres (256 measured as good as 1024 on cable_gland: ~7.5k object points at 224
    after plane removal, so 256 x 32 already covers every point, at a quarter of the cost);
    group_size: k-NN points per group; depth / width / heads: transformer; feature_blocks: blocks whose
    normalised tokens are concatenated; smoothing_kernel: box filter (pixels at image_size) of the
    projection onto the grid (odd)."""

    num_groups: int = 256
    group_size: int = 32
    depth: int = 12
    width: int = 384
    heads: int = 6
    feature_blocks: Tuple[int, ...] = (3, 7, 11)
    smoothing_kernel: int = 3

    def __post_init__(self):
        if not (3 <= self.num_groups <= 4096 and 1 <= self.group_size <= 256):  # 3: the 3-NN interpolation
            raise ConfigError(f"point_options.num_groups must be in [3, 4096] and group_size in [1, 256], "
                              f"got {self.num_groups}, {self.group_size}")
        if not (1 <= self.depth <= 48 and 1 <= self.heads <= 64 and 1 <= self.width <= 4096):
            raise ConfigError(f"point_options: depth must be in [1, 48], heads in [1, 64], width in [1, 4096], "
                              f"got {self.depth}, {self.heads}, {self.width}")
        if not all(0 <= block < self.depth for block in self.feature_blocks) or not self.feature_blocks:
            raise ConfigError(f"point_options.feature_blocks must name blocks in [0, {self.depth - 1}], "
                              f"got {list(self.feature_blocks)}")
        if not 1 <= self.smoothing_kernel <= 15 or self.smoothing_kernel % 2 == 0:
            raise ConfigError(f"point_options.smoothing_kernel must be odd, in [1, 15], got {self.smoothing_kernel}")


class PointMAEBackbone:
    """Point-MAE features on the heads' grid: FPS + k-NN groups -> transformer -> 3-NN projection."""

    def __init__(self, options: PointMAEOptions, weights: str, image_size: int, device, precision: str = "fp32"):
        self.options = options
        self.image_size = image_size
        self.device = torch.device(device)
        self.precision = precision
        self.encoder = PointMAEEncoder(options.num_groups, options.group_size, options.depth, options.width,
                                       options.heads, options.feature_blocks)
        if weights in NO_WEIGHTS:
            LOG.warning("Point-MAE backbone uses RANDOM weights (point_weights='none')")
            self.weights_id = "random-init"
        else:
            load_point_mae_weights(self.encoder, weights)
            self.weights_id = f"sha256:{file_sha256(weights)}"
        self.encoder.to(self.device).eval()
        self.encoder.requires_grad_(False)
        self.out_dim = self.encoder.out_dim

    def identity(self) -> dict:
        return {"name": "point_mae", "weights": self.weights_id, "options": options_dict(self.options),
                "out_dim": self.out_dim}

    @torch.no_grad()
    def encode(self, grids: Sequence[torch.Tensor], valids: Sequence[torch.Tensor], resolution: int,
               timer: StageTimer = NO_TIMER):
        """(S, S, 3) metres + (S, S) bool per sample -> [(features (out_dim, R, R), valid (R, R))]; ``timer``
        gets the stages point_neighbourhoods (FPS + k-NN), point_descriptors (transformer) and projection."""
        options, size = self.options, self.image_size
        start = timer.now()
        point_sets, pixel_sets = [], []
        for i, (grid, valid) in enumerate(zip(grids, valids)):
            pixel_index = torch.nonzero(valid.reshape(-1)).squeeze(1)
            count = pixel_index.numel()
            if count < options.num_groups or count < options.group_size:
                raise InputError(
                    f"sample {i}: only {count} valid 3D points after preprocessing (resize to {size}, plane "
                    f"removal, cluster filter); Point-MAE needs at least "
                    f"{max(options.num_groups, options.group_size)} (point_options num_groups / group_size). "
                    f"Is the XYZ map empty, all NaN/0, or not in metres?")
            pixel_sets.append(pixel_index)
            point_sets.append(grid.reshape(-1, 3)[pixel_index])
        lengths = torch.tensor([p.shape[0] for p in point_sets], device=self.device)
        padded = torch.nn.utils.rnn.pad_sequence(point_sets, batch_first=True)
        neighbourhoods, centres = self.encoder.group(padded, lengths)
        start = timer.tick("point_neighbourhoods", start)
        with autocast(self.device, self.precision):
            centre_features = self.encoder.encode_groups(neighbourhoods, centres).float()
        start = timer.tick("point_descriptors", start)
        results = [project_point_features(points, pixel_index, centres[i], centre_features[i], size, resolution,
                                          options.smoothing_kernel)
                   for i, (points, pixel_index) in enumerate(zip(point_sets, pixel_sets))]
        timer.tick("projection", start)
        return results


@register("points", "point_mae", options=PointMAEOptions)
def build_point_mae(features, options: PointMAEOptions, device) -> PointMAEBackbone:
    """Point-MAE (Pang et al.) with ``features.point_weights`` (public pretrain.pth) or random init."""
    import torch as _torch

    with _torch.random.fork_rng(devices=[]):
        _torch.manual_seed(features.init_seed)
        return PointMAEBackbone(options, features.point_weights, features.cloud_size, device, features.precision)
