"""Drift of the good parts' scores: the expected false-reject rate of recent good parts against the rate at
calibration, one estimate for the dashboard (and the inspector's diagnostic, which shares it).

The estimate is :func:`mentor3ad.model.calibration.false_reject_estimate` (the calibration rule's tail
model: log-normal fit, bootstrap interval) on the recent good parts' scores at the threshold in use.
Recent good parts are PASS parts not confirmed defective plus FAIL parts an operator confirmed good
(:meth:`~mentor3ad.records.reader.RecordReader.good_scores`); unconfirmed FAIL parts are left out, so
the estimate is a lower bound when false rejects are not confirmed. Status ``warn`` when it exceeds
``factor`` times the calibration target (or, without a target, the rate expected at calibration);
``unknown`` with fewer than ``min_parts`` good parts or no calibration information.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Sequence

from ..model.calibration import false_reject_estimate
from .models import ModelRecord

DRIFT_FACTOR = 2.0
MIN_GOOD_PARTS = 20
RECENT_GOOD_PARTS = 200
RESAMPLES = 300


@dataclass
class DriftEstimate:
    """Rates are fractions (0.01 = 1 %), NaN when unknown. low / high: 5-95 % bootstrap interval of
    expected_now; reference: what expected_now is compared with (the target, else the rate at calibration)."""

    model_id: str
    status: str
    message: str
    n_good: int
    threshold: float
    expected_now: float = math.nan
    low: float = math.nan
    high: float = math.nan
    empirical_now: float = math.nan
    expected_at_calibration: float = math.nan
    target: float = math.nan
    reference: float = math.nan
    factor: float = DRIFT_FACTOR

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _percent(rate: float) -> str:
    if not math.isfinite(rate):
        return "n/a"
    return "< 0.01 %" if 0 < 100 * rate < 0.01 else f"{100 * rate:.3g} %"


def drift_estimate(model_id: str, good_scores: Sequence[float], threshold: float, model: Optional[ModelRecord],
                   factor: float = DRIFT_FACTOR, min_parts: int = MIN_GOOD_PARTS) -> DriftEstimate:
    """The drift estimate of one model from its recent good parts' scores at ``threshold``."""
    scores = [float(s) for s in good_scores if math.isfinite(float(s))]
    estimate = DriftEstimate(model_id, "unknown", "", len(scores), float(threshold), factor=factor)
    if model is not None:
        estimate.target = model.target_false_reject_rate
        estimate.expected_at_calibration = model.expected_false_reject_rate
        if model.calibration_scores and (not math.isfinite(estimate.expected_at_calibration)
                                         or not math.isclose(threshold, model.threshold, rel_tol=1e-9)):
            estimate.expected_at_calibration = false_reject_estimate(model.calibration_scores, threshold,
                                                                     RESAMPLES)["expected"]
    estimate.reference = estimate.target if math.isfinite(estimate.target) else estimate.expected_at_calibration
    if not math.isfinite(threshold):
        estimate.message = "no threshold known for this model"
        return estimate
    if len(scores) < min_parts:
        estimate.message = f"{len(scores)} recent good parts; at least {min_parts} are needed for an estimate"
        return estimate
    now = false_reject_estimate(scores, threshold, RESAMPLES)
    estimate.expected_now, estimate.low, estimate.high = now["expected"], now["low"], now["high"]
    estimate.empirical_now = now["empirical"]
    summary = (f"expected false-reject rate {_percent(estimate.expected_now)} (5-95 %: {_percent(estimate.low)} - "
               f"{_percent(estimate.high)}) from {len(scores)} recent good parts; at calibration "
               f"{_percent(estimate.expected_at_calibration)}, target {_percent(estimate.target)}")
    if not math.isfinite(estimate.reference) or estimate.reference <= 0:
        estimate.message = summary + "; no calibration information to compare with (register the model: " \
                                     "mentor3ad record add-model)"
        return estimate
    if estimate.expected_now > factor * estimate.reference:
        estimate.status = "warn"
        estimate.message = f"{summary}: more than {factor:g}x the {'target' if math.isfinite(estimate.target) else 'calibration rate'}"
    else:
        estimate.status = "ok"
        estimate.message = summary
    return estimate


__all__ = ["DriftEstimate", "drift_estimate", "DRIFT_FACTOR", "MIN_GOOD_PARTS", "RECENT_GOOD_PARTS"]
