"""Inspector node: synchronized image + 3D data (an input mode of :mod:`mentor3ad.io.inputs`) -> verdicts.

Topics (relative, remappable), services and parameters are documented in the README and in
``INSPECTOR_PARAMETERS``; the result message in :mod:`mentor3ad.ros.result_codec`.

Threading: the executor thread only synchronizes and enqueues pairs (cheap). One worker thread runs the
:class:`~mentor3ad.ros.pipeline.InspectionPipeline` (convert, judge, publish), so inference never
blocks the executor. The queue is bounded: policy ``all`` processes every pair in order and answers an
overflowing pair with an explicit SKIPPED result; policy ``latest`` keeps only the newest pending pair
and counts the stale ones it drops.
"""
from __future__ import annotations

import collections
import math
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, List, Optional

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import Image
from std_srvs.srv import SetBool, Trigger

from ...errors import ConfigError, Mentor3ADError
from ...io.inputs import INPUT_MODES, TOPICS, input_mode, input_mode_help
from ...types import InspectionResult
from .. import log_outcome
from ..messages import message_class
from ..params import ParamSpec, declare_parameters, parse_node_help
from ..pipeline import InspectionPipeline
from ..sync import ApproximateTimeSynchronizer, Subscriber
from . import run_node

INSPECTOR_PARAMETERS = [
    ParamSpec("model_path", "", "Model file written by `mentor3ad train` / trainer_node (empty: no model; "
              "every result is ERROR until ~/reload_model loads one)."),
    ParamSpec("device", "auto", "Inference device: auto (cuda when available, else cpu), cpu, cuda or cuda:N.",
              read_only=True),
    ParamSpec("input_mode", "points", f"3D input: {input_mode_help()}.", read_only=True),
    ParamSpec("threshold", -1.0, "Decision threshold override on the image score; negative: use the "
              "model's calibrated threshold."),
    ParamSpec("publish_anomaly_map", True, "Publish ~/anomaly_map (32FC1, input resolution) while it has "
              "subscribers."),
    ParamSpec("publish_overlay", True, "Publish ~/overlay (bgr8 heat map blended over the image, regions boxed) "
              "while it has subscribers (not rendered otherwise)."),
    ParamSpec("queue_policy", "all", "all: every pair is processed in order through a bounded queue, an "
              "overflowing pair gets a SKIPPED result; latest: only the newest pending pair is kept, "
              "stale pairs are dropped and counted.", read_only=True),
    ParamSpec("queue_size", 8, "Inference queue capacity (pairs waiting for the worker).", read_only=True),
    ParamSpec("sync_slop", 0.05, "Approximate-time synchronization window in seconds.", read_only=True),
    ParamSpec("sync_queue_size", 10, "Messages kept per input topic while waiting for partners.", read_only=True),
    ParamSpec("min_valid_points", 16, "Fewer valid (finite, non-zero) 3D points than this gives an ERROR result."),
    ParamSpec("diagnostics_period", 1.0, "Seconds between /diagnostics messages.", read_only=True),
]

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
COUNTERS = ("received", "processed", "passed", "failed", "errored", "skipped", "dropped_stale")


def resolve_device(device: str) -> str:
    """auto|cpu|cuda|cuda:N -> the torch device string to use (auto picks cuda when available)."""
    if not _DEVICE_PATTERN.match(device or ""):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class _Pair:
    """One synchronized input set waiting for inference: {topic key: message}."""

    messages: Dict[str, Any] = field(default_factory=dict)
    received: float = 0.0  # time.monotonic() when the pair was complete

    @property
    def header(self):
        return self.messages["image"].header


class InspectorNode(Node):
    """See the module docstring and the README (Nodes -> inspector_node)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("inspector", **kwargs)
        p = declare_parameters(self, INSPECTOR_PARAMETERS)
        self.mode = input_mode(p["input_mode"])
        if p["queue_policy"] not in ("all", "latest"):
            raise ConfigError(f"queue_policy must be all or latest, got {p['queue_policy']!r}")
        if p["queue_size"] < 1:
            raise ConfigError(f"queue_size must be >= 1, got {p['queue_size']}")
        self.queue_policy = p["queue_policy"]
        self.queue_size = int(p["queue_size"]) if self.queue_policy == "all" else 1
        self.device = resolve_device(p["device"])
        self.pipeline = InspectionPipeline(self.mode, f"{self.get_fully_qualified_name()}/result",
                                           int(p["min_valid_points"]))

        self._model_lock = threading.Lock()
        self.detector = None
        self.model_identity = ""
        self.model_error = "no model loaded yet"
        self._counts: collections.Counter = collections.Counter()
        self._counts_lock = threading.Lock()
        self._latencies_ms: Deque[float] = collections.deque(maxlen=200)
        self._arrivals: Deque[float] = collections.deque(maxlen=200)
        self.enabled = True
        self._queue: Deque[_Pair] = collections.deque()
        self._queue_cv = threading.Condition()
        self._stopping = False

        ok, message = self.load_model(p["model_path"])
        log_outcome(self.get_logger(), ok, message)

        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.result_pub = self.create_publisher(DiagnosticArray, "~/result", reliable)
        self.map_pub = self.create_publisher(Image, "~/anomaly_map", QoSProfile(depth=20,
                                                                                reliability=ReliabilityPolicy.RELIABLE))
        self.overlay_pub = self.create_publisher(Image, "~/overlay", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        services = MutuallyExclusiveCallbackGroup()
        self.create_service(Trigger, "~/reload_model", self._on_reload, callback_group=services)
        self.create_service(SetBool, "~/enable", self._on_enable, callback_group=services)
        # wall-clock (steady) timer: health is reported even while a replay's sim time stands still
        self.create_timer(float(p["diagnostics_period"]), self._publish_diagnostics,
                          callback_group=MutuallyExclusiveCallbackGroup(), clock=Clock(clock_type=ClockType.STEADY_TIME))

        self._worker = threading.Thread(target=self._work, name="inspector-inference", daemon=True)
        self._worker.start()

        overrides = QoSOverridingOptions.with_default_policies()
        inputs = [Subscriber(self, message_class(TOPICS[key].msg_type), TOPICS[key].relative,
                             qos_profile=qos_profile_sensor_data, qos_overriding_options=overrides)
                  for key in self.mode.keys]
        self._sync = ApproximateTimeSynchronizer(inputs, int(p["sync_queue_size"]), float(p["sync_slop"]))
        self._sync.registerCallback(self._on_pair)
        self.get_logger().info(
            f"inspector ready: input_mode={self.mode.name}, device={self.device}, "
            f"queue_policy={self.queue_policy} (size {self.queue_size}), model={self.model_identity or 'none'}")

    def _count(self, key: str, amount: int = 1) -> None:
        with self._counts_lock:
            self._counts[key] += amount

    # ------------------------------------------------------------------ model
    def load_model(self, path: str):
        """Load ``path``; on success swap it in, on failure keep the current model. -> (ok, message)."""
        if not path:
            if self.detector is None:
                self.model_error = "no model loaded: parameter model_path is empty"
            return False, "model_path is empty; set it (ros2 param set) and call ~/reload_model"
        try:
            from ...model.detector import Detector

            detector = Detector.load(path, self.device)
        except Exception as exc:  # noqa: BLE001 - a bad file must never take the node down
            message = f"cannot load model {path!r}: {exc if isinstance(exc, Mentor3ADError) else repr(exc)}"
            if self.detector is None:
                self.model_error = f"no model loaded: {message}"
            return False, message + ("" if self.detector is None else f"; keeping {self.model_identity}")
        with self._model_lock:
            self.detector, self.model_identity, self.model_error = detector, detector.model_id, ""
        return True, f"loaded model {detector.model_id} from {path} on {self.device}"

    def _on_reload(self, request, response):
        response.success, response.message = self.load_model(self.get_parameter("model_path").value)
        log_outcome(self.get_logger(), response.success, response.message)
        return response

    def _on_enable(self, request, response):
        self.enabled = bool(request.data)
        response.success = True
        response.message = "inspection enabled" if self.enabled else "inspection disabled (pairs get SKIPPED)"
        self.get_logger().info(response.message)
        return response

    # ------------------------------------------------------------------ input
    def _on_pair(self, *messages) -> None:
        """Synchronizer callback (executor thread): enqueue, never infer here."""
        now = time.monotonic()
        self._count("received")
        self._arrivals.append(now)
        pair = _Pair(dict(zip(self.mode.keys, messages)), received=now)
        if not self.enabled:
            self._count("skipped")
            self._publish_result(pair, InspectionResult.skipped("inspection disabled (~/enable)"))
            return
        with self._queue_cv:
            if self.queue_policy == "latest":
                self._count("dropped_stale", len(self._queue))
                self._queue.clear()
            full = len(self._queue) >= self.queue_size
            if not full:
                self._queue.append(pair)
                self._queue_cv.notify()
        if full:  # policy all: never a silent drop
            self._count("skipped")
            self._publish_result(pair, InspectionResult.skipped(f"inference queue full (queue_size={self.queue_size})"))

    # ------------------------------------------------------------------ worker
    def _work(self) -> None:
        while True:
            with self._queue_cv:
                while not self._queue and not self._stopping:
                    self._queue_cv.wait()
                if self._stopping:
                    return
                pair = self._queue.popleft()
            try:
                self._process(pair)
            except Exception as exc:  # noqa: BLE001 - keep serving: report and go on with the next pair
                self._count("errored")
                self.get_logger().error(f"processing failed: {type(exc).__name__}: {exc}")
                self._publish_result(pair, InspectionResult.error(f"internal error: {type(exc).__name__}: {exc}"))

    def _process(self, pair: _Pair) -> None:
        with self._model_lock:
            detector, identity, model_error = self.detector, self.model_identity, self.model_error
        override = float(self.get_parameter("threshold").value)
        self.pipeline.min_valid_points = int(self.get_parameter("min_valid_points").value)
        result, rgb = self.pipeline.judge(detector, pair.messages, override if override >= 0.0 else None, model_error)
        self._count({"PASS": "passed", "FAIL": "failed", "ERROR": "errored", "SKIPPED": "skipped"}[result.verdict.value])
        self._publish_result(pair, result.replace(model_id=result.model_id or identity))
        if not result.verdict.is_decision:
            return
        # map and overlay are volatile: with no matched subscriber nobody could receive them, so the
        # rendering and message building are skipped
        if self.get_parameter("publish_anomaly_map").value and self.map_pub.get_subscription_count() > 0:
            self.map_pub.publish(self.pipeline.map_message(result, pair.header))
        if self.get_parameter("publish_overlay").value and self.overlay_pub.get_subscription_count() > 0:
            self.overlay_pub.publish(self.pipeline.overlay_message(result, rgb, pair.header))

    def _publish_result(self, pair: _Pair, result: InspectionResult) -> None:
        latency_ms = (time.monotonic() - pair.received) * 1e3
        if result.verdict.is_decision:
            self._count("processed")
            self._latencies_ms.append(latency_ms)
        result = result.replace(latency_ms=latency_ms, model_id=result.model_id or self.model_identity)
        self.result_pub.publish(self.pipeline.result_message(result, pair.header))

    # ------------------------------------------------------------------ health
    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        recent = [t for t in self._arrivals if now - t <= 10.0]
        rate = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0
        lat = np.asarray(self._latencies_ms, float)
        pct = {q: (float(np.percentile(lat, q)) if lat.size else math.nan) for q in (50, 90, 99)}
        if self.detector is None:
            level, message = DiagnosticStatus.ERROR, self.model_error
        elif not self.enabled:
            level, message = DiagnosticStatus.WARN, "inspection disabled"
        else:
            level, message = DiagnosticStatus.OK, "running"
        values = {
            "enabled": str(self.enabled), "model": self.model_identity, "model_error": self.model_error,
            "device": self.device, "input_mode": self.mode.name, "queue_policy": self.queue_policy,
            "input_rate_hz": f"{rate:.2f}", "latency_p50_ms": f"{pct[50]:.1f}", "latency_p90_ms": f"{pct[90]:.1f}",
            "latency_p99_ms": f"{pct[99]:.1f}", "queued": str(len(self._queue)),
        }
        with self._counts_lock:
            values.update({key: str(self._counts[key]) for key in COUNTERS})
        status = DiagnosticStatus(level=level, name=f"{self.get_fully_qualified_name()}: inspector", message=message,
                                  hardware_id=self.model_identity,
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(array)

    def stop(self) -> None:
        with self._queue_cv:
            self._stopping = True
            self._queue_cv.notify_all()
        self._worker.join(timeout=5.0)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    parse_node_help(argv, "inspector_node",
                    "Mentor3AD inspector: subscribes image + 3D data (" + ", ".join(INPUT_MODES) + "), publishes "
                    "~/result, ~/anomaly_map, ~/overlay and /diagnostics. ROS arguments follow --ros-args.",
                    INSPECTOR_PARAMETERS)
    return run_node(InspectorNode, argv, "inspector_node")


if __name__ == "__main__":
    sys.exit(main())
