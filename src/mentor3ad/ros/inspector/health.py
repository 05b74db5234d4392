"""The inspector's health: answer counters, latency percentiles, input rate, and the ``/diagnostics`` status.

:class:`Health` counts every answer (:meth:`Health.answered`, any thread) and every received set
(:meth:`Health.received`);
:meth:`Health.status`, published on ``/diagnostics`` by :meth:`Health.start`, reads the other parts of the inspector (model slot,
intake, worker, enable switch) to say OK / WARN / ERROR with one message and key/value strings; each output
may add its own level, message and values (:meth:`Output.diagnostics <.outputs.Output.diagnostics>`, e.g.
the record's counters, the drift estimate), and so do the intake's input losses (WARN, ERROR above
``loss_error_rate``) and the inputs unlike the model's training data (:mod:`mentor3ad.model.input_profile`):
the worst level wins. A lifecycle node that was cleaned up says WARN "unconfigured" (a deliberate state).
"""
from __future__ import annotations

import collections
import math
import threading
import time
from typing import Any, Deque, Dict, Optional

import numpy as np

from ...types import InspectionResult, Verdict

COUNTERS = ("received", "processed", "passed", "failed", "errored", "skipped", "dropped_stale")
_VERDICT_COUNTER = {Verdict.PASS: "passed", Verdict.FAIL: "failed", Verdict.ERROR: "errored",
                    Verdict.SKIPPED: "skipped"}


class Health:
    """Counters and the diagnostics status of one inspector (``inspector``: its :class:`Inspector`)."""

    def __init__(self, inspector: Any) -> None:
        self.inspector = inspector
        self._counts: collections.Counter = collections.Counter()
        self._lock = threading.Lock()
        self._latencies_ms: Deque[float] = collections.deque(maxlen=200)
        self._arrivals: Deque[float] = collections.deque(maxlen=200)

    def received(self, arrival: Optional[float] = None) -> None:
        """A part arrived: a complete set at ``arrival`` (time.monotonic(), counted in the input rate) or a
        lone image (None)."""
        with self._lock:
            self._counts["received"] += 1
            if arrival is not None:
                self._arrivals.append(arrival)

    def answered(self, result: InspectionResult) -> None:
        """A part got ``result`` (with its latency_ms)."""
        with self._lock:
            self._counts[_VERDICT_COUNTER[result.verdict]] += 1
            if result.verdict.is_decision:
                self._counts["processed"] += 1
                self._latencies_ms.append(result.latency_ms)

    def counts(self) -> Dict[str, int]:
        """The COUNTERS (dropped_stale from the worker)."""
        with self._lock:
            counts = {key: self._counts[key] for key in COUNTERS}
        counts["dropped_stale"] = self.inspector.worker.dropped_stale
        return counts

    def start(self, period_s: float) -> None:
        """Publish :meth:`status` on /diagnostics every ``period_s`` seconds of wall-clock (steady) time: health
        is reported even while a replay's sim time stands still."""
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.clock import Clock, ClockType

        node = self.inspector.node
        publisher = node.create_publisher(DiagnosticArray, "/diagnostics", 10)

        def publish() -> None:
            array = DiagnosticArray(status=[self.status()])
            array.header.stamp = node.get_clock().now().to_msg()
            publisher.publish(array)

        node.create_timer(float(period_s), publish, clock=Clock(clock_type=ClockType.STEADY_TIME))

    def status(self):
        """The inspector's DiagnosticStatus (level, message, values)."""
        from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

        inspector = self.inspector
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._arrivals if now - t <= 10.0]
            lat = np.asarray(self._latencies_ms, float)
        rate = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0
        pct = {q: (float(np.percentile(lat, q)) if lat.size else math.nan) for q in (50, 90, 99)}
        model = inspector.model
        detector, model_id, model_error = model.slot.current()
        intake = inspector.intake
        if inspector.unconfigured:
            level, message = DiagnosticStatus.WARN, "unconfigured (lifecycle): no model, no outputs; configure to serve"
        elif detector is None:
            level, message = DiagnosticStatus.ERROR, ("loading the model" if model.slot.loading else model_error)
        elif intake is None:
            level, message = DiagnosticStatus.WARN, "not listening (inactive)"
        elif not inspector.enabled:
            level, message = DiagnosticStatus.WARN, "inspection disabled"
        elif intake.incompatible_topics:
            level, message = DiagnosticStatus.ERROR, (f"publishers with incompatible QoS on "
                                                      f"{', '.join(intake.incompatible_topics)}: their "
                                                      f"messages never arrive (input_reliability)")
        elif model.device_note:
            level, message = DiagnosticStatus.WARN, f"running; {model.device_note}"
        else:
            level, message = DiagnosticStatus.OK, "running"
        values = {
            "enabled": str(inspector.enabled), "model": model_id, "model_error": model_error,
            "model_loading": str(model.slot.loading), "device": model.device, "device_note": model.device_note,
            "input_mode": inspector.mode.name, "input_reliability": inspector.p["input_reliability"],
            "queue_policy": inspector.p["queue_policy"], "input_rate_hz": f"{rate:.2f}",
            "latency_p50_ms": f"{pct[50]:.1f}", "latency_p90_ms": f"{pct[90]:.1f}",
            "latency_p99_ms": f"{pct[99]:.1f}", "queued": str(inspector.worker.queued),
            "batch_size": str(inspector.p["batch_size"]), "outputs": inspector.outputs.describe(),
            "model_sha256": model.sha256 if detector is not None else "", **_threshold_values(inspector, detector),
        }
        values.update({key: str(value) for key, value in self.counts().items()})
        if intake is not None:
            values.update({key: str(value) for key, value in intake.counts().items()})
        levels = {"OK": DiagnosticStatus.OK, "WARN": DiagnosticStatus.WARN, "ERROR": DiagnosticStatus.ERROR}
        reports = list(inspector.outputs.diagnostics())
        if intake is not None:
            reports.append(("inputs", *intake.losses.status(now, float(inspector.node.get_parameter(
                "loss_error_rate").value)), {}))
        watch_level, watch_message, mismatches = inspector.pipeline.watch.summary()
        reports.append(("inputs", watch_level, watch_message,
                        {f"input_mismatch_{kind}": count for kind, count in mismatches.items()}))
        for name, output_level, output_message, output_values in reports:
            values.update({key: str(value) for key, value in output_values.items()})
            if levels[output_level] > DiagnosticStatus.OK:
                message = f"{message}; {name}: {output_message}"
                level = max(level, levels[output_level])
        return DiagnosticStatus(level=level, name=f"{inspector.node.get_fully_qualified_name()}: inspector",
                                message=message, hardware_id=model_id,
                                values=[KeyValue(key=k, value=v) for k, v in values.items()])


def _threshold_values(inspector: Any, detector: Any) -> Dict[str, str]:
    """threshold (in use), threshold_model (calibrated), threshold_range (plausible), input_profile."""
    from ...model.threshold_bounds import describe_range

    if detector is None:
        return {"threshold": "", "threshold_model": "", "threshold_range": "", "input_profile": ""}
    override = float(inspector.node.get_parameter("threshold").value)
    try:
        profile = detector.input_profile
    except Exception:  # noqa: BLE001 - refused at load; never fail the diagnostics
        profile = None
    return {"threshold": f"{override if override >= 0 else detector.threshold:.6g}",
            "threshold_model": f"{detector.threshold:.6g}",
            "threshold_range": describe_range(detector.threshold_record),
            "input_profile": profile.describe() if profile is not None else "none (no input checks)"}


__all__ = ["Health", "COUNTERS"]
