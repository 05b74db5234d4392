"""PatchCore / BTF memory-bank detectors on the features Mentor3AD uses: a same-features peer yardstick.

Mentor3AD's heads are compared with a training-free peer that sees EXACTLY the same inputs: the
detector's own :class:`~mentor3ad.features.extractor.FeatureSet` (cached features of its
FeatureExtractor), the same post-processing and the same verdict and threshold rules. Differences in
the ablation table are then the heads', not the backbones'.

* Memory bank (PatchCore, Roth et al. 2022): every training patch of the R x R grid, a (P, C) matrix,
  reduced by greedy k-center selection (:func:`kcenter_greedy`) to ``coreset_ratio`` (default 10 %) of
  its rows. As in PatchCore / anomalib / BTF the selection runs on a sparse random projection
  (Johnson-Lindenstrauss dimension for eps = 0.9, :func:`sparse_random_projection`); the bank keeps the
  full features.
* Patch score: L2 distance of each test patch to its nearest bank patch (:func:`nearest_neighbours`,
  chunked so that at most ``max_elements`` distances exist at a time) -> (M, R, R) maps.
* Maps -> answers as the detector does: PatchCore is a :class:`~mentor3ad.model.scoring.FeatureScorer`
  (the detector's scoring protocol: the same post-processing with the model's ``image_size`` and
  ``smoothing_sigma``, :func:`~mentor3ad.model.scoring.judge` for the verdicts: image score = max of the
  map, ERROR for non-finite maps).
* Threshold: the detector's false-reject rule on the held-out good parts, written with its record
  (:func:`mentor3ad.model.threshold.from_good_scores`, ``threshold_record``).

Modalities (``MODALITIES``): ``rgb`` (RGB backbone features), ``xyz`` (3D backbone features) and
``rgb+xyz``, BTF's combination (Horwitz & Hoshen 2023, eliahuhorwitz/3D-ADS ``RGBFPFHFeatures``): the
RGB and 3D patch features concatenated per cell, unnormalised, into ONE bank, and every cell of the grid
scored (``cells="all"``; background cells included, their 3D features are 0 there as BTF's FPFH are).
``cells="valid"`` banks the cells with object points only and maps 0 elsewhere (what the heads see).
Two things BTF does are left out on purpose: its 3 x 3 average pooling of the feature maps (the
features would no longer be the detector's) and its re-weighted image score (the verdict's score is the
map's maximum, as for every detector here); the latter is available as :meth:`PatchCore.reweighted_scores`.
"""
from __future__ import annotations

import hashlib
import logging
import math
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..config import CalibrationConfig, Mentor3ADConfig
from ..errors import ConfigError, InputError
from ..features.extractor import FeatureSet
from ..model.memory_bank import (MAX_DISTANCE_ELEMENTS, jl_dimension, kcenter_greedy,
                                 nearest_neighbours, sparse_random_projection)
from ..model.scoring import FeatureScorer, PostProcessing
from ..model.threshold import ThresholdSource, from_good_scores
from ..types import InspectionResult

LOG = logging.getLogger(__name__)
MODALITIES = ("rgb", "xyz", "rgb+xyz")
CELLS = ("all", "valid")
DEFAULT_CORESET_RATIO = 0.1
REWEIGHT_NEIGHBOURS = 3  # BTF's n_reweight


def patches_of(features: FeatureSet, modality: str) -> torch.Tensor:
    """The patch grid of one modality: (M, C, R, R) (``rgb+xyz``: channels concatenated, RGB first)."""
    if modality == "rgb":
        return features.rgb.float()
    if modality == "xyz":
        return features.xyz.float()
    if modality == "rgb+xyz":
        return torch.cat([features.rgb.float(), features.xyz.float()], dim=1)
    raise ConfigError(f"PatchCore modality must be one of {MODALITIES}, got {modality!r}")


def _rows(grid: torch.Tensor) -> torch.Tensor:
    """(M, C, R, R) -> (M * R * R, C), rows in sample-major, row-major cell order."""
    return grid.permute(0, 2, 3, 1).reshape(-1, grid.shape[1])


class PatchCore(FeatureScorer):
    """A PatchCore memory bank on one modality of Mentor3AD's features (module docstring).

    modality: ``rgb`` | ``xyz`` | ``rgb+xyz`` (BTF); coreset_ratio: share of the training patches kept
    (1.0: all); cells: ``all`` (BTF) | ``valid``; image_size, smoothing_sigma: the detector's
    post-processing; calibration: the detector's threshold rule; seed: projection and start of the
    coreset; extractor: the detector's FeatureExtractor (for :meth:`score_samples` / ``predict_samples``).
    After :meth:`fit`: ``bank`` (N, C), ``threshold`` and ``threshold_record``, ``timings`` (seconds,
    patch counts)."""

    def __init__(self, modality: str = "rgb+xyz", coreset_ratio: float = DEFAULT_CORESET_RATIO, cells: str = "all",
                 image_size: int = 224, smoothing_sigma: float = 4.0, calibration: Optional[CalibrationConfig] = None,
                 seed: int = 0, device="cpu", max_elements: int = MAX_DISTANCE_ELEMENTS, extractor=None):
        if modality not in MODALITIES:
            raise ConfigError(f"PatchCore modality must be one of {MODALITIES}, got {modality!r}")
        if cells not in CELLS:
            raise ConfigError(f"PatchCore cells must be one of {CELLS}, got {cells!r}")
        if not 0.0 < float(coreset_ratio) <= 1.0:
            raise ConfigError(f"the coreset ratio must be in (0, 1], got {coreset_ratio}")
        self.modality, self.coreset_ratio, self.cells = modality, float(coreset_ratio), cells
        self.image_size, self.smoothing_sigma = int(image_size), float(smoothing_sigma)
        self.calibration = calibration or CalibrationConfig()
        self.seed, self.device, self.max_elements = int(seed), torch.device(device), int(max_elements)
        self.extractor = extractor
        self.bank: Optional[torch.Tensor] = None
        self.timings: Dict[str, float] = {}
        self._id: Optional[Tuple[float, str]] = None

    @property
    def post(self) -> PostProcessing:
        return PostProcessing(self.image_size, self.smoothing_sigma)

    @classmethod
    def for_detector(cls, config: Mentor3ADConfig, modality: str, **options) -> "PatchCore":
        """A PatchCore with a Mentor3AD config's post-processing, threshold rule and seed (``extractor=``: the
        detector's, to score samples)."""
        defaults = dict(image_size=config.features.image_size, smoothing_sigma=config.model.smoothing_sigma,
                        calibration=config.calibration, seed=config.train.seed)
        return cls(modality, **{**defaults, **options})

    # ------------------------------------------------------------------ fitting
    def fit(self, train: FeatureSet, validation: Optional[FeatureSet] = None,
            val_sizes: Optional[Sequence[Tuple[int, int]]] = None) -> "PatchCore":
        """Build the bank from good training features and calibrate the threshold on ``validation`` (good
        parts, scored at their input sizes ``val_sizes``, default image_size); without validation on the
        training scores (optimistic: bank patches are at distance 0)."""
        if len(train) == 0:
            raise InputError("PatchCore needs at least one training sample")
        started = time.perf_counter()
        rows = _rows(patches_of(train, self.modality)).to(self.device)
        if self.cells == "valid":
            rows = rows[train.valid.reshape(-1).to(self.device)]
        if rows.shape[0] == 0:
            raise InputError("PatchCore: the training samples have no valid cell")
        keep = max(1, int(self.coreset_ratio * rows.shape[0]))
        self.bank = rows[kcenter_greedy(rows, keep, self.seed).to(self.device)].contiguous()
        self.timings = {"train_patches": int(rows.shape[0]), "bank_patches": int(self.bank.shape[0]),
                        "coreset_s": round(time.perf_counter() - started, 4)}
        self._id = None
        if validation is not None and len(validation):
            scores, source = self.image_scores(validation, val_sizes), ThresholdSource("validation", len(validation))
        else:
            LOG.warning("PatchCore %s: no held-out good parts, calibrating on the training scores (optimistic)",
                        self.modality)
            scores, source = self.image_scores(train), ThresholdSource("train", len(train))
        self.set_threshold(from_good_scores(scores, self.calibration, [source], set_by="patchcore"))
        return self

    # ------------------------------------------------------------------ scoring
    def _check_fitted(self) -> torch.Tensor:
        if self.bank is None:
            raise InputError("PatchCore is not fitted; call fit(train_features) first")
        return self.bank

    def _distances(self, features: FeatureSet) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (queries (M * R * R, C), distance (M, R * R), bank index (M, R * R))."""
        bank = self._check_fitted()
        grid = patches_of(features, self.modality)
        if grid.shape[1] != bank.shape[1]:
            raise InputError(f"PatchCore {self.modality}: features have {grid.shape[1]} channels, the bank "
                             f"{bank.shape[1]}")
        queries = _rows(grid).to(self.device)
        distance, index = nearest_neighbours(queries, bank, self.max_elements)
        count = len(features)
        return queries, distance.reshape(count, -1), index.reshape(count, -1)

    @torch.no_grad()
    def patch_maps(self, features: FeatureSet) -> torch.Tensor:
        """Nearest-neighbour distance per cell: (M, R, R) float32 (0 at invalid cells for cells="valid")."""
        _, distance, _ = self._distances(features)
        if self.cells == "valid":
            distance = torch.where(features.valid.reshape(len(features), -1).to(distance.device), distance,
                                   torch.zeros_like(distance))
        side = int(features.valid.shape[-1])
        return distance.reshape(len(features), side, side).cpu()

    def grid_maps(self, features: FeatureSet) -> torch.Tensor:
        """The scoring protocol's grid maps: :meth:`patch_maps`."""
        return self.patch_maps(features)

    def anomaly_maps(self, features: FeatureSet, sizes: Optional[Sequence[Tuple[int, int]]] = None) -> List[np.ndarray]:
        """(H, W) float32 anomaly maps at the input sizes ``sizes`` (default image_size), post-processed as
        the detector's (:class:`~mentor3ad.model.scoring.PostProcessing`)."""
        return self.score_features(features, sizes).maps

    @torch.no_grad()
    def reweighted_scores(self, features: FeatureSet) -> List[float]:
        """BTF's / PatchCore's re-weighted image score per sample (not used for verdicts): s* = the largest
        patch distance, m* its nearest bank patch, d_k the distances of the test patch to m*'s k-1 = 2
        next bank neighbours; score = (1 - exp(s*/sqrt(C)) / sum_k exp(d_k/sqrt(C))) s*."""
        bank = self._check_fitted()
        queries, distance, index = self._distances(features)
        if self.cells == "valid":
            distance = torch.where(features.valid.reshape(len(features), -1).to(distance.device), distance,
                                   torch.full_like(distance, -1.0))
        temperature = math.sqrt(bank.shape[1])
        cells = distance.shape[1]
        scores = []
        for sample in range(len(features)):
            cell = int(torch.argmax(distance[sample]))
            worst, test_patch = distance[sample, cell], queries[sample * cells + cell]
            to_star = torch.linalg.vector_norm(bank - bank[index[sample, cell]], dim=1)
            neighbours = torch.topk(to_star, min(REWEIGHT_NEIGHBOURS, bank.shape[0]), largest=False).indices[1:]
            if neighbours.numel() == 0:
                scores.append(float(worst))
                continue
            spread = torch.linalg.vector_norm(test_patch[None] - bank[neighbours], dim=1)
            weight = 1.0 - torch.exp(worst / temperature) / torch.exp(spread / temperature).sum()
            scores.append(float(weight * worst))
        return scores

    # ------------------------------------------------------------------ answers
    @property
    def model_id(self) -> str:
        """``patchcore-`` + 12 hex digits of the bank, the options and the threshold."""
        if self._id is None or self._id[0] != self.threshold:
            digest = hashlib.sha256(self._check_fitted().cpu().numpy().tobytes())
            digest.update(repr((self.modality, self.coreset_ratio, self.cells, self.image_size, self.smoothing_sigma,
                                self.seed, self.threshold)).encode())
            self._id = (self.threshold, f"patchcore-{digest.hexdigest()[:12]}")
        return self._id[1]

    @property
    def identity(self) -> Dict[str, Any]:
        record = self.threshold_record
        return {"model_id": self.model_id, "method": "patchcore", "modality": self.modality,
                "coreset_ratio": self.coreset_ratio, "cells": self.cells, "seed": self.seed,
                "threshold": self.threshold, "threshold_record": record.to_dict() if record else None,
                **self.timings}

    def predict_features(self, features: FeatureSet, sizes: Optional[Sequence[Tuple[int, int]]] = None,
                         xyzs: Optional[Sequence[np.ndarray]] = None,
                         threshold: Optional[float] = None) -> List[InspectionResult]:
        """Answers from features (:meth:`FeatureScorer.predict_features`), timed in ``timings["predict_s"]``."""
        started = time.perf_counter()
        results = super().predict_features(features, sizes, xyzs, threshold)
        self.timings["predict_s"] = round(time.perf_counter() - started, 4)
        return results


__all__ = ["PatchCore", "MODALITIES", "CELLS", "DEFAULT_CORESET_RATIO", "jl_dimension",
           "sparse_random_projection", "kcenter_greedy", "nearest_neighbours", "patches_of"]
