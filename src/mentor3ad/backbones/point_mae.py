"""Point-MAE encoder (Pang et al., ECCV 2022) as used by M3DM/CFM for point features.

Module and parameter names follow the public Point-MAE ``MaskTransformer`` exactly, so a public
``pretrain.pth`` loads through an explicit prefix map (``MAE_encoder.`` -> ``""``) with a strict
key check. Groups: FPS centres + k-NN neighbourhoods (``pointops``), mini-PointNet group embedding
(``encoder``), centre positional MLP (``pos_embed``), ``depth`` pre-norm transformer blocks; the
output concatenates the final-norm'ed tokens of the selected blocks.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from . import pointops


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
            raise ValueError(f"width {dim} is not divisible by heads {num_heads}")
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
            raise ValueError(f"feature_blocks {tuple(feature_blocks)} must be non-empty indices in [0, {depth})")
        if num_groups < 1 or group_size < 1:
            raise ValueError(f"num_groups and group_size must be >= 1, got {num_groups}, {group_size}")
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
        raise ValueError(
            f"Point-MAE checkpoint has {len(unknown)} unexpected key(s) outside the known layout "
            f"(expected prefixes {list(POINT_MAE_PREFIX_MAP)} or ignored {list(POINT_MAE_IGNORED_PREFIXES)}): "
            f"{_preview(unknown)}"
        )
    return mapped


def _preview(keys: Iterable[str], limit: int = 20) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f", ... (+{len(keys) - limit} more)" if len(keys) > limit else "")


def strict_load(model: nn.Module, state: Dict[str, torch.Tensor], what: str) -> None:
    """load_state_dict that raises ValueError listing missing/unexpected keys and shape mismatches."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in own
                  if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_preview(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_preview(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches ({len(mismatched)}): {_preview(mismatched)}")
        raise ValueError(f"{what} does not match the architecture; " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def read_state_file(path: str | Path) -> Dict[str, torch.Tensor]:
    """Read a weight file without unpickling code (.safetensors, or torch.load weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files
        raise ValueError(f"cannot read weight file {path} with torch.load(weights_only=True): {exc}") from exc


def load_point_mae_weights(model: PointMAEEncoder, path: str | Path) -> None:
    """Load a public Point-MAE ``pretrain.pth`` (or a bare encoder state dict) strictly into ``model``."""
    raw = read_state_file(path)
    if isinstance(raw, dict) and "base_model" in raw:
        raw = raw["base_model"]
    elif isinstance(raw, dict) and "model" in raw and isinstance(raw["model"], dict):
        raw = raw["model"]
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ValueError(f"{path}: expected a state dict (optionally under 'base_model'), got {type(raw).__name__}")
    state = _strip_module_prefix(raw)
    if not any(k.startswith(tuple(POINT_MAE_PREFIX_MAP)) for k in state):
        # a bare encoder state dict (e.g. saved from PointMAEEncoder): keys are taken as they are
        strict_load(model, state, f"Point-MAE weights {path}")
    else:
        strict_load(model, map_point_mae_state_dict(state), f"Point-MAE weights {path}")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
