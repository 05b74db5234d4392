"""Mentor3AD detector: frozen backbones + trained heads + threshold; the inference API.

>>> detector = Detector.load("models/cable_gland.safetensors")      # validated, self-tested
>>> result = detector.predict(rgb, xyz)   # rgb (H,W,3) uint8, xyz (H,W,3) float32 metres
>>> result.verdict, result.score, result.anomaly_map, result.regions

A Detector is a :class:`~mentor3ad.model.scoring.FeatureScorer` (the scoring protocol it shares with
the yardsticks): every answer is an :class:`~mentor3ad.types.InspectionResult` made by
:func:`mentor3ad.model.scoring.judge` (non-finite maps or thresholds are ERROR, never PASS); a threshold
override is an argument of :meth:`Detector.predict`, so the decision lives in one place. The threshold
and its :class:`~mentor3ad.model.threshold.ThresholdRecord` live in ``training_info["threshold"]``. The
model file format and its validation: :mod:`mentor3ad.model.checkpoint`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..backbones import resolve_precision
from ..config import Mentor3ADConfig
from ..errors import ConfigError, InputError, Mentor3ADError, ModelLoadError
from ..features.extractor import stack_features
from ..geometry.observation import check_observation
from ..timing import StageTimer
from ..types import InspectionResult, Verdict
from . import checkpoint
from .heads import Mentor3ADHeads
from .input_profile import InputProfile
from .load_checks import LEVEL_CAP_KEY, check_plausible, warn_precisions
from .scoring import FeatureScorer, PostProcessing, score_feature_set
from .threshold import LEGACY_KEYS, ThresholdRecord
from .threshold import manual as manual_threshold
from .voting import OCSVM_SCORE_CLAMP


LOG = logging.getLogger(__name__)
HEAD_STAGES = {"heads_mfm": "mfm", "heads_mgm": "mgm", "heads_vm": "voting"}


def warmup_scene(size: int) -> Tuple[np.ndarray, np.ndarray]:
    """A part-like observation for warm-up and self-tests: a 2 cm high box on a plane 0.35 m away, seen by a
    pinhole camera with a 12.5 cm field of view (an inspection cell's scale), with a deterministic texture
    -> rgb (S, S, 3) uint8, xyz (S, S, 3) metres."""
    v, u = np.mgrid[0:size, 0:size].astype(np.float32)
    inside = (np.abs(u - size / 2) < size / 4) & (np.abs(v - size / 2) < size / 4)
    z = np.where(inside, np.float32(0.33), np.float32(0.35))
    f, c = np.float32(size * 0.35 / 0.125), np.float32((size - 1) / 2)
    xyz = np.stack([(u - c) / f * z, (v - c) / f * z, z], axis=-1).astype(np.float32)
    shade = (96 + 48 * np.sin(u / 5.0) * np.cos(v / 7.0) + 60 * inside).astype(np.uint8)
    rgb = np.stack([shade, shade // 2 + 40, 255 - shade], axis=-1).astype(np.uint8)
    return rgb, xyz


class Detector(FeatureScorer):
    """Trained Mentor3AD model ready for inference.

    threshold: image-score decision threshold (settable: a manual record; calibration writes its own via
    :meth:`set_threshold`); threshold_record: where it came from; identity: dict with a short ``model_id``.
    The heads score in ``model.head_precision`` resolved for ``device`` (``heads.precision``), the backbones
    in ``features.precision`` resolved (``extractor.precision``); the ones the threshold was set with are
    ``training_info["head_precision"]`` / ``["feature_precision"]`` (absent: "fp32" / the stored setting).
    """

    def __init__(self, config: Mentor3ADConfig, heads: Mentor3ADHeads, extractor=None, threshold: float = float("inf"),
                 training_info: Optional[dict] = None, device="cpu", backbone_identity: Optional[dict] = None):
        self.config = config
        self.device = torch.device(device)
        self.heads = heads.to(self.device).eval()
        self.heads.requires_grad_(False)
        self.heads.precision = resolve_precision(config.model.head_precision, self.device)
        self._extractor = extractor
        self._backbone_identity = backbone_identity
        self._model_id: Optional[Tuple[float, str]] = None
        self.training_info = dict(training_info or {})
        self._threshold = float(threshold)
        if np.isnan(self._threshold):
            raise ConfigError("threshold must be a number, got NaN")
        record = ThresholdRecord.stored(self.training_info, self._threshold)
        if record is None and np.isfinite(self._threshold):
            record = manual_threshold(self._threshold)
        if record is not None:
            self.set_threshold(record)
        self.timer = StageTimer(self.device)
        for stage, name in HEAD_STAGES.items():
            module = getattr(self.heads, name, None)
            if module is not None:
                self._time_module(stage, module)

    # ------------------------------------------------------------------ properties
    def _store_threshold_record(self, record: ThresholdRecord) -> None:
        for key in LEGACY_KEYS:
            self.training_info.pop(key, None)
        if self.training_info.get("threshold") != record.to_dict():  # a new threshold: scored in this precision
            self.training_info["head_precision"] = self.heads.precision
            self.training_info["feature_precision"] = self.feature_precision
        self.training_info["threshold"] = record.to_dict()

    @property
    def post(self) -> PostProcessing:
        return PostProcessing.of(self.config, self.level_cap)

    @property
    def level_cap(self) -> float:
        """The largest part level subtracted from a map (``training_info["part_level_cap"]``, set at
        calibration from the held-out good parts; inf before). ModelLoadError for a stored value that is not
        a finite number >= 0."""
        if LEVEL_CAP_KEY not in self.training_info:
            return float("inf")
        cap = self.training_info[LEVEL_CAP_KEY]
        if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not np.isfinite(cap) or cap < 0:
            raise ModelLoadError(f"training_info {LEVEL_CAP_KEY} must be a finite number >= 0, got {cap!r}")
        return float(cap)

    def set_level_cap(self, cap: Optional[float]) -> None:
        """Set (None: remove) the cap on the part level :attr:`post` subtracts (model.level_percentile)."""
        if cap is None:
            self.training_info.pop(LEVEL_CAP_KEY, None)
        else:
            self.training_info[LEVEL_CAP_KEY] = float(cap)
        self._model_id = None

    @property
    def extractor(self):
        if self._extractor is None:
            from ..features.extractor import FeatureExtractor

            self._extractor = FeatureExtractor(self.config.features, self.device)
        return self._extractor

    @property
    def feature_precision(self) -> str:
        """The arithmetic the backbones run in: the extractor's, else ``features.precision`` resolved here."""
        own = getattr(self._extractor, "precision", None) if self._extractor is not None else None
        return str(own or resolve_precision(self.config.features.precision, self.device))

    @property
    def backbone_identity(self) -> dict:
        if self._backbone_identity is None:
            self._backbone_identity = self.extractor.identity()
        return self._backbone_identity

    @property
    def input_profile(self) -> Optional[InputProfile]:
        """What the model was trained on (:mod:`mentor3ad.model.input_profile`; None: a model trained before
        profiles were recorded, no input checks); ModelLoadError when the stored profile is malformed."""
        return InputProfile.stored(self.training_info)

    def state_tensors(self) -> Dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.heads.state_dict().items()}

    @property
    def model_id(self) -> str:
        """12 hex digits: SHA-256 of the head weights, config, backbone identity, threshold and part-level cap."""
        if self._model_id is None or self._model_id[0] != self.threshold:
            digest = hashlib.sha256()
            for name, tensor in sorted(self.state_tensors().items()):
                digest.update((checkpoint.TENSOR_PREFIX + name).encode())
                digest.update(tensor.numpy().tobytes())
            cap = self.training_info.get(LEVEL_CAP_KEY)
            digest.update(checkpoint.canonical_json([self.config.to_dict(), self.backbone_identity, self.threshold]
                                                    + ([cap] if cap is not None else [])).encode())
            self._model_id = (self.threshold, digest.hexdigest()[:12])
        return self._model_id[1]

    @property
    def identity(self) -> dict:
        """What produced a result: model id, format, backbone identity, switches, threshold."""
        model = self.config.model
        return {"model_id": self.model_id, "format_version": checkpoint.FORMAT_VERSION,
                "backbone": self.backbone_identity, "use_mentor": model.use_mentor, "use_voting": model.use_voting,
                "score_maps": list(model.score_maps), "rgb_bank_patches": model.rgb_bank_patches,
                "threshold": self.threshold, "seed": self.config.train.seed}

    # ------------------------------------------------------------------ timing
    def _time_module(self, stage: str, module: torch.nn.Module) -> None:
        starts: List[float] = []

        def before(_module, _inputs) -> None:  # hooks must return None (a value would replace inputs / output)
            starts.append(self.timer.now())

        def after(_module, _inputs, _output) -> None:
            self.timer.tick(stage, starts.pop())

        module.register_forward_pre_hook(before)
        module.register_forward_hook(after)

    def timings(self) -> Dict[str, float]:
        """Per-stage seconds of the last predict call: ``features`` (with the extractor's stages prefixed
        ``features_``), ``heads`` (with ``heads_mfm``/``heads_mgm``/``heads_vm``), ``postprocess`` (with
        ``post_upsample``/``post_decide``) and ``total``."""
        return dict(self.timer.seconds)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def maps_from_features(self, rgb: torch.Tensor, xyz: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Final maps at feature resolution: (B, C, R, R) x2, (B, R, R) -> (B, R, R)."""
        return self.heads.final_maps(rgb, xyz, valid)

    def grid_maps(self, features) -> torch.Tensor:
        """FeatureSet -> final maps (B, R, R) (the scoring protocol's grid maps)."""
        return self.maps_from_features(features.rgb, features.xyz, features.valid)

    def score_features(self, features, sizes=None, batch_size=None, xyzs=None):
        """The protocol's maps, fused with the RGB bank's when the model keeps one (timer stage ``rgb_bank``)."""
        scored, bank = super().score_features(features, sizes, batch_size, xyzs), self.heads.rgb_bank
        if bank is None:
            return scored
        started = self.timer.now()
        fused = bank.fuse(scored, score_feature_set(bank.grid_maps, features, sizes, bank.post(self.config), batch_size))
        self.timer.tick("rgb_bank", started)
        return fused

    def predict(self, rgb: np.ndarray, xyz: np.ndarray, threshold: Optional[float] = None) -> InspectionResult:
        """Judge one observation: rgb (H, W, 3) uint8, xyz (H, W, 3) float32 metres (invalid = 0/NaN).

        threshold: decision threshold for this call (None: the model's calibrated one). Raises InputError
        for unusable input; a model that produces non-finite maps answers ERROR."""
        return self.predict_batch([(rgb, xyz)], threshold)[0]

    def predict_batch(self, pairs: Sequence[Tuple[np.ndarray, np.ndarray]],
                      threshold: Optional[float] = None) -> List[InspectionResult]:
        """Judge several observations (list of (rgb, xyz)); backbones and heads run as one batch."""
        if len(pairs) == 0:
            return []
        self.timer.reset()
        checked = []
        for pair in pairs:
            if len(pair) != 2:
                raise InputError("predict_batch expects a list of (rgb, xyz) pairs")
            checked.append(check_observation(*pair))
        started = self.timer.now()
        features = self.extractor.extract_batch([r for r, _ in checked], [x for _, x in checked],
                                                self.timer.prefixed("features_"))
        self.timer.tick("features", started)
        results = self.predict_features(stack_features(features), [r.shape[:2] for r, _ in checked],
                                        [x for _, x in checked], threshold)
        self.timer.tick("total", started)
        return results

    def warmup(self, runs: int = 1) -> float:
        """Run ``runs`` predictions on :func:`warmup_scene` so that lazy initialisation (kernels, allocator,
        CUDA context) is paid before the first real part. Returns the seconds of the last run."""
        rgb, xyz = warmup_scene(int(self.config.features.image_size))
        seconds = 0.0
        for _ in range(max(1, runs)):
            started = time.perf_counter()
            self.predict(rgb, xyz)
            seconds = time.perf_counter() - started
        return seconds

    def max_score(self) -> float:
        """The largest image score these heads can produce: the Voting Module clamps its OC-SVM score at
        ``OCSVM_SCORE_CLAMP`` before exp(); without voting the map is a product of cosine distances (<= 2)."""
        if self.heads.voting is not None:
            return float(np.exp(np.float32(OCSVM_SCORE_CLAMP)))
        return 2.0 ** len(self.config.model.score_maps)

    def self_test(self) -> float:
        """Warm up and check that the model can answer: on :func:`warmup_scene` every score map and the
        Voting Module's OC-SVM output are finite, the OC-SVM output is not below exp()'s underflow on every
        valid patch (a map of zeros would PASS every part), the threshold is below :meth:`max_score` (else
        no part could ever FAIL), an RGB bank's tensors usable, and the prediction is a finite PASS/FAIL.
        Raises ModelLoadError with the reason otherwise; returns the seconds taken."""
        rgb, xyz = warmup_scene(int(self.config.features.image_size))
        started = time.perf_counter()
        bank = self.heads.rgb_bank
        if bank is not None and bank.problem():  # (a file's digest covers them; a stripped digest does not)
            raise ModelLoadError(f"the model's RGB bank is unusable: {bank.problem()}")
        if self.threshold >= self.max_score():
            raise ModelLoadError(f"the threshold {self.threshold:g} is not below the largest score the model can "
                                 f"produce ({self.max_score():.4g}): no part could ever FAIL")
        try:
            features = self.extractor.extract_batch([rgb], [xyz])
            stacked = stack_features(features)
            self._check_internals(stacked)
            result = self.predict_features(stacked, [rgb.shape[:2]], [xyz])[0]
        except ModelLoadError:
            raise
        except Mentor3ADError as err:
            raise ModelLoadError(f"the model fails its self-test prediction: {err}") from None
        except Exception as err:  # noqa: BLE001 - whatever a broken model raises, it is refused
            raise ModelLoadError(f"the model fails its self-test prediction: {type(err).__name__}: {err}") from None
        if result.verdict is Verdict.ERROR:
            raise ModelLoadError(f"the model fails its self-test prediction: {result.reason}")
        return time.perf_counter() - started

    @torch.no_grad()
    def _check_internals(self, stacked) -> None:
        rgb, xyz = stacked.rgb.to(self.device), stacked.xyz.to(self.device)
        valid = stacked.valid.to(self.device).bool()
        maps = self.heads.score_maps(rgb, xyz, valid)
        for name, values in maps.items():
            if not bool(torch.isfinite(values).all()):
                raise ModelLoadError(f"the model fails its self-test: its {name} score map is non-finite")
        if self.heads.voting is None or not bool(valid.any()):
            return
        features = self.heads.voting.pixel_features(self.heads.stacked(maps))
        raw = self.heads.voting.ocsvm(features.reshape(-1, features.shape[-1])).reshape(features.shape[:3])[valid]
        if not bool(torch.isfinite(raw).all()):
            raise ModelLoadError("the model fails its self-test: the Voting Module's OC-SVM output is non-finite "
                                 f"({int(torch.isnan(raw).sum())} NaN of {raw.numel()} patches)")
        if float(raw.max()) < -OCSVM_SCORE_CLAMP:
            raise ModelLoadError(f"the model fails its self-test: the Voting Module's OC-SVM output is at most "
                                 f"{float(raw.max()):.3g} on every patch, its map is ~0 and every part would PASS")

    # ------------------------------------------------------------------ persistence
    def metadata(self) -> dict:
        return checkpoint.new_metadata(self.config, self.threshold, self.backbone_identity, self.heads.rgb_dim,
                                       self.heads.xyz_dim, self.training_info)

    def save(self, path: Union[str, Path]) -> Path:
        """Write the model file atomically (refused for an uncalibrated threshold or non-finite weights)."""
        path = checkpoint.write_checkpoint(path, self.state_tensors(), self.metadata())
        LOG.info("saved model %s to %s", self.model_id, path)
        return path

    @classmethod
    def load(cls, path: Union[str, Path], device="cpu", extractor=None, precision: Optional[str] = None,
             self_test: bool = True) -> "Detector":
        """Load a model file, build (or check) its FeatureExtractor, and (``self_test``) prove that it answers.

        precision: run the backbones in "fp32", "bf16" or "fp16" (CUDA) regardless of the stored one.
        Raises ModelLoadError when the file is missing, corrupt or implausible (see
        :mod:`mentor3ad.model.checkpoint`), its feature identity differs from the extractor's, or the
        self-test prediction is not a finite PASS/FAIL. Order: header and metadata (no tensor data read),
        the backbones' size on the meta device, the extractor and its identity, then the tensors.
        """
        path = Path(path)
        checked = checkpoint.read_checkpoint_header(path)
        config, stored_identity = checked.config, checked.backbone_identity
        if precision is not None:
            config = config.replace(features={"precision": precision})
        # (keys added since a file was written carry their value of then: checkpoint.KEYS_ADDED)
        if extractor is None:
            from ..features.extractor import FeatureExtractor

            checkpoint.check_backbone_budget(path, config.features)
            try:
                extractor = FeatureExtractor(config.features, device)
            except Mentor3ADError as err:
                raise ModelLoadError(f"{path}: cannot build the feature extractor of this model: {err}") from None
            except Exception as err:  # noqa: BLE001 - e.g. a timm architecture its kwargs cannot build
                raise ModelLoadError(f"{path}: cannot build the feature extractor of this model: "
                                     f"{type(err).__name__}: {err}") from None
        current = json.loads(checkpoint.canonical_json(extractor.identity()))
        if checkpoint.canonical_json(current) != checkpoint.canonical_json(stored_identity):
            differences = sorted(set(_flatten(stored_identity).items()) ^ set(_flatten(current).items()))
            keys = sorted({key for key, _ in differences})
            raise ModelLoadError(
                f"{path}: the model was trained with different backbone features than this extractor provides "
                f"(differs in: {', '.join(keys) or 'identity'}); stored {stored_identity}, current {current}")
        tensors = checkpoint.read_tensors(checked)
        metadata, threshold, rgb_dim, xyz_dim = checked.metadata, checked.threshold, checked.rgb_dim, checked.xyz_dim
        heads = Mentor3ADHeads(rgb_dim, xyz_dim, config.model, seed=config.train.seed)
        try:
            heads.load_state_dict(tensors, strict=True)
        except RuntimeError as err:
            raise ModelLoadError(f"{path}: weights do not match the stored model config: {err}") from None
        info = dict(metadata.get("training_info") or {}) if isinstance(metadata.get("training_info"), dict) else {}
        if ThresholdRecord.stored(info, threshold) is None:  # a file from before the record: its legacy keys
            info["threshold"] = ThresholdRecord.legacy(info, threshold, str(metadata.get("saved_at") or "")).to_dict()
        detector = cls(config, heads, extractor, threshold=threshold, training_info=info, device=device,
                       backbone_identity=stored_identity)
        if self_test:
            try:
                detector.self_test()
            except ModelLoadError as err:
                raise ModelLoadError(f"{path}: {err}") from None
        check_plausible(path, detector, metadata.get("training_info"))
        warn_precisions(path, detector, info, checked.config.features.precision)
        return detector


def _flatten(value, prefix: str = "") -> Dict[str, str]:
    if isinstance(value, dict):
        out: Dict[str, str] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: json.dumps(value, sort_keys=True, default=checkpoint.json_default)}


__all__ = ["Detector", "warmup_scene"]
