"""Model files: ONE safetensors file per trained detector, validated before anything is allocated.

Layout (``FORMAT_VERSION``): tensors ``heads.<name>`` (the :class:`~mentor3ad.model.heads.Mentor3ADHeads`
state dict, float32) and the metadata entry ``"mentor3ad"`` = a JSON object {format, format_version,
config (full Mentor3ADConfig dict), threshold, backbone_identity (FeatureExtractor.identity()), rgb_dim,
xyz_dim, training_info, saved_at}. Loading never unpickles.

Reading (:func:`read_checkpoint`) is defensive, because a model file decides whether parts pass:

1. only the 8-byte length and the JSON header are read first (bounded to ``MAX_HEADER_BYTES``); a file
   without one is refused as "not a mentor3ad model file" without a byte, length or size of it in the
   message (:func:`not_a_model`: a model path can name any readable file);
2. the metadata is validated: format and version, the config (every dimension bounded by
   ``MAX_DIMENSION``, every number finite), a finite threshold above 0, feature dimensions consistent with
   the stored identity;
3. the expected tensor names, dtypes and shapes are derived from the config on torch's ``meta`` device
   (no memory); their total must stay under ``MAX_HEAD_PARAMETERS``; they are compared with the header,
   the tensors must tile the data section exactly, and the file size must equal the header's data length
   (a valid header followed by a huge tail, or a header claiming gigabytes the file does not hold, is
   refused here, without reading the data);
4. only then (:func:`read_tensors`; :meth:`~mentor3ad.model.detector.Detector.load` first checks the
   backbone identity and the backbones' size, :func:`check_backbone_budget`) are the tensors
   memory-mapped, every value must be finite, and the content digest over the tensors and the metadata
   (``__metadata__["mentor3ad_digest"]``, :mod:`mentor3ad.model.integrity`) must match.

:func:`read_checkpoint_header` does steps 1-3, :func:`read_checkpoint` all four. Any failure (also JSON
nested beyond the parser's depth, or a header that exhausts memory) is a
:class:`~mentor3ad.errors.ModelLoadError` naming the file and the problem. :func:`check_model_location`
limits model paths to configured directories before a file is looked at. Writes are atomic
(:func:`mentor3ad.io.files.atomic_write_bytes`) and refuse non-finite thresholds and weights.
"""
from __future__ import annotations

import json
import math
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, Sequence, Tuple, Union

import numpy as np
import torch

from ..config import Mentor3ADConfig
from ..errors import ConfigError, Mentor3ADError, ModelLoadError
from ..io.files import atomic_write_bytes
from .integrity import DIGEST_KEY, content_digest, verify_digest

FORMAT_NAME = "mentor3ad-checkpoint"
FORMAT_VERSION = 2
METADATA_KEY = "mentor3ad"
TENSOR_PREFIX = "heads."
MAX_HEADER_BYTES = 16 * 2 ** 20
MAX_DIMENSION = 16384  # feature channels and head widths
DIMENSION_KEYS = ("mentor_dim", "mfm_hidden_dim", "mgm_hidden_dim", "mgm_mentor_dim", "vote_conv_channels",
                  "ocsvm_rff_dim", "infonce_max_patches")
LIMITS = {"vote_levels": 64, "vote_kernel_size": 15, "vote_conv_channels": 256, "infonce_max_patches": 1 << 20,
          "rgb_bank_patches": 1 << 17}
# the default heads (768/1152-d features) have 4.0 M parameters; 32x that is implausible for a model file
MAX_HEAD_PARAMETERS = 1 << 27  # 128 M float32 = 512 MiB
# ViT-B/8 + Point-MAE have 108 M parameters; a model file asking for more than 1 G is refused before building
MAX_BACKBONE_PARAMETERS = 1 << 30


def json_default(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def canonical_json(value) -> str:
    return json.dumps(value, sort_keys=True, default=json_default)


def write_checkpoint(path: Union[str, Path], tensors: Dict[str, torch.Tensor], metadata: Dict[str, Any]) -> Path:
    """Write head tensors (names without prefix) and metadata atomically; refuses non-finite content
    (threshold, weights, config numbers: ModelLoadError). Non-finite diagnostics in ``training_info``
    (e.g. an undefined rate) are stored as null: JSON has no NaN and the loader refuses non-finite numbers."""
    from safetensors.torch import save as safetensors_bytes

    threshold = metadata.get("threshold")
    if not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise ModelLoadError(f"refusing to save {path}: the threshold is {threshold!r} (calibrate the model first)")
    if threshold <= 0:
        raise ModelLoadError(f"refusing to save {path}: the threshold is {threshold!r}, every part would FAIL "
                             "(image scores are >= 0)")
    bad = [name for name, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise ModelLoadError(f"refusing to save {path}: non-finite weights in {', '.join(sorted(bad)[:5])}")
    metadata = {**metadata, "training_info": _finite_or_null(json.loads(json.dumps(
        metadata.get("training_info") or {}, default=json_default)))}
    bad_numbers = [key for key, value in _numbers(metadata, "metadata")
                   if isinstance(value, float) and not math.isfinite(value)]
    if bad_numbers:
        raise ModelLoadError(f"refusing to save {path}: non-finite numbers in {', '.join(bad_numbers[:5])}")
    text = json.dumps(metadata, default=json_default, allow_nan=False)
    header = {METADATA_KEY: text, DIGEST_KEY: content_digest(tensors, text)}  # one model: verified at load
    payload = safetensors_bytes({TENSOR_PREFIX + k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                                metadata=header)
    return atomic_write_bytes(path, payload)


def new_metadata(config: Mentor3ADConfig, threshold: float, backbone_identity: dict, rgb_dim: int, xyz_dim: int,
                 training_info: dict) -> Dict[str, Any]:
    return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "config": config.to_dict(),
            "threshold": float(threshold), "backbone_identity": backbone_identity, "rgb_dim": int(rgb_dim),
            "xyz_dim": int(xyz_dim), "training_info": training_info,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def not_a_model(path: Path) -> ModelLoadError:
    """The refusal of a file without a safetensors header: it names the path and what the file is not, never
    its bytes, its size or the length its first 8 bytes would give (any readable file can be named as a model
    path; the refusal must not become a way to read it)."""
    return ModelLoadError(f"{path} is not a mentor3ad model file (no safetensors header: corrupt or truncated, or "
                          "another kind of file)")


def _read_header(path: Path) -> Tuple[dict, int]:
    """(safetensors JSON header, byte offset of the data) reading only the header bytes."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise not_a_model(path)
        (length,) = struct.unpack("<Q", prefix)
        if length < 2 or length > MAX_HEADER_BYTES or 8 + length > size:
            raise not_a_model(path)
        raw = handle.read(length)
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, nested beyond the parser's depth
        raise not_a_model(path) from None
    if not isinstance(header, dict):
        raise not_a_model(path)
    return header, 8 + length


def _metadata(path: Path, header: dict) -> dict:
    entry = (header.get("__metadata__") or {}).get(METADATA_KEY) if isinstance(header.get("__metadata__"), dict) else None
    if entry is None:
        raise ModelLoadError(f"{path} is a safetensors file but not a Mentor3AD model (no '{METADATA_KEY}' "
                             "metadata entry)")
    try:
        metadata = json.loads(entry, parse_constant=lambda name: float(name))
    except RecursionError:
        raise ModelLoadError(f"{path}: the '{METADATA_KEY}' metadata is nested too deeply to be a model's") from None
    except (TypeError, ValueError) as err:
        raise ModelLoadError(f"{path}: metadata is not JSON: {err}") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
        raise ModelLoadError(f"{path}: metadata is not a {FORMAT_NAME} header")
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelLoadError(f"{path}: checkpoint format version {version!r} is not supported by this mentor3ad "
                             f"(expects version {FORMAT_VERSION}); retrain or convert the model")
    return metadata


# keys added after models were trained, per section, with the value that reproduces what those models did:
# the raw map as calibrated (level_percentile), fp32 heads (head_precision), the largest cluster alone, every map
# in the VM (a re-training of the heads from such a file, e.g. calibration.cv_folds, trains them as they were)
KEYS_ADDED = {"model": {"head_precision": "fp32", "level_percentile": 0.0}, "features": {"cluster_min_fraction": 1.0},
              "train": {"vm_max_samples": 0}}


def validate_metadata(path: Path, metadata: dict) -> Tuple[Mentor3ADConfig, float, dict, int, int]:
    """-> (config, threshold, backbone identity, rgb_dim, xyz_dim), all checked (ModelLoadError)."""
    try:
        config = Mentor3ADConfig.from_dict(metadata["config"])
        for section, added in KEYS_ADDED.items():  # a file from before these keys: their behaviour then
            stored = metadata["config"].get(section) or {}
            legacy = {key: value for key, value in added.items() if key not in stored}
            if legacy:
                config = config.replace(**{section: legacy})
        threshold = metadata["threshold"]
        identity = metadata["backbone_identity"]
        rgb_dim, xyz_dim = metadata["rgb_dim"], metadata["xyz_dim"]
    except KeyError as err:
        raise ModelLoadError(f"{path}: invalid checkpoint metadata: missing {err}") from None
    except (ConfigError, TypeError, ValueError, AttributeError) as err:
        raise ModelLoadError(f"{path}: invalid checkpoint metadata: {err}") from None
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise ModelLoadError(f"{path}: the threshold must be a finite number, got {threshold!r}")
    if threshold <= 0:
        raise ModelLoadError(f"{path}: the threshold must be above 0 (image scores are >= 0: every part would FAIL), "
                             f"got {threshold!r}")
    for name, value in (("rgb_dim", rgb_dim), ("xyz_dim", xyz_dim)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DIMENSION:
            raise ModelLoadError(f"{path}: {name} must be an integer in [1, {MAX_DIMENSION}], got {value!r}")
    for key, value in _numbers(metadata["config"], "config"):
        if isinstance(value, float) and not math.isfinite(value):
            raise ModelLoadError(f"{path}: invalid checkpoint metadata: {key} is {value} (not a finite number)")
    model = config.model
    for key in DIMENSION_KEYS + tuple(LIMITS):
        limit = LIMITS.get(key, MAX_DIMENSION)
        if getattr(model, key) > limit:
            raise ModelLoadError(f"{path}: model.{key} = {getattr(model, key)} exceeds the plausible maximum {limit}")
    if not isinstance(identity, dict):
        raise ModelLoadError(f"{path}: backbone_identity must be a mapping")
    if (identity.get("rgb_dim"), identity.get("xyz_dim")) != (rgb_dim, xyz_dim):
        raise ModelLoadError(f"{path}: the heads are for {rgb_dim}/{xyz_dim}-channel features but the stored "
                             f"backbone identity gives {identity.get('rgb_dim')}/{identity.get('xyz_dim')}")
    return config, float(threshold), identity, int(rgb_dim), int(xyz_dim)


def _finite_or_null(value):
    """A JSON-like structure with every non-finite float replaced by None."""
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_null(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _numbers(value, key: str) -> Iterator[Tuple[str, Any]]:
    """(dotted key, number) for every int/float inside a JSON-like structure."""
    if isinstance(value, dict):
        for name, item in value.items():
            yield from _numbers(item, f"{key}.{name}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _numbers(item, f"{key}[{index}]")
    elif isinstance(value, (int, float)):
        yield key, value


def expected_tensors(config: Mentor3ADConfig, rgb_dim: int, xyz_dim: int) -> Dict[str, Tuple[int, ...]]:
    """{tensor name: shape} of the heads this config describes (built on the meta device: no memory)."""
    from .heads import Mentor3ADHeads

    try:
        with torch.device("meta"):
            heads = Mentor3ADHeads(rgb_dim, xyz_dim, config.model, seed=config.train.seed)
    except Exception as err:  # noqa: BLE001 - a config the heads cannot be built from
        raise ModelLoadError(f"the stored model config does not describe buildable heads: {type(err).__name__}: "
                             f"{err}") from None
    return {name: tuple(t.shape) for name, t in heads.state_dict().items()}


def _check_head_budget(path: Path, expected: Dict[str, Tuple[int, ...]]) -> None:
    count = sum(int(np.prod(shape, dtype=np.int64)) for shape in expected.values())
    if count > MAX_HEAD_PARAMETERS:
        raise ModelLoadError(f"{path}: the stored model config describes heads with {count:,} parameters "
                             f"({count * 4 / 2 ** 30:.1f} GiB), more than the plausible maximum "
                             f"{MAX_HEAD_PARAMETERS:,}; refusing the file before allocating anything")


class _QuietRandomInit:
    """Drops the backbones' "RANDOM weights" warnings while a size estimate builds them with weights 'none'."""

    def filter(self, record) -> bool:
        return "RANDOM" not in str(record.msg)


def check_backbone_budget(path: Path, features) -> int:
    """Build the backbones a FeatureConfig describes on torch's meta device (architecture only: no memory,
    no weight files read) and refuse (ModelLoadError) more than ``MAX_BACKBONE_PARAMETERS``; returns the
    count. Run before the real FeatureExtractor is built from a model file's config."""
    import dataclasses
    import logging

    from .. import backbones

    shape_only = dataclasses.replace(features, rgb_weights="none", point_weights="none")
    quiet = _QuietRandomInit()
    loggers = [logging.getLogger(f"mentor3ad.backbones.{name}") for name in ("timm_rgb", "point_mae")]
    total = 0
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        for kind in backbones.KINDS:
            with torch.device("meta"):
                built = backbones.build(kind, shape_only, torch.device("meta"))
            modules = [built] if isinstance(built, torch.nn.Module) else \
                [v for v in vars(built).values() if isinstance(v, torch.nn.Module)]
            total += sum(p.numel() for module in modules for p in module.parameters())
    except Mentor3ADError as err:
        raise ModelLoadError(f"{path}: cannot build the feature extractor of this model: {err}") from None
    except Exception:  # noqa: BLE001 - an architecture that cannot be built on meta: the real build decides
        return -1
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)
    if total > MAX_BACKBONE_PARAMETERS:
        raise ModelLoadError(f"{path}: the stored feature config describes backbones with {total:,} parameters, "
                             f"more than the plausible maximum {MAX_BACKBONE_PARAMETERS:,}; refusing to build them")
    return total


def _check_layout(path: Path, header: dict, data_start: int, expected: Dict[str, Tuple[int, ...]]) -> None:
    stored = {k[len(TENSOR_PREFIX):]: v for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}
    unknown = [k for k in header if k != "__metadata__" and not k.startswith(TENSOR_PREFIX)]
    missing, extra = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
    if unknown or missing or extra:
        raise ModelLoadError(f"{path}: weights do not match the stored model config: missing {missing[:5]}, "
                             f"unexpected {(extra + unknown)[:5]}")
    spans = []
    for name, shape in expected.items():
        info = stored[name]
        if info.get("dtype") != "F32" or tuple(info.get("shape", ())) != shape:
            raise ModelLoadError(f"{path}: tensor {name} is {info.get('dtype')} {tuple(info.get('shape', ()))}, the "
                                 f"config needs F32 {shape}")
        offsets = info.get("data_offsets")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
                or offsets[1] - offsets[0] != 4 * int(np.prod(shape, dtype=np.int64))):
            raise ModelLoadError(f"{path}: tensor {name} has data offsets {offsets!r} that do not fit its shape")
        spans.append((offsets[0], offsets[1], name))
    end = 0
    for start, stop, name in sorted(spans):
        if start != end:
            raise ModelLoadError(f"{path} is not a readable Mentor3AD model (corrupt file: tensor {name} starts at "
                                 f"data byte {start}, expected {end}: overlapping or gapped tensors)")
        end = stop
    size = path.stat().st_size
    if data_start + end != size:
        raise ModelLoadError(f"{path} is not a readable Mentor3AD model (corrupt or truncated file: {size} bytes, "
                             f"the header describes {data_start + end})")


@dataclass
class CheckpointHeader:
    """What :func:`read_checkpoint_header` validated: the raw safetensors header and the checked metadata."""

    path: Path
    header: dict
    metadata: dict
    config: Mentor3ADConfig
    threshold: float
    backbone_identity: dict
    rgb_dim: int
    xyz_dim: int


def check_model_location(path: Union[str, Path], directories: Sequence[Union[str, Path]]) -> Path:
    """``path`` resolved (symlinks followed) when it lies inside one of ``directories`` (resolved too), else a
    ModelLoadError naming the directories; decided from the names only, before the file is opened or its
    existence is reported. No ``directories``: no restriction (``path`` is returned as given)."""
    if not directories:
        return Path(path)
    resolved = Path(path).resolve()
    allowed = [Path(d).resolve() for d in directories]
    if not any(resolved.is_relative_to(d) for d in allowed):
        raise ModelLoadError(f"model_path {path} is outside the allowed model directories "
                             f"({', '.join(str(d) for d in directories)}); refusing to open it")
    return resolved


def read_checkpoint_header(path: Union[str, Path]) -> CheckpointHeader:
    """Steps 1-3 of the module docstring: header, metadata, tensor layout and file size (no tensor data read)."""
    path = Path(path)
    try:
        return _read_checkpoint_header(path)
    except RecursionError:  # a structure within the parser's depth but beyond a validator's
        raise ModelLoadError(f"{path}: the header is nested too deeply to be a model's") from None
    except MemoryError:
        raise ModelLoadError(f"{path}: not enough memory to validate its header (at most "
                             f"{MAX_HEADER_BYTES // 2 ** 20} MiB of JSON); refusing it") from None


def _read_checkpoint_header(path: Path) -> CheckpointHeader:
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    header, data_start = _read_header(path)
    metadata = _metadata(path, header)
    config, threshold, identity, rgb_dim, xyz_dim = validate_metadata(path, metadata)
    try:
        expected = expected_tensors(config, rgb_dim, xyz_dim)
    except ModelLoadError as err:
        raise ModelLoadError(f"{path}: {err}") from None
    _check_head_budget(path, expected)
    _check_layout(path, header, data_start, expected)
    return CheckpointHeader(path, header, metadata, config, threshold, identity, rgb_dim, xyz_dim)


def read_checkpoint(path: Union[str, Path]) -> Tuple[dict, Dict[str, torch.Tensor]]:
    """(metadata, head tensors without prefix) of a model file, validated as the module docstring says."""
    checked = read_checkpoint_header(path)
    return checked.metadata, read_tensors(checked)


def read_tensors(checked: CheckpointHeader) -> Dict[str, torch.Tensor]:
    """Step 4: the head tensors (without prefix) of a file :func:`read_checkpoint_header` accepted; every
    value finite. The header is read again and must be unchanged (the file was not replaced meanwhile)."""
    from safetensors.torch import load_file

    path = checked.path
    if _read_header(path)[0] != checked.header:
        raise ModelLoadError(f"{path} changed while it was being loaded; load it again")
    try:
        tensors = load_file(str(path))  # memory-mapped
    except Exception as err:  # noqa: BLE001 - any parse failure means a broken file
        raise ModelLoadError(f"{path} is not a readable Mentor3AD model (corrupt or truncated file): "
                             f"{type(err).__name__}: {err}") from None
    tensors = {k[len(TENSOR_PREFIX):]: v for k, v in tensors.items()}
    bad = [name for name, t in tensors.items() if not bool(torch.isfinite(t).all())]
    if bad:
        raise ModelLoadError(f"{path}: non-finite (NaN/Inf) weights in {', '.join(sorted(bad)[:5])}"
                             f"{' ...' if len(bad) > 5 else ''}; refusing the model")
    stored = checked.header["__metadata__"]
    verify_digest(path, stored.get(DIGEST_KEY), tensors, stored[METADATA_KEY])
    return tensors


__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "METADATA_KEY", "TENSOR_PREFIX", "MAX_HEAD_PARAMETERS",
           "MAX_BACKBONE_PARAMETERS", "CheckpointHeader", "read_checkpoint", "read_checkpoint_header", "read_tensors",
           "check_backbone_budget", "check_model_location", "not_a_model", "write_checkpoint", "new_metadata", "validate_metadata", "expected_tensors",
           "canonical_json", "json_default"]
