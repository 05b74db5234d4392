"""Mentor3AD detector: frozen backbones + trained heads + threshold, saved as ONE safetensors file.

Checkpoint layout (``FORMAT_VERSION``): safetensors tensors ``heads.<name>`` (the
:class:`mentor3ad.torch_model.Mentor3ADHeads` state dict) and the metadata entry ``"mentor3ad"`` = a
JSON object {format, format_version, config (full Mentor3ADConfig dict), threshold, backbone_identity
(FeatureExtractor.identity()), rgb_dim, xyz_dim, training_info, saved_at}. Loading never unpickles.
Writes are atomic: temp file in the same folder, fsync, ``os.replace``.

>>> detector = Detector.load("models/cable_gland.safetensors")
>>> prediction = detector.predict(rgb, xyz)   # rgb (H,W,3) uint8, xyz (H,W,3) float32 metres
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from .config import Mentor3ADConfig
from .regions import extract_regions
from .torch_model import Mentor3ADHeads
from .types import Prediction

LOG = logging.getLogger(__name__)

FORMAT_NAME = "mentor3ad-checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "mentor3ad"
TENSOR_PREFIX = "heads."


class ModelLoadError(RuntimeError):
    """A checkpoint could not be loaded: missing, corrupt, wrong format version or backbone mismatch."""


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _canonical_json(value) -> str:
    return json.dumps(value, sort_keys=True, default=_json_default)


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of (B, H, W) maps, kernel radius 4 sigma, reflect padding."""
    if sigma <= 0:
        return maps
    radius = max(1, int(4.0 * sigma + 0.5))
    radius = min(radius, maps.shape[-1] - 1, maps.shape[-2] - 1)
    if radius < 1:
        return maps
    offsets = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = maps.unsqueeze(1)
    x = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = F.pad(x, (0, 0, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    return x.squeeze(1)


def _check_input(rgb: np.ndarray, xyz: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    rgb = np.asarray(rgb)
    xyz = np.asarray(xyz)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be (H, W, 3), got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be uint8, got {rgb.dtype}")
    if xyz.ndim != 3 or xyz.shape[2] != 3:
        raise ValueError(f"xyz must be an organized (H, W, 3) point map in metres, got shape {xyz.shape}")
    if xyz.shape[:2] != rgb.shape[:2]:
        raise ValueError(f"rgb {rgb.shape[:2]} and xyz {xyz.shape[:2]} are not pixel-aligned (different sizes)")
    if not np.issubdtype(xyz.dtype, np.floating):
        raise ValueError(f"xyz must be floating point metres, got {xyz.dtype}")
    return rgb, xyz.astype(np.float32, copy=False)


class Detector:
    """Trained Mentor3AD model ready for inference.

    threshold: image-score decision threshold (settable); identity: dict with a short ``model_id``.
    """

    def __init__(self, config: Mentor3ADConfig, heads: Mentor3ADHeads, extractor=None, threshold: float = float("inf"),
                 training_info: Optional[dict] = None, device="cpu", backbone_identity: Optional[dict] = None):
        self.config = config
        self.device = torch.device(device)
        self.heads = heads.to(self.device).eval()
        self.heads.requires_grad_(False)
        self._extractor = extractor
        self._backbone_identity = backbone_identity
        self.threshold = threshold
        self.training_info = dict(training_info or {})
        self._timings: Dict[str, float] = {}

    # ------------------------------------------------------------------ properties
    @property
    def threshold(self) -> float:
        return self._threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        value = float(value)
        if np.isnan(value):
            raise ValueError("threshold must be a number, got NaN")
        self._threshold = value

    @property
    def extractor(self):
        if self._extractor is None:
            from .features import FeatureExtractor

            self._extractor = FeatureExtractor(self.config.features, self.device)
        return self._extractor

    @property
    def backbone_identity(self) -> dict:
        if self._backbone_identity is None:
            self._backbone_identity = self.extractor.identity()
        return self._backbone_identity

    def _state_tensors(self) -> Dict[str, torch.Tensor]:
        return {TENSOR_PREFIX + k: v.detach().cpu().contiguous() for k, v in self.heads.state_dict().items()}

    @property
    def model_id(self) -> str:
        """12 hex digits: SHA-256 of the head weights, config, backbone identity and threshold."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self._state_tensors().items()):
            digest.update(name.encode())
            digest.update(tensor.numpy().tobytes())
        digest.update(_canonical_json([self.config.to_dict(), self.backbone_identity, self.threshold]).encode())
        return digest.hexdigest()[:12]

    @property
    def identity(self) -> dict:
        """What produced a result: model id, format, backbone identity, switches, threshold."""
        model = self.config.model
        return {
            "model_id": self.model_id,
            "format_version": FORMAT_VERSION,
            "backbone": self.backbone_identity,
            "use_mentor": model.use_mentor,
            "use_voting": model.use_voting,
            "score_maps": list(model.score_maps),
            "threshold": self.threshold,
            "seed": self.config.train.seed,
        }

    def timings(self) -> Dict[str, float]:
        """Per-stage seconds of the last predict call (extractor stages merged in)."""
        return dict(self._timings)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def maps_from_features(self, rgb: torch.Tensor, xyz: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Final maps at feature resolution: (B, C, R, R) x2, (B, R, R) -> (B, R, R)."""
        return self.heads(rgb.to(self.device).float(), xyz.to(self.device).float(), valid.to(self.device))["final"]

    @torch.no_grad()
    def postprocess(self, maps: torch.Tensor, output_size: Tuple[int, int]) -> torch.Tensor:
        """(B, R, R) -> (B, H, W): bilinear to features.image_size, Gaussian smoothing (model.smoothing_sigma
        in pixels of that grid), bilinear to the input resolution."""
        size = int(getattr(self.config.features, "image_size", 224))
        x = F.interpolate(maps.unsqueeze(1).float(), size=(size, size), mode="bilinear", align_corners=False)
        x = gaussian_blur(x.squeeze(1), self.config.model.smoothing_sigma)
        if tuple(output_size) != (size, size):
            x = F.interpolate(x.unsqueeze(1), size=tuple(output_size), mode="bilinear", align_corners=False).squeeze(1)
        return x

    def image_scores_from_features(self, features, batch_size: int = 8) -> List[float]:
        """Image scores (max of the post-processed map at features.image_size) of a training.FeatureSet."""
        size = int(getattr(self.config.features, "image_size", 224))
        scores = []
        for start in range(0, len(features), batch_size):
            batch = features.subset(slice(start, start + batch_size))
            maps = self.postprocess(self.maps_from_features(batch.rgb, batch.xyz, batch.valid), (size, size))
            scores.extend(float(v) for v in maps.flatten(1).max(dim=1).values.cpu())
        return scores

    def _prediction(self, anomaly_map: np.ndarray, xyz: Optional[np.ndarray]) -> Prediction:
        score = float(anomaly_map.max())
        regions = extract_regions(anomaly_map, self.threshold, xyz) if np.isfinite(self.threshold) else []
        return Prediction(score=score, anomaly_map=anomaly_map, threshold=self.threshold,
                          is_anomalous=bool(score > self.threshold), regions=regions)

    def _predict_features(self, features: Sequence, inputs: Sequence[Tuple[Tuple[int, int], Optional[np.ndarray]]],
                          timings: Dict[str, float]) -> List[Prediction]:
        from .training import stack_features

        stacked = stack_features(features)
        started = time.perf_counter()
        maps = self.maps_from_features(stacked.rgb, stacked.xyz, stacked.valid)
        timings["heads"] = timings.get("heads", 0.0) + time.perf_counter() - started
        started = time.perf_counter()
        predictions = []
        for index, (size, xyz) in enumerate(inputs):
            full = self.postprocess(maps[index:index + 1], size)[0].cpu().numpy().astype(np.float32)
            predictions.append(self._prediction(full, xyz))
        timings["postprocess"] = timings.get("postprocess", 0.0) + time.perf_counter() - started
        return predictions

    def _extractor_timings(self) -> Dict[str, float]:
        getter = getattr(self.extractor, "timings", None)
        if callable(getter):
            try:
                return {f"features_{k}" if not str(k).startswith("features") else str(k): float(v)
                        for k, v in dict(getter()).items()}
            except Exception:  # noqa: BLE001 - timings are diagnostics only
                return {}
        return {}

    def warmup(self, runs: int = 1) -> float:
        """Run ``runs`` predictions on a synthetic part at ``features.image_size`` so that lazy
        initialisation (kernels, allocator, CUDA context) is paid before the first real part.
        Returns the seconds of the last run."""
        from .data.synthetic import generate_sample

        size = int(getattr(self.config.features, "image_size", 224))
        sample = generate_sample(0, (size, size))
        seconds = 0.0
        for _ in range(max(1, runs)):
            started = time.perf_counter()
            self.predict(sample.rgb, sample.xyz)
            seconds = time.perf_counter() - started
        return seconds

    def predict(self, rgb: np.ndarray, xyz: np.ndarray) -> Prediction:
        """Score one observation: rgb (H, W, 3) uint8, xyz (H, W, 3) float32 metres (invalid = 0/NaN)."""
        return self.predict_batch([(rgb, xyz)])[0]

    def predict_batch(self, pairs: Sequence[Tuple[np.ndarray, np.ndarray]]) -> List[Prediction]:
        """Score several observations (list of (rgb, xyz)); heads run as one batch."""
        if len(pairs) == 0:
            return []
        timings: Dict[str, float] = {}
        features, inputs = [], []
        extractor_timings: Dict[str, float] = {}
        for pair in pairs:
            if len(pair) != 2:
                raise ValueError("predict_batch expects a list of (rgb, xyz) pairs")
            rgb, xyz = _check_input(*pair)
            started = time.perf_counter()
            features.append(self.extractor.extract(rgb, xyz))
            timings["features"] = timings.get("features", 0.0) + time.perf_counter() - started
            for key, value in self._extractor_timings().items():
                extractor_timings[key] = extractor_timings.get(key, 0.0) + value
            inputs.append((rgb.shape[:2], xyz))
        predictions = self._predict_features(features, inputs, timings)
        timings.update(extractor_timings)
        timings["total"] = timings.get("features", 0.0) + timings["heads"] + timings["postprocess"]
        self._timings = timings
        return predictions

    def predict_samples(self, samples: Sequence, cache_dir=None, progress: bool = True,
                        batch_size: int = 8) -> List[Prediction]:
        """Score :class:`mentor3ad.types.Sample`s; features come from the FeatureCache when ``cache_dir``."""
        from tqdm import tqdm

        cache = None
        if cache_dir is not None:
            from .features import FeatureCache

            cache = FeatureCache(cache_dir, self.extractor)
        predictions: List[Prediction] = []
        timings: Dict[str, float] = {}
        bar = tqdm(total=len(samples), desc="predict", disable=not progress, leave=False)
        for start in range(0, len(samples), batch_size):
            chunk = samples[start:start + batch_size]
            started = time.perf_counter()
            features = []
            for sample in chunk:
                _check_input(sample.rgb, sample.xyz)
                features.append(cache.get(sample) if cache is not None else self.extractor.extract(sample.rgb, sample.xyz))
            timings["features"] = timings.get("features", 0.0) + time.perf_counter() - started
            predictions.extend(self._predict_features(features, [(s.rgb.shape[:2], s.xyz) for s in chunk], timings))
            bar.update(len(chunk))
        bar.close()
        self._timings = timings
        return predictions

    # ------------------------------------------------------------------ persistence
    def metadata(self) -> dict:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "threshold": self.threshold,
            "backbone_identity": self.backbone_identity,
            "rgb_dim": self.heads.rgb_dim,
            "xyz_dim": self.heads.xyz_dim,
            "training_info": self.training_info,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def save(self, path: Union[str, Path]) -> Path:
        """Write the checkpoint atomically (temp file in the same folder, fsync, os.replace)."""
        from safetensors.torch import save as safetensors_bytes

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        metadata = {METADATA_KEY: json.dumps(self.metadata(), default=_json_default, allow_nan=True)}
        payload = safetensors_bytes(self._state_tensors(), metadata=metadata)
        handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(payload)
                stream.flush()
                os.fsync(stream.fileno())
            # mkstemp creates 0600; keep the replaced file's mode, else make the model world-readable
            mode = (path.stat().st_mode & 0o777) if path.exists() else 0o644
            os.chmod(temp_name, mode)
            os.replace(temp_name, path)
        except BaseException:
            try:
                os.unlink(temp_name)
            except FileNotFoundError:
                pass
            raise
        try:  # make the rename durable
            directory = os.open(str(path.parent), os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError:
            pass
        LOG.info("saved model %s to %s", self.model_id, path)
        return path

    @staticmethod
    def read_checkpoint(path: Union[str, Path]) -> Tuple[dict, Dict[str, torch.Tensor]]:
        """(metadata, tensors) of a checkpoint; ModelLoadError if missing, corrupt or of another format."""
        from safetensors.torch import load as safetensors_load

        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"model file not found: {path}")
        try:
            raw = path.read_bytes()
            tensors = safetensors_load(raw)
            header_length = int.from_bytes(raw[:8], "little")
            header = json.loads(raw[8:8 + header_length])
            metadata = json.loads((header.get("__metadata__") or {})[METADATA_KEY])
        except KeyError:
            raise ModelLoadError(f"{path} is a safetensors file but not a Mentor3AD model (no '{METADATA_KEY}' "
                                 "metadata entry)") from None
        except Exception as err:  # noqa: BLE001 - any parse failure means a broken file
            raise ModelLoadError(f"{path} is not a readable Mentor3AD model (corrupt or truncated file): "
                                 f"{type(err).__name__}: {err}") from None
        if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
            raise ModelLoadError(f"{path}: metadata is not a {FORMAT_NAME} header")
        version = metadata.get("format_version")
        if version != FORMAT_VERSION:
            raise ModelLoadError(f"{path}: checkpoint format version {version!r} is not supported by this mentor3ad "
                                 f"(expects version {FORMAT_VERSION}); retrain or convert the model")
        return metadata, tensors

    @classmethod
    def load(cls, path: Union[str, Path], device="cpu", extractor=None, precision: Optional[str] = None) -> "Detector":
        """Load a checkpoint and build (or check) its FeatureExtractor from the stored feature config.

        precision: run the backbones in "fp32", "bf16" or "fp16" (CUDA) regardless of the precision the
        model was trained with (None: the stored one).

        Raises ModelLoadError when the file is missing/corrupt, its format version differs, or the
        extractor's identity (backbones, weights, preprocessing) differs from the stored one.
        """
        metadata, tensors = cls.read_checkpoint(path)
        try:
            config = Mentor3ADConfig.from_dict(metadata["config"])
            threshold = float(metadata["threshold"])
            stored_identity = metadata["backbone_identity"]
            rgb_dim, xyz_dim = int(metadata["rgb_dim"]), int(metadata["xyz_dim"])
        except (KeyError, TypeError, ValueError) as err:
            raise ModelLoadError(f"{path}: invalid checkpoint metadata: {err}") from None
        if precision is not None:
            from .features import PRECISIONS

            if precision not in PRECISIONS:
                raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
            config.features.precision = precision
        if extractor is None:
            from .features import FeatureExtractor

            try:
                extractor = FeatureExtractor(config.features, device)
            except Exception as err:  # noqa: BLE001
                raise ModelLoadError(f"{path}: cannot build the feature extractor of this model: "
                                     f"{type(err).__name__}: {err}") from err
        if isinstance(stored_identity.get("config"), dict):
            stored_identity["config"].pop("precision", None)  # earlier checkpoints recorded it; not identity
        current_identity = json.loads(_canonical_json(extractor.identity()))
        if _canonical_json(current_identity) != _canonical_json(stored_identity):
            differences = sorted(set(_flatten(stored_identity).items()) ^ set(_flatten(current_identity).items()))
            keys = sorted({key for key, _ in differences})
            raise ModelLoadError(
                f"{path}: the model was trained with different backbone features than this extractor provides "
                f"(differs in: {', '.join(keys) or 'identity'}); stored {stored_identity}, current {current_identity}")
        heads = Mentor3ADHeads(rgb_dim, xyz_dim, config.model, seed=config.train.seed)
        state = {k[len(TENSOR_PREFIX):]: v for k, v in tensors.items() if k.startswith(TENSOR_PREFIX)}
        try:
            heads.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ModelLoadError(f"{path}: weights do not match the stored model config: {err}") from None
        return cls(config, heads, extractor, threshold=threshold, training_info=metadata.get("training_info"),
                   device=device, backbone_identity=stored_identity)


def _flatten(value, prefix: str = "") -> Dict[str, str]:
    if isinstance(value, dict):
        out: Dict[str, str] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: json.dumps(value, sort_keys=True, default=_json_default)}
