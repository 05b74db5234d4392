"""Frozen feature extraction for Mentor3AD: RGB + 3D patch features on one grid.

``FeatureExtractor.extract_batch(rgbs, xyzs)`` -> list of :class:`Features` with rgb (C_rgb, R, R),
xyz (C_xyz, R, R) and valid (R, R), R = ``FeatureConfig.feature_resolution``. The two backbones come
from the registry (:mod:`mentor3ad.backbones`: ``rgb_backbone``, ``point_backbone``); preprocessing
(resize, background plane removal, largest cluster) and every op after the input upload run on the
configured device. :class:`FeatureSet` stacks the features of many samples for the heads. Stage
timings are opt-in: pass a :class:`~mentor3ad.timing.StageTimer` as ``timer``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np
import torch

from .. import backbones
from ..config import FeatureConfig, Mentor3ADConfig
from ..errors import ConfigError, InputError
from ..geometry.cluster import largest_cluster, largest_dropped_share
from ..geometry.plane import remove_plane
from ..geometry.projection import cell_fraction, maps_to_grid
from ..timing import NO_TIMER, StageTimer
from . import preprocessing

LOG = logging.getLogger(__name__)
IDENTITY_FORMAT = 2
STAGES = ("preprocess", "plane_removal", "rgb_backbone", "projection")  # + the 3D backbone's own sub-stages


@dataclass
class Features:
    """rgb (C_rgb, R, R) float32, xyz (C_xyz, R, R) float32, valid (R, R) bool (cell has valid 3D points)."""

    rgb: torch.Tensor
    xyz: torch.Tensor
    valid: torch.Tensor

    def to(self, device) -> "Features":
        return Features(self.rgb.to(device), self.xyz.to(device), self.valid.to(device))


@dataclass
class FeatureSet:
    """Stacked features of M samples: rgb (M, C_rgb, R, R), xyz (M, C_xyz, R, R), valid (M, R, R) bool."""

    rgb: torch.Tensor
    xyz: torch.Tensor
    valid: torch.Tensor

    def __post_init__(self):
        if self.rgb.dim() != 4 or self.xyz.dim() != 4 or self.valid.dim() != 3:
            raise ValueError(f"FeatureSet expects rgb/xyz (M,C,R,R) and valid (M,R,R), got {tuple(self.rgb.shape)}, "
                             f"{tuple(self.xyz.shape)}, {tuple(self.valid.shape)}")
        if not (self.rgb.shape[0] == self.xyz.shape[0] == self.valid.shape[0]):
            raise ValueError("FeatureSet: rgb, xyz and valid hold different numbers of samples")
        self.valid = self.valid.bool()

    def __len__(self) -> int:
        return int(self.rgb.shape[0])

    def subset(self, index) -> "FeatureSet":
        return FeatureSet(self.rgb[index], self.xyz[index], self.valid[index])

    def to(self, device) -> "FeatureSet":
        return FeatureSet(self.rgb.to(device), self.xyz.to(device), self.valid.to(device))


def stack_features(features: Sequence[Features]) -> FeatureSet:
    """List of :class:`Features` -> FeatureSet (on the CPU)."""
    if not features:
        raise ValueError("no features to stack (empty sample list)")
    return FeatureSet(torch.stack([f.rgb.float().cpu() for f in features]),
                      torch.stack([f.xyz.float().cpu() for f in features]),
                      torch.stack([f.valid.bool().cpu() for f in features]))


def cloud_grid(config: FeatureConfig, rgb, xyz, device) -> Tuple[torch.Tensor, torch.Tensor]:
    """One observation (checked as :meth:`FeatureExtractor.extract` checks it) -> its cloud at the point image size:
    grid (P, P, 3) metres (invalid 0), valid (P, P) bool, on ``device``."""
    return preprocessing.resize_xyz(preprocessing.upload(rgb, xyz, torch.device(device))[1], config.cloud_size)


def without_plane(config: FeatureConfig, grid: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """grid (P, P, 3) metres, valid (P, P) bool -> valid less the background plane (``plane_*`` keys)."""
    return remove_plane(grid, valid, config.plane_removal, config.plane_distance_m, config.plane_border_px,
                        config.plane_iterations, config.init_seed)


def cluster_options(config: FeatureConfig) -> Tuple[float, int, float]:
    """(cluster_eps_m, cluster_radius_px, cluster_min_fraction): the cluster filter's arguments."""
    return config.cluster_eps_m, config.cluster_radius_px, config.cluster_min_fraction


def cleaned_part(config: FeatureConfig, grid: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """grid (P, P, 3) metres, valid (P, P) bool -> the part's points: plane removed, cluster filter applied."""
    valid = without_plane(config, grid, valid)
    return largest_cluster(grid, valid, *cluster_options(config)) if config.cluster_filter else valid


def settle_auto_options(config: Mentor3ADConfig, samples: Sequence, device="cpu") -> Tuple[Mentor3ADConfig, str]:
    """A config whose backbone options leave something to training
    (``normal_map``'s ``fill_dropouts: auto``) -> decided from the training parts' cleaned clouds (``samples``: the
    parts as given); returns (the config with the decision, a log line), or (config, "") when nothing is left."""
    from ..backbones.normal_map import FILL_AUTO, decide_fill, dropout_regions

    features = config.features
    options = features.point_options
    if features.point_backbone != "normal_map" or options.get("fill_dropouts") != FILL_AUTO:
        return config, ""
    dropouts, valids = [], []  # two (S, S) bool masks per part, not its cloud
    for sample in samples:
        grid, valid = cloud_grid(features, sample.rgb, sample.xyz, device)
        valid = cleaned_part(features, grid, valid)
        dropouts.append(dropout_regions(grid, valid))
        valids.append(valid.cpu())
    fill, why = decide_fill(dropouts, valids)
    settled = config.replace(features={"point_options": {**options, "fill_dropouts": fill}})
    return settled, f"point_options.fill_dropouts auto -> {str(fill).lower()}: {why}"


class FeatureExtractor:
    """Frozen RGB + 3D backbones with preprocessing (see module doc); ``precision``: the arithmetic the
    backbones run in (``config.precision`` resolved for the device: "fp32", "bf16" or "fp16")."""

    def __init__(self, config: FeatureConfig, device: str | torch.device = "cpu"):
        self.config = config
        self.device = torch.device(device)
        self.precision = backbones.resolve_precision(config.precision, self.device)  # the arithmetic that runs
        if self.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError("features.precision 'fp16' needs a CUDA device; use 'bf16' or 'fp32' on CPU")
        rgb_weights, rgb_source = backbones.resolve_weights_of("rgb", config)
        point_weights, point_source = backbones.resolve_weights_of("points", config)
        resolved = dataclasses.replace(config, rgb_weights=rgb_weights, point_weights=point_weights,
                                       precision=self.precision)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.init_seed)
            self.rgb_model = backbones.build("rgb", resolved, self.device)
            self.point_model = backbones.build("points", resolved, self.device)
        # a "weight-free" 3D backbone may still load a network of its own (normal_map's CNN): it says which
        point_source = getattr(self.point_model, "weights_source", point_source)
        self.weights_sources = {"rgb": f"{config.rgb_backbone}: {rgb_source}",
                                "points": f"{config.point_backbone}: {point_source}"}
        LOG.info("backbone weights: %s", "; ".join(self.weights_sources.values()))
        self.rgb_dim = int(self.rgb_model.out_dim)
        self.xyz_dim = int(self.point_model.out_dim)
        self.backbone_calls = 0  # number of backbone forward batches run (tests, cache checks)

    def identity(self) -> dict:
        """JSON-able description of everything that determines the features (checked by checkpoints).

        The arithmetic ``precision`` is left out: a model trained in fp32 may run in bf16/fp16. Cache keys
        add it back (:meth:`identity_hash`), so features of different precisions are never mixed."""
        return json.loads(json.dumps({
            "format": IDENTITY_FORMAT,
            "rgb": self.rgb_model.identity(),
            "points": self.point_model.identity(),
            "rgb_dim": self.rgb_dim,
            "xyz_dim": self.xyz_dim,
            "config": self.config.common(),
        }))

    def identity_hash(self) -> str:
        """sha256 of the identity plus the resolved precision: the feature cache's key."""
        keyed = {**self.identity(), "precision": self.precision}
        return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()

    def _prepare(self, rgb, xyz, timer: StageTimer) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> image (3, S, S) in [0, 1] (S = image_size), points grid (P, P, 3) metres (invalid 0), valid (P, P)
        bool (P = point image size)."""
        cfg = self.config
        start = timer.now()
        rgb_t, xyz_t = preprocessing.upload(rgb, xyz, self.device)
        image = preprocessing.resize_rgb(rgb_t, cfg.image_size)
        grid, valid = preprocessing.resize_xyz(xyz_t, cfg.cloud_size)
        start = timer.tick("preprocess", start)
        valid = cleaned_part(cfg, grid, valid)
        timer.tick("plane_removal", start)
        return image, grid, valid

    def dropped_cluster_share(self, rgb, xyz) -> float:
        """One observation (as :meth:`extract`) -> the largest point cluster the cluster filter drops from its
        cloud, as a share of the largest cluster's points (0 when none is dropped or the filter is off)."""
        if not self.config.cluster_filter:
            return 0.0
        grid, valid = cloud_grid(self.config, rgb, xyz, self.device)
        return largest_dropped_share(grid, without_plane(self.config, grid, valid), *cluster_options(self.config))

    def _rgb_features(self, images: torch.Tensor, timer: StageTimer) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> (B, C_rgb, R, R)."""
        start = timer.now()
        maps = self.rgb_model.encode(images)
        start = timer.tick("rgb_backbone", start)
        maps = maps_to_grid(maps, self.config.feature_resolution)
        timer.tick("projection", start)
        return maps

    @torch.no_grad()
    def extract(self, rgb: np.ndarray, xyz: np.ndarray, timer: StageTimer = NO_TIMER) -> Features:
        """rgb (H, W, 3) uint8, xyz (H, W, 3) float32 metres (invalid 0/NaN) -> Features on the device.

        Inputs may be numpy arrays or torch tensors (already on the device: no host copy is made).
        """
        return self.extract_batch([rgb], [xyz], timer)[0]

    @torch.no_grad()
    def extract_batch(self, rgbs: Sequence[np.ndarray], xyzs: Sequence[np.ndarray],
                      timer: StageTimer = NO_TIMER) -> List[Features]:
        """Batched extract: one RGB forward and one 3D backbone call for the whole batch. ``timer`` gets
        the STAGES and the 3D backbone's sub-stages (point_neighbourhoods, point_descriptors)."""
        if len(rgbs) != len(xyzs) or not len(rgbs):
            raise InputError(f"need equally many rgb and xyz inputs (>= 1), got {len(rgbs)} and {len(xyzs)}")
        prepared = [self._prepare(r, x, timer) for r, x in zip(rgbs, xyzs)]
        rgb_maps = self._rgb_features(torch.stack([p[0] for p in prepared]), timer)
        self.backbone_calls += 1
        encoded = self.point_model.encode([p[1] for p in prepared], [p[2] for p in prepared],
                                          self.config.feature_resolution, timer)
        if self.config.min_cell_fraction > 0:
            size = self.config.feature_resolution
            encoded = [(xyz_map, valid & (cell_fraction(p[2], size) >= self.config.min_cell_fraction))
                       for (xyz_map, valid), p in zip(encoded, prepared)]
        return [Features(rgb=rgb_maps[i].contiguous(), xyz=xyz_map, valid=valid)
                for i, (xyz_map, valid) in enumerate(encoded)]


CHECK_DROPPED_SHARE = 0.05  # stray points: the 140 cable gland parts' largest dropped cluster is 3.7 % (median 0.03 %)


def cluster_filter_note(extractor: FeatureExtractor, samples: Sequence) -> str:
    """One log line on what the cluster filter drops from ``samples`` (:class:`~mentor3ad.types.Sample`): the
    largest dropped cluster and, from ``CHECK_DROPPED_SHARE`` of its part's largest, the advice to check it (a
    face of the part beyond a wall without points is a cluster of its own; stray points hold a few % at most)."""
    config = extractor.config
    if not config.cluster_filter or not samples:
        return ""
    share, name = max((extractor.dropped_cluster_share(s.rgb, s.xyz), s.name) for s in samples)
    kept = ("the largest cluster alone is kept" if config.cluster_min_fraction >= 1.0 else
            f"clusters of >= {config.cluster_min_fraction:.0%} of a part's largest are kept")
    line = (f"cluster filter: {kept}; the largest dropped one holds {share:.1%} of its part's largest ({name}, of "
            f"{len(samples)} parts)")
    if share >= CHECK_DROPPED_SHARE:
        line += (f"; check that part: if the dropped cluster is a face of the part (beyond a wall the sensor has no "
                 f"points on), defects there are invisible to the 3D features: set features.cluster_min_fraction "
                 f"below {share:.3f}")
    return line


__all__ = ["Features", "FeatureSet", "stack_features", "FeatureExtractor", "STAGES", "cluster_filter_note"]
