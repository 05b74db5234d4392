"""A memory of good RGB patches beside the heads, kept or not per cell at calibration (issue 23).

The heads score a grid cell only where it has 3D points and judge each modality by reconstructing it from
the other; appearance defects without geometry (paint, a stain), or where the cloud has no point, are what
they see least, and what a nearest-neighbour bank of good RGB patches sees best (README, "A memory of good
RGB patches"). The bank:

* rows: ``BANK_PATCHES`` of the training parts' raw RGB backbone features, every cell of the grid, chosen by
  greedy k-center selection (:func:`~mentor3ad.model.memory_bank.kcenter_greedy`) among at most
  ``MAX_CANDIDATES`` seeded random rows;
* map: each cell's L2 distance to its nearest row (B, R, R), post-processed like the heads' map
  (:class:`~mentor3ad.model.scoring.PostProcessing`) relative to its own level (its ``LEVEL_PERCENTILE``-th
  percentile, capped at the held-out good parts' largest level, ``level_cap``);
* fused map = heads' map / s_heads + bank map / s_bank, s = the median image score of the held-out good parts
  under each alone (``scales``): both terms in units of a good part's score.

:func:`choose_rgb_bank` (``calibration.rgb_bank``): ``auto`` keeps the bank when the default threshold of the
fused score lets clearly fewer of the held-out good parts' pseudo-defects PASS than the heads' alone (a sign
test on the same pseudo-defects: :func:`mentor3ad.model.escape.clearly_fewer_escapes`); ``always`` /
``never`` force it (not on / off: YAML reads those as booleans). A model with a bank stores its size as
``model.rgb_bank_patches`` and its rows, scales and cap among the heads' tensors (``rgb_bank.*``).
"""
from __future__ import annotations

import logging
import math
import time
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from .memory_bank import kcenter_greedy, nearest_neighbours
from .scoring import PostProcessing, ScoredParts, score_feature_set

LOG = logging.getLogger(__name__)
BANK_PATCHES = 6000  # rows kept: ~ 2 % of the cells of 100 cable glands, 10 % of the demo's 20 parts
MAX_CANDIDATES = 100_000  # rows the coreset is chosen from (seeded random subset beyond that): bounds its time
LEVEL_PERCENTILE = 90.0  # the bank map's own level (every cell is scored: over the whole map)


class RgbBank(nn.Module):
    """Rows (N, C) of good RGB patch features, ``scales`` (s_heads, s_bank), the bank map's ``level_cap`` (1,)."""

    def __init__(self, patches: int, channels: int):
        super().__init__()
        self.register_buffer("patches", torch.zeros(int(patches), int(channels)))
        self.register_buffer("scales", torch.ones(2))
        self.register_buffer("level_cap", torch.zeros(1))

    def problem(self) -> Optional[str]:
        """Why these tensors are no calibrated bank (None when they are one): rows not finite, scales not finite
        and > 0 (a negative one would lower the score of an anomaly), a cap not finite and >= 0."""
        if not bool(torch.isfinite(self.patches).all()):
            return "its rows are not all finite"
        if not (bool(torch.isfinite(self.scales).all()) and bool((self.scales > 0).all())):
            return f"its scales {[float(v) for v in self.scales]} are not finite numbers > 0"
        cap = float(self.level_cap[0])
        if not (math.isfinite(cap) and cap >= 0):
            return f"its level cap {cap} is not a finite number >= 0"
        return None

    @torch.no_grad()
    def grid_maps(self, features) -> torch.Tensor:
        """FeatureSet (B samples, rgb (B, C, R, R)) -> nearest-row L2 distances (B, R, R) float32."""
        rgb = features.rgb.to(self.patches.device).float()
        count, channels, rows, cols = rgb.shape
        if channels != self.patches.shape[1]:
            raise InputError(f"the RGB bank holds {self.patches.shape[1]}-channel patches, the features have {channels}")
        queries = rgb.permute(0, 2, 3, 1).reshape(-1, channels)
        distance, _ = nearest_neighbours(queries, self.patches)
        return distance.reshape(count, rows, cols)

    def post(self, config) -> PostProcessing:
        """The bank map's post-processing: the heads' resize and smoothing, relative to its own capped level."""
        return PostProcessing(int(config.features.image_size), float(config.model.smoothing_sigma), LEVEL_PERCENTILE,
                              float(self.level_cap[0]))

    def fuse(self, heads: ScoredParts, bank: ScoredParts) -> ScoredParts:
        """heads' maps / s_heads + bank maps / s_bank (levels and clouds: the heads')."""
        s_heads, s_bank = (float(v) for v in self.scales)
        maps = [(h / np.float32(s_heads) + b / np.float32(s_bank)).astype(np.float32)
                for h, b in zip(heads.maps, bank.maps)]
        return ScoredParts(maps, list(heads.xyzs), list(heads.levels))


def build_rgb_bank(train, patches: int = BANK_PATCHES, seed: int = 0, candidates: int = MAX_CANDIDATES,
                   precision: str = "fp32") -> RgbBank:
    """An :class:`RgbBank` of ``patches`` rows chosen from every cell of the training FeatureSet ``train``
    (``precision`` of the selection's distances: :func:`~mentor3ad.model.memory_bank.kcenter_greedy`)."""
    rgb = train.rgb.float()
    rows = rgb.permute(0, 2, 3, 1).reshape(-1, rgb.shape[1])
    if rows.shape[0] > candidates:
        pick = torch.randperm(rows.shape[0], generator=torch.Generator().manual_seed(seed))[:candidates]
        rows = rows[pick.sort().values]
    chosen = rows[kcenter_greedy(rows, min(int(patches), int(rows.shape[0])), seed, precision=precision)]
    bank = RgbBank(chosen.shape[0], chosen.shape[1])
    bank.patches.copy_(chosen)
    return bank


def _median_score(scores: Sequence[float]) -> float:
    score = float(np.median(scores))
    return score if math.isfinite(score) and score > 0 else 1.0


def calibrate_bank(bank: RgbBank, config, heads_scores: Sequence[float], features, sizes) -> None:
    """Set the bank's level cap and both scales from the held-out good parts: ``heads_scores`` (their scores
    under the image score the heads keep) and their FeatureSet ``features`` at input ``sizes``."""
    bank.level_cap.fill_(math.inf)
    scored = score_feature_set(bank.grid_maps, features, sizes, bank.post(config), 8)
    bank.level_cap.fill_(max(scored.levels) if scored.levels else 0.0)  # their largest: their scores stay as scored
    bank.scales.copy_(torch.tensor([_median_score(heads_scores), _median_score(scored.image_scores)]))


def attach(detector, bank: Optional[RgbBank]) -> None:
    """Give the detector's heads this bank (None: none) and record its size in ``model.rgb_bank_patches``."""
    heads = detector.heads
    heads.rgb_bank = None if bank is None else bank.to(heads.rgb_mean.device)
    size = 0 if bank is None else int(bank.patches.shape[0])
    detector.config = detector.config.replace(model={"rgb_bank_patches": size})
    heads.config = detector.config.model
    detector._model_id = None


def choose_rgb_bank(detector, train, validation, val_sizes: Sequence, val_samples, heads_scores: List[float],
                    log: Callable[[str], None] = LOG.info, cache_dir=None, heads_defect_scores: Optional[dict] = None
                    ) -> Optional[Tuple[List[float], Optional[dict], Optional[float]]]:
    """Keep an RGB bank or not (``calibration.rgb_bank``; module docstring). train / validation: FeatureSets of
    the training views and the held-out good parts (at ``val_sizes``), val_samples their Samples;
    heads_scores: the held-out parts' scores under the image score already chosen; cache_dir: the
    pseudo-defects' feature cache; heads_defect_scores: their scores by kind under that image score when the
    image score's choice already scored them (else they are scored here). Returns None when the model stays without a bank, else (the held-out
    parts' fused scores, their pseudo-defects' fused scores by kind or None, the seconds that scoring took)."""
    from . import escape
    from .calibration import calibrate_by_config

    config = detector.config
    calibration = config.calibration
    attach(detector, None)
    mode = calibration.rgb_bank
    if mode == "never":
        return None
    if validation is None or not len(validation) or calibration.cv_folds:
        log("RGB bank: none (calibration.rgb_bank needs held-out good parts and no cross-validated scores)")
        return None
    compare = mode == "auto"
    if compare and not (val_samples and calibration.pseudo_defects_per_kind > 0):
        log("RGB bank: none (calibration.rgb_bank auto compares on pseudo-defects of held-out good parts; there are none)")
        return None
    started = time.perf_counter()
    bank = build_rgb_bank(train, seed=config.train.seed, precision=detector.heads.precision)  # bf16 where fast
    calibrate_bank(bank, config, heads_scores, validation, val_sizes)
    log(f"RGB bank: {bank.patches.shape[0]} rows from {len(train)} training views in {time.perf_counter() - started:.1f} s; "
        f"scales: heads {float(bank.scales[0]):.4g}, bank {float(bank.scales[1]):.4g}; level cap {float(bank.level_cap[0]):.4g}")
    if not compare:
        attach(detector, bank)
        return detector.score_features(validation, val_sizes, batch_size=8).image_scores, None, None
    started = time.perf_counter()
    per_kind, seed = calibration.pseudo_defects_per_kind, config.train.seed
    try:
        if heads_defect_scores is None:  # the image score's choice did not score them (not "auto")
            defects, alone = escape.score_pseudo_defect_parts(detector, val_samples, per_kind, seed, cache_dir=cache_dir)
            heads_defect_scores = escape.by_kind(defects, alone.image_scores) if defects else {}
        attach(detector, bank)
        defects, fused = escape.score_pseudo_defect_parts(detector, val_samples, per_kind, seed, cache_dir=cache_dir)
    except InputError as err:  # as the image score's choice: calibration stands without the bank
        attach(detector, None)
        log(f"RGB bank: none (a pseudo-defect could not be scored: {err})")
        return None
    if not defects:
        attach(detector, None)
        log("RGB bank: none (no calibration part is large enough above its background to carry a pseudo-defect)")
        return None
    fused_good = detector.score_features(validation, val_sizes, batch_size=8).image_scores
    seconds = time.perf_counter() - started
    fused_defect_scores = escape.by_kind(defects, fused.image_scores)
    compared = {}
    for name, good, bad in (("heads", heads_scores, heads_defect_scores), ("heads+bank", fused_good, fused_defect_scores)):
        threshold = calibrate_by_config(list(good), calibration)
        compared[name] = {"threshold": float(threshold), "pseudo_defect_escape_rate": escape.escape_rate(bad, threshold)}
    test = escape.clearly_fewer_escapes(heads_defect_scores, compared["heads"]["threshold"], fused_defect_scores,
                                        compared["heads+bank"]["threshold"])
    keep = test["clearly"]
    detector.training_info["rgb_bank"] = {"chosen": bool(keep), "candidates": compared, "n": len(defects),
                                          "paired_test": test}
    log("RGB bank: " + "; ".join(f"{name}: threshold {c['threshold']:.4g}, {c['pseudo_defect_escape_rate']:.0%} of "
                                 f"{len(defects)} pseudo-defects pass" for name, c in compared.items())
        + f"; heads+bank vs heads: {escape.describe_choice(test)}"
        + f" -> {'kept: fused with the heads map' if keep else 'none: the heads alone'}")
    if not keep:
        attach(detector, None)
        return None
    return fused_good, fused_defect_scores, seconds


__all__ = ["RgbBank", "BANK_PATCHES", "MAX_CANDIDATES", "LEVEL_PERCENTILE", "build_rgb_bank", "calibrate_bank",
           "attach", "choose_rgb_bank"]
