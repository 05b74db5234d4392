"""Decision thresholds for image scores.

- :func:`calibrate_false_reject`: from held-out *normal* scores at a target false-reject rate r:
  threshold = the k-th smallest of the n scores with k = ceil((1 - r) n) (1-based), i.e. at most
  floor(r n) of the calibration parts would FAIL. With few samples (n < 1 / r) this is the maximum
  normal score. An optional relative margin is added: threshold * (1 + margin) (or + margin * |threshold|
  for negative thresholds).
- :func:`calibrate_f1`: from labelled scores, the threshold maximising F1 of "score > threshold".
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import numpy as np

from ..errors import ConfigError, InputError


def _as_scores(scores: Sequence[float], name: str = "scores") -> np.ndarray:
    array = np.asarray(scores, dtype=np.float64).reshape(-1)
    if array.size == 0:
        raise InputError(f"{name}: need at least one score to calibrate a threshold")
    if not np.all(np.isfinite(array)):
        raise InputError(f"{name}: contains NaN or infinite values")
    return array


def calibrate_false_reject(normal_scores: Sequence[float], target_false_reject_rate: float = 0.01,
                           margin: float = 0.0) -> float:
    """Threshold from normal image scores so that at most a fraction ``target_false_reject_rate`` of them
    is above it (decision: anomalous when score > threshold)."""
    scores = np.sort(_as_scores(normal_scores, "normal_scores"))
    if not 0.0 <= target_false_reject_rate < 1.0:
        raise ConfigError(f"target_false_reject_rate must be in [0, 1), got {target_false_reject_rate}")
    count = scores.size
    rank = min(count, max(1, math.ceil((1.0 - target_false_reject_rate) * count - 1e-9)))
    threshold = float(scores[rank - 1])
    if margin:
        threshold += float(margin) * abs(threshold)
    return threshold


def calibrate_f1(scores: Sequence[float], labels: Sequence[int]) -> Tuple[float, float]:
    """F1-optimal threshold from labelled scores (labels 1 = anomalous). Candidate thresholds are the
    midpoints between consecutive distinct scores (and just below the minimum). Returns (threshold, F1)."""
    values = _as_scores(scores)
    truth = np.asarray(labels).reshape(-1)
    if truth.size != values.size:
        raise InputError(f"calibrate_f1: {values.size} scores but {truth.size} labels")
    if not np.isin(truth, (0, 1)).all():
        raise InputError("calibrate_f1: labels must be 0 (good) or 1 (anomalous)")
    truth = truth.astype(bool)
    if not truth.any():
        raise InputError("calibrate_f1: needs at least one anomalous sample (label 1)")
    distinct = np.unique(values)
    candidates = np.concatenate([[distinct[0] - max(1e-12, 1e-6 * abs(distinct[0]))],
                                 (distinct[:-1] + distinct[1:]) / 2.0])
    best_threshold, best_f1 = float(candidates[0]), -1.0
    for threshold in candidates:
        predicted = values > threshold
        true_positive = np.sum(predicted & truth)
        precision_den = predicted.sum()
        f1 = 2.0 * true_positive / (precision_den + truth.sum()) if precision_den + truth.sum() else 0.0
        if f1 > best_f1:
            best_threshold, best_f1 = float(threshold), float(f1)
    return best_threshold, best_f1


def false_reject_rate(normal_scores: Sequence[float], threshold: float) -> float:
    """Fraction of normal scores above ``threshold``."""
    scores = _as_scores(normal_scores, "normal_scores")
    return float(np.mean(scores > threshold))
