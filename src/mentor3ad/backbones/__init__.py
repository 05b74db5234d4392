"""Frozen backbones behind one registry: a new backbone is one file in this package plus config.

Each module of this package registers its factories with :func:`register`; :func:`build` creates the
backbone a :class:`~mentor3ad.config.FeatureConfig` names (``rgb_backbone`` / ``point_backbone``) with
its options section (``rgb_options`` / ``point_options``) parsed into the options dataclass the
backbone declares (unknown keys are a ConfigError naming them). RGB names that are not registered go to
the ``timm`` factory (any timm model name).

Protocols (duck-typed, every backbone is frozen and in eval mode):

* RGB (kind ``"rgb"``): ``out_dim`` (channels), ``identity() -> dict`` (name, weights identity, options),
  ``encode(images)``: (B, 3, S, S) float32 in [0, 1] -> (B, out_dim, h, w) patch features.
* 3D (kind ``"points"``): ``out_dim``, ``identity()``, ``encode(grids, valids, resolution, timer=NO_TIMER)``:
  lists of (S, S, 3) float32 metres and (S, S) bool (the cleaned organized cloud at ``image_size``) ->
  list of (features (out_dim, R, R) float32, valid (R, R) bool) on the heads' grid R = ``resolution``;
  sub-stages (``point_neighbourhoods``, ``point_descriptors``, ``projection``) are ticked into ``timer``
  (:mod:`mentor3ad.timing`: opt-in, a no-op by default). Shared geometry (FPS, k-NN, the projection onto
  the grid) comes from :mod:`mentor3ad.geometry`.

Factory signature: ``factory(features: FeatureConfig, options, device: torch.device) -> backbone``.
Example of a new 3D backbone, ``backbones/my_descriptor.py``::

    @dataclass
    class MyOptions:
        radius_mm: float = 5.0

    @register("points", "my_descriptor", options=MyOptions)
    def build_my_descriptor(features, options, device):
        return MyDescriptor(options, device)     # has out_dim, identity(), encode()

and ``features: {point_backbone: my_descriptor, point_options: {radius_mm: 4.0}}`` in the model YAML.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..errors import ConfigError

KINDS = ("rgb", "points")
FALLBACK = {"rgb": "timm"}  # unregistered RGB names are timm model names


@dataclass(frozen=True)
class BackboneEntry:
    kind: str
    name: str
    factory: Callable[..., Any]
    options: Optional[type] = None  # dataclass of the backbone's options
    weight_free: bool = False  # needs no weights (descriptors such as FPFH): ``*_weights`` is not resolved


_REGISTRY: Dict[Tuple[str, str], BackboneEntry] = {}
_DISCOVERED = False
_BROKEN: Dict[str, str] = {}  # module -> why it could not be imported


def register(kind: str, name: str, options: Optional[type] = None, weight_free: bool = False) -> Callable:
    """Decorator registering ``factory(features, options, device)`` as backbone ``name`` of ``kind``."""
    if kind not in KINDS:
        raise ValueError(f"backbone kind must be one of {KINDS}, got {kind!r}")

    def decorate(factory: Callable) -> Callable:
        _REGISTRY[(kind, name)] = BackboneEntry(kind, name, factory, options, weight_free)
        return factory

    return decorate


def _discover() -> None:
    """Import every module of this package once (each registers its backbones)."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    for module in pkgutil.iter_modules(__path__):
        try:
            importlib.import_module(f"{__name__}.{module.name}")
        except Exception as exc:  # noqa: BLE001 - e.g. a stale file left in an install: the others still work
            _BROKEN[module.name] = f"{type(exc).__name__}: {exc}"
            logging.getLogger(__name__).warning("backbone module %s not loaded: %s", module.name, _BROKEN[module.name])
    _DISCOVERED = True


def names(kind: str) -> List[str]:
    """Registered backbone names of ``kind``."""
    _discover()
    return sorted(name for k, name in _REGISTRY if k == kind)


def entry(kind: str, name: str) -> BackboneEntry:
    _discover()
    found = _REGISTRY.get((kind, name)) or _REGISTRY.get((kind, FALLBACK.get(kind, "")))
    if found is None:
        broken = "".join(f"; module {m} failed to import ({why})" for m, why in _BROKEN.items())
        raise ConfigError(f"unknown {kind} backbone {name!r}; registered: {', '.join(names(kind))}{broken}")
    return found


def parse_options(found: BackboneEntry, options: Dict[str, Any], prefix: str):
    """Options dict -> the backbone's options dataclass (ConfigError naming ``prefix.key`` on bad keys)."""
    from ..config_schema import UnknownConfigKey, dataclass_from_dict

    if found.options is None:
        if options:
            raise ConfigError(f"{prefix}: backbone {found.name!r} takes no options, got {sorted(options)}")
        return None
    try:
        return dataclass_from_dict(found.options, dict(options or {}), prefix)
    except UnknownConfigKey as err:
        # the usual cause: the backbone was changed and the options of the previous one (e.g. the packaged FPFH keys) stayed
        raise ConfigError(f"{err}; {prefix} are the options of the {'3D' if found.kind == 'points' else 'RGB'} backbone {found.name!r}: when changing the "
                          f"backbone, replace them too, e.g. --set '{prefix}={{}}' for its defaults") from None


def options_dict(options) -> Dict[str, Any]:
    """Options dataclass -> JSON-able dict (for identities)."""
    if options is None:
        return {}
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(options).items()}


def resolve_weights_of(kind: str, features) -> tuple:
    """(weights spec to load, source) of the ``kind`` backbone of ``features`` (``auto`` resolved offline first)."""
    from .weights import resolve_auto

    name = features.rgb_backbone if kind == "rgb" else features.point_backbone
    spec = features.rgb_weights if kind == "rgb" else features.point_weights
    if entry(kind, name).weight_free:
        if spec not in ("none", "", None, "auto"):
            raise ConfigError(f"{kind} backbone {name!r} is weight-free; its weights must be none or auto, got {spec!r}")
        return "none", "weight-free"
    return resolve_auto(kind, name, spec)


def build(kind: str, features, device):
    """The ``kind`` backbone named by ``features`` (a FeatureConfig), on ``device``, frozen."""
    name = features.rgb_backbone if kind == "rgb" else features.point_backbone
    raw = features.rgb_options if kind == "rgb" else features.point_options
    found = entry(kind, name)
    options = parse_options(found, raw, f"features.{kind if kind == 'rgb' else 'point'}_options")
    return found.factory(features, options, device)


def autocast(device, precision: str):
    """Autocast context for the arithmetic ``precision`` ("fp32": none) on ``device``: the backbones'
    (``features.precision``) and the heads' (``model.head_precision``, resolved by :func:`resolve_precision`)."""
    import torch

    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def bf16_is_fast(device) -> bool:
    """Whether ``device`` computes bf16 natively: a CPU with AVX512-BF16 or AMX, a CUDA GPU with bf16."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


def resolve_precision(setting: str, device) -> str:
    """The arithmetic a precision setting means on ``device``: "auto" -> "bf16" where :func:`bf16_is_fast`,
    else "fp32"; "fp32" / "bf16" / "fp16" as given."""
    if setting == "auto":
        return "bf16" if bf16_is_fast(device) else "fp32"
    return setting


__all__ = ["KINDS", "BackboneEntry", "register", "names", "entry", "build", "resolve_weights_of", "parse_options", "options_dict",
           "autocast", "bf16_is_fast", "resolve_precision"]
