"""Several 3D backbones side by side (registered as ``concat``): their grid features concatenated.

``point_backbone: concat`` with ``point_options: {parts: [{backbone: fpfh, options: {...}}, {backbone:
normal_map}]}``: every part is built from the registry with its own options, encodes the same cleaned
cloud, and the features are stacked along the channels (out_dim = the sum); a cell is valid when it is
valid for every part. Sub-stage timings of the parts add up under the same names.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence, Tuple

import torch

from ..errors import ConfigError
from ..timing import NO_TIMER, StageTimer
from . import entry, parse_options, register

MAX_PARTS = 4


@dataclass
class ConcatOptions:
    """parts: [{backbone: registered 3D backbone name, options: its options}] (2 to 4, no nested concat)."""

    parts: List[Dict[str, Any]] = field(default_factory=list)

    def __post_init__(self):
        if not 2 <= len(self.parts) <= MAX_PARTS:
            raise ConfigError(f"point_options.parts must list 2 to {MAX_PARTS} 3D backbones, got {len(self.parts)}")
        for i, part in enumerate(self.parts):
            if not isinstance(part, dict) or set(part) - {"backbone", "options"} or not isinstance(part.get("backbone"), str):
                raise ConfigError(f"point_options.parts[{i}] must be {{backbone: name, options: {{...}}}}, got {part!r}")
            if part["backbone"] == "concat":
                raise ConfigError("point_options.parts: a concat backbone cannot hold another concat")
            if not isinstance(part.get("options", {}), dict):
                raise ConfigError(f"point_options.parts[{i}].options must be a mapping, got {part['options']!r}")


class ConcatBackbone:
    """The parts' features concatenated (module docstring)."""

    def __init__(self, parts: List[Any]) -> None:
        self.parts = parts
        self.out_dim = sum(int(p.out_dim) for p in parts)
        self.weights_source = "; ".join(f"{p.identity()['name']}: {getattr(p, 'weights_source', 'weight-free')}"
                                        for p in parts)

    def identity(self) -> dict:
        return {"name": "concat", "parts": [p.identity() for p in self.parts], "out_dim": self.out_dim}

    @torch.no_grad()
    def encode(self, grids: Sequence[torch.Tensor], valids: Sequence[torch.Tensor], resolution: int,
               timer: StageTimer = NO_TIMER) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Each part's [(features (C_i, R, R), valid (R, R))] -> [(features (sum C_i, R, R), valid: all parts')]."""
        encoded = [part.encode(grids, valids, resolution, timer) for part in self.parts]
        return [(torch.cat([e[i][0] for e in encoded]), torch.stack([e[i][1] for e in encoded]).all(0))
                for i in range(len(grids))]


@register("points", "concat", options=ConcatOptions, weight_free=True)
def build_concat(features, options: ConcatOptions, device) -> ConcatBackbone:
    """Builds every part (weight-free parts only: ``features.point_weights`` is not split between parts)."""
    parts = []
    for i, spec in enumerate(options.parts):
        found = entry("points", spec["backbone"])
        if not found.weight_free:
            raise ConfigError(f"point_options.parts[{i}]: {spec['backbone']!r} needs point_weights; only weight-free "
                              "3D backbones (fpfh, normal_map) can be concatenated")
        part_options: Dict[str, Any] = dict(spec.get("options") or {})
        parts.append(found.factory(features, parse_options(found, part_options, f"features.point_options.parts[{i}].options"),
                                   device))
    return ConcatBackbone(parts)
