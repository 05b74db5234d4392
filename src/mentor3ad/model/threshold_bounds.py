"""The thresholds a model can plausibly use, from its own calibration scores.

A threshold far above every good part's score passes every defect while the line looks on (a model file
whose threshold is 1e6, ``ros2 param set /inspector threshold 1e300``): it is bounded by the good parts'
image scores stored in the model's :class:`~mentor3ad.model.threshold.ThresholdRecord`
(``calibration_scores``, n of them). The plausible range is (0, high]:

* high = 1.5 x (1 + margin, at most 1) x max(the largest calibration score, exp(m + k s sqrt(1 + 1/n))):
  the log-normal tail model of the good scores (m, s: mean and sd of their logs,
  :func:`~mentor3ad.model.calibration.tail_model`) at a false-reject rate of 1e-6
  (k = max(4.75, the t quantile the calibration used: t_{1 - r, n - 1} with r the record's target rate,
  at least 0.001)). Every threshold the ``tail`` or ``quantile`` rule sets lies inside; with fewer than
  3 scores: high = 3 x the largest score.
* low: any threshold above 0. A low threshold cannot let a defect pass: it FAILs good parts, and each FAIL
  says score and threshold (0 and below are refused: every part would FAIL). Forcing FAIL verdicts on
  purpose (commissioning a reject line, tests) stays possible with a tiny override.

Without calibration scores (a record rebuilt from a file written before records, or a threshold set by
hand) there is nothing to bound by: :func:`plausible_range` is None. Decisions: such a model file loads with
a warning, and the inspector refuses a threshold override for it (re-calibrate the model with ``mentor3ad
calibrate`` to get a record with scores).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
from scipy import stats

from .calibration import MIN_TAIL_SCORES, tail_model

HIGH_MARGIN = 1.5
TINY_RATE = 1e-6
MIN_TARGET = 1e-3
SMALL_SAMPLE_FACTOR = 3.0


def plausible_range(record) -> Optional[Tuple[float, float]]:
    """(0, high) of the module docstring for a ThresholdRecord (low exclusive); None when it has no
    calibration scores."""
    scores = np.asarray([s for s in getattr(record, "calibration_scores", ()) or () if math.isfinite(s) and s > 0],
                        dtype=np.float64)
    if scores.size == 0:
        return None
    largest = float(scores.max())
    if scores.size < MIN_TAIL_SCORES:
        return 0.0, SMALL_SAMPLE_FACTOR * largest
    mean, scale = tail_model(scores)
    target = getattr(record, "target_false_reject_rate", None) or 0.01
    count = scores.size
    k = max(float(stats.norm.isf(TINY_RATE)), float(stats.t.ppf(1.0 - max(float(target), MIN_TARGET), count - 1)))
    bound = math.exp(min(700.0, mean + k * scale * math.sqrt(1.0 + 1.0 / count)))
    margin = min(max(float(getattr(record, "margin", 0.0) or 0.0), 0.0), 1.0)
    return 0.0, HIGH_MARGIN * (1.0 + margin) * max(largest, bound)


def threshold_problem(value: float, record, what: str = "threshold") -> Optional[str]:
    """Why ``value`` is no plausible threshold for the model whose record is ``record`` (None when it is, or
    when the record has no scores to tell)."""
    bounds = plausible_range(record)
    if bounds is None:
        return None
    low, high = bounds
    if low < value <= high:
        return None
    if value <= low:
        return f"{what} {value:.6g} is not above 0: every part would FAIL (image scores are >= 0)"
    scores = record.calibration_scores
    return (f"{what} {value:.6g} is above the plausible range (0, {high:.4g}] of this model (from its "
            f"{len(scores)} good calibration scores, {min(scores):.4g}-{max(scores):.4g}): every defect scoring "
            f"below it would PASS")


def describe_range(record) -> str:
    """'(0, high]' or 'none (no calibration scores)' for logs and diagnostics."""
    bounds = plausible_range(record)
    return "none (no calibration scores)" if bounds is None else f"(0, {bounds[1]:.4g}]"


__all__ = ["plausible_range", "threshold_problem", "describe_range", "HIGH_MARGIN"]
