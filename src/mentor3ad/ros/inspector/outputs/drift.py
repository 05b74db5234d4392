"""Drift of the good parts in the node: are the PASS parts' scores creeping toward the threshold (new material
batch, lighting, a dirty lens) before the false rejects start?

The estimate is the dashboard's (:func:`mentor3ad.records.drift.drift_estimate`): the expected false-reject
rate of the recent good parts (a tail model fitted to the scores of the newest ``drift_window`` PASS parts of
the serving model, at the threshold in use) against the model's calibration target and the rate expected at
calibration. It needs no record: the scores come from the parts the node answers, the calibration from the
loaded model. ``/diagnostics`` says WARN, with the numbers, while the rate exceeds ``drift_factor`` times the
target (the calibration rate when the model has no target); ``drift_*`` values carry the rates as fractions.
A new model starts a new window. The estimate (some 40 ms for 200 parts) is computed on the executor thread
when the diagnostics are published, at most every ``ESTIMATE_PERIOD_S`` seconds and only after new parts.
"""
from __future__ import annotations

import collections
import math
import threading
import time
from typing import Any, Deque, Dict

from ....types import Verdict
from ...params import ParamSpec
from ..part import JudgedPart
from . import Output, register_output

ESTIMATE_PERIOD_S = 5.0


def _fraction(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else "nan"


@register_output
class Drift(Output):
    """Drift estimate of the serving model's good parts (see the module docstring)."""

    name, order = "drift", 80
    PARAMETERS = [
        ParamSpec("drift_window", 200, "Newest PASS parts whose scores estimate the good parts' expected "
                  "false-reject rate now (the dashboard's drift estimate; at least 20 needed); 0: no drift "
                  "estimate.", read_only=True, minimum=0),
        ParamSpec("drift_factor", 2.0, "/diagnostics WARN (drift) while that rate exceeds this many times the "
                  "model's calibrated false-reject target (or its rate at calibration without a target).",
                  minimum=1.0),
    ]

    def __init__(self, node: Any) -> None:
        super().__init__(node)
        self.window = int(self.param("drift_window"))
        self._lock = threading.Lock()
        self._scores: Deque[float] = collections.deque(maxlen=max(1, self.window))
        self._model_id, self._threshold = "", math.nan
        self._models: Dict[str, Any] = {}  # model id -> ModelRecord (calibration of each model loaded)
        self._new_parts = 0
        self._estimate = None
        self._estimated_at = -math.inf
        if self.window:
            node.inspector.model.on_loaded(self._loaded)

    def _loaded(self, detector: Any, path: str) -> None:
        from ....records import ModelRecord

        with self._lock:
            self._models[detector.model_id] = ModelRecord.from_detector(detector, path)

    def publish(self, part: JudgedPart) -> None:
        result = part.result
        if not self.window or result.verdict is not Verdict.PASS or not math.isfinite(result.score):
            return
        with self._lock:
            if result.model_id != self._model_id:  # another model: its scores are not comparable
                self._scores.clear()
                self._model_id, self._estimate = result.model_id, None
            self._scores.append(float(result.score))
            self._threshold = float(result.threshold)
            self._new_parts += 1

    def estimate(self):
        """The current :class:`~mentor3ad.records.drift.DriftEstimate` (None before the first PASS part),
        recomputed when parts arrived and ``ESTIMATE_PERIOD_S`` passed since the last one."""
        from ....records.drift import drift_estimate

        now = time.monotonic()
        with self._lock:
            due = self._new_parts and (self._estimate is None or now - self._estimated_at >= ESTIMATE_PERIOD_S)
            if not due:
                return self._estimate
            scores, model_id, threshold = list(self._scores), self._model_id, self._threshold
            model, self._new_parts = self._models.get(model_id), 0
        estimate = drift_estimate(model_id, scores, threshold, model, float(self.param("drift_factor")))
        with self._lock:
            if model_id == self._model_id:
                self._estimate, self._estimated_at = estimate, now
        return estimate

    def diagnostics(self):
        if not self.window:
            return None
        estimate = self.estimate()
        if estimate is None:
            return "OK", "", {"drift_status": "unknown", "drift_good_parts": 0}
        values: Dict[str, str] = {
            "drift_status": estimate.status, "drift_good_parts": str(estimate.n_good),
            "drift_expected_frr": _fraction(estimate.expected_now), "drift_expected_frr_low": _fraction(estimate.low),
            "drift_expected_frr_high": _fraction(estimate.high),
            "drift_frr_at_calibration": _fraction(estimate.expected_at_calibration),
            "drift_target_frr": _fraction(estimate.target), "drift_factor": f"{estimate.factor:g}",
        }
        if estimate.status == "warn":
            return "WARN", estimate.message, values
        return "OK", estimate.message, values


__all__ = ["Drift", "ESTIMATE_PERIOD_S"]
