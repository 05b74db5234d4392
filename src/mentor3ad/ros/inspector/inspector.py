"""What the inspector node does, shared by its plain and its lifecycle form (:mod:`mentor3ad.ros.nodes.inspector`).

:class:`InspectorLogic` is a mixin for an rclpy ``Node`` / ``LifecycleNode``:

* parameters (``INSPECTOR_PARAMETERS``), validated at start-up and on ``ros2 param set``;
* the model slot (:class:`mentor3ad.model.serving.ModelSlot`): loads off the executor thread, self-tests and
  swaps atomically, so pairs keep arriving and being answered while ``~/reload_model`` runs;
* the intake (:class:`mentor3ad.ros.intake.Intake`): every image gets exactly one result (a lone image an
  explicit ERROR after ``pair_timeout``);
* a bounded queue and one worker thread running :class:`mentor3ad.ros.pipeline.InspectionPipeline`;
* outputs: ``~/result``, ``~/anomaly_map``, ``~/overlay``, ``~/markers`` (the last three only while
  subscribed), ``/diagnostics``; services ``~/reload_model`` and ``~/enable``;
* the package's Python log records routed to the node's ROS logger (one warning per model load).
"""
from __future__ import annotations

import collections
import logging
import math
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, Optional

import numpy as np

from ..errors import ConfigError
from ..io.inputs import INPUT_MODES, InputChecks, WorkingVolume, input_mode, input_mode_help
from ..model.serving import LoadOutcome, ModelSlot, OutsideLoads
from ..types import InspectionResult, Verdict
from . import log_outcome
from .params import ParamSpec, declare_parameters, install_validation
from .pipeline import InspectionPipeline

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
RELIABILITIES = ("best_effort", "reliable", "best_available")
COUNTERS = ("received", "processed", "passed", "failed", "errored", "skipped", "dropped_stale")
_VERDICT_COUNTER = {Verdict.PASS: "passed", Verdict.FAIL: "failed", Verdict.ERROR: "errored",
                    Verdict.SKIPPED: "skipped"}


def _volume_problem(values) -> Optional[str]:
    """Why ``values`` is not a working volume (None when it is)."""
    try:
        WorkingVolume.from_list(values)
    except ConfigError as exc:
        return str(exc)
    return None


INSPECTOR_PARAMETERS = [
    ParamSpec("model_path", "", "Model file written by `mentor3ad train` / trainer_node (empty: no model; "
              "every result is ERROR until ~/reload_model loads one)."),
    ParamSpec("device", "auto", "Inference device: auto (cuda when available, else cpu), cpu, cuda or cuda:N; a CUDA "
              "request without CUDA falls back to cpu once at start-up (logged, shown in diagnostics).",
              read_only=True, check=lambda v: None if _DEVICE.match(v or "") else "use auto, cpu, cuda or cuda:N"),
    ParamSpec("input_mode", "points", f"3D input: {input_mode_help()}.", read_only=True, choices=tuple(INPUT_MODES)),
    ParamSpec("input_reliability", "best_effort", "Reliability of the input subscriptions: best_effort (matches "
              "every driver; with the node's Fast DDS profile, config/fastdds_inspector.xml, large clouds from a "
              "driver on defaults arrive), reliable (recorded or replayed data; never matches a best-effort driver) "
              "or best_available (decided when subscribing: reliable if no publisher is known yet). See README: "
              "large clouds.", read_only=True, choices=RELIABILITIES),
    ParamSpec("input_depth", 10, "History depth of the input subscriptions.", read_only=True, minimum=1),
    ParamSpec("pair_timeout", 2.0, "Seconds after an image without its 3D data before the image gets an ERROR "
              "result (no part goes without a result).", read_only=True, minimum=0.0, exclusive=True),
    ParamSpec("threshold", -1.0, "Decision threshold override on the image score; negative: use the "
              "model's calibrated threshold.", check=lambda v: None if math.isfinite(v) else "must be finite"),
    ParamSpec("publish_anomaly_map", True, "Publish ~/anomaly_map (32FC1, input resolution) while it has "
              "subscribers."),
    ParamSpec("publish_overlay", True, "Publish ~/overlay (bgr8 heat map blended over the image, regions boxed) "
              "while it has subscribers (not rendered otherwise)."),
    ParamSpec("publish_markers", True, "Publish ~/markers (visualization_msgs/MarkerArray: a box and a score label "
              "per defect region in the cloud's frame, for RViz) while it has subscribers."),
    ParamSpec("queue_policy", "all", "all: every pair is processed in order through a bounded queue, an "
              "overflowing pair gets a SKIPPED result; latest: only the newest pending pair is kept, "
              "stale pairs are dropped and counted.", read_only=True, choices=("all", "latest")),
    ParamSpec("queue_size", 8, "Inference queue capacity (pairs waiting for the worker).", read_only=True,
              minimum=1),
    ParamSpec("sync_slop", 0.05, "Approximate-time synchronization window in seconds.", read_only=True,
              minimum=0.0, exclusive=True),
    ParamSpec("sync_queue_size", 10, "Messages kept per input topic while waiting for partners.", read_only=True,
              minimum=1),
    ParamSpec("min_valid_points", 16, "Fewer valid 3D points (finite, z > 0, inside working_volume) than this "
              "gives an ERROR result.", minimum=1),
    ParamSpec("working_volume", [-10.0, 10.0, -10.0, 10.0, 0.0, 10.0], "[x_min, x_max, y_min, y_max, z_min, z_max] "
              "in metres, in the 3D data's optical frame: points outside are invalid (a cell's table, walls or a "
              "misreported unit do not enter the features).", check=_volume_problem),
    ParamSpec("require_same_frame", True, "The image and the cloud / depth image (and CameraInfo) must carry the "
              "same header.frame_id, else the pair gets an ERROR result (pixel-aligned data is in one frame); "
              "false for drivers that name the frames of aligned streams differently."),
    ParamSpec("diagnostics_period", 1.0, "Seconds between /diagnostics messages.", read_only=True, minimum=0.1),
]


def resolve_device(device: str) -> tuple:
    """auto|cpu|cuda|cuda:N -> (torch device string, note): auto picks cuda when available; a CUDA request
    without CUDA falls back to cpu with a note saying so."""
    if not _DEVICE.match(device or ""):
        raise ConfigError(f"parameter device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if device == "cpu":
        return "cpu", ""
    import torch

    if torch.cuda.is_available():
        return ("cuda" if device == "auto" else device), ""
    if device == "auto":
        return "cpu", ""
    return "cpu", f"{device} requested but CUDA is not available: running on cpu"


class _RosLogHandler(logging.Handler):
    """Python log records of the package -> the node's ROS logger (one call site per severity)."""

    def __init__(self, logger: Any) -> None:
        super().__init__(logging.INFO)
        self.ros_logger = logger
        self.addFilter(OutsideLoads())

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.levelno >= logging.ERROR:
            self.ros_logger.error(text)
        elif record.levelno >= logging.WARNING:
            self.ros_logger.warning(text)
        else:
            self.ros_logger.debug(text)


@dataclass
class _Pair:
    """One synchronized input set waiting for inference: {topic key: message}."""

    messages: Dict[str, Any] = field(default_factory=dict)
    received: float = 0.0  # time.monotonic() when the set was complete

    @property
    def header(self):
        return self.messages["image"].header


class InspectorLogic:
    """Mixin with the inspector's behaviour (see module docstring); the node class calls
    :meth:`setup_inspector` from ``__init__`` and :meth:`start_listening` / :meth:`stop_listening`."""

    def setup_inspector(self) -> None:
        self.p = declare_parameters(self, INSPECTOR_PARAMETERS)
        install_validation(self, INSPECTOR_PARAMETERS)
        self._log_handler = _RosLogHandler(self.get_logger())
        package_logger = logging.getLogger("mentor3ad")
        package_logger.addHandler(self._log_handler)
        package_logger.propagate = False
        self.mode = input_mode(self.p["input_mode"])
        self.queue_policy = self.p["queue_policy"]
        self.queue_size = int(self.p["queue_size"]) if self.queue_policy == "all" else 1
        self.device, self.device_note = resolve_device(self.p["device"])
        if self.device_note:
            self.get_logger().warning(self.device_note)
        self.pipeline = InspectionPipeline(self.mode, f"{self.get_fully_qualified_name()}/result",
                                           int(self.p["min_valid_points"]))
        self.slot = ModelSlot(self.device)
        self.enabled = True
        self.intake = None
        self._counts: collections.Counter = collections.Counter()
        self._counts_lock = threading.Lock()
        self._latencies_ms: Deque[float] = collections.deque(maxlen=200)
        self._arrivals: Deque[float] = collections.deque(maxlen=200)
        self._queue: Deque[_Pair] = collections.deque()
        self._queue_cv = threading.Condition()
        self._stopping = False
        self._worker: Optional[threading.Thread] = None
        self.started = time.monotonic()

    # ------------------------------------------------------------------ outputs and services
    def create_outputs(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
        from rclpy.clock import Clock, ClockType
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_srvs.srv import SetBool, Trigger
        from visualization_msgs.msg import MarkerArray

        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.result_pub = self.create_publisher(DiagnosticArray, "~/result", reliable)
        self.map_pub = self.create_publisher(Image, "~/anomaly_map",
                                             QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE))
        self.overlay_pub = self.create_publisher(Image, "~/overlay", 10)
        self.markers_pub = self.create_publisher(MarkerArray, "~/markers", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        services = MutuallyExclusiveCallbackGroup()
        self.create_service(Trigger, "~/reload_model", self._on_reload, callback_group=services)
        self.create_service(SetBool, "~/enable", self._on_enable, callback_group=services)
        # wall-clock (steady) timer: health is reported even while a replay's sim time stands still
        self.create_timer(float(self.p["diagnostics_period"]), self.publish_diagnostics,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._worker = threading.Thread(target=self._work, name="inspector-inference", daemon=True)
        self._worker.start()

    def input_qos(self):
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

        reliability = {"best_available": ReliabilityPolicy.BEST_AVAILABLE, "reliable": ReliabilityPolicy.RELIABLE,
                       "best_effort": ReliabilityPolicy.BEST_EFFORT}[self.p["input_reliability"]]
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(self.p["input_depth"]), reliability=reliability)

    def start_listening(self) -> None:
        """Subscribe to the inputs (and answer every image from now on)."""
        from rclpy.qos_overriding_options import QoSOverridingOptions

        from .intake import Intake

        if self.intake is None:
            self.intake = Intake(self, self.mode, self.input_qos(), self._on_pair, self._on_lone,
                                 int(self.p["sync_queue_size"]), float(self.p["sync_slop"]),
                                 float(self.get_parameter("pair_timeout").value),
                                 QoSOverridingOptions.with_default_policies())

    def stop_listening(self) -> None:
        if self.intake is not None:
            self.intake.close()
            self.intake = None

    def count(self, key: str, amount: int = 1) -> None:
        with self._counts_lock:
            self._counts[key] += amount

    # ------------------------------------------------------------------ model
    def load_model_now(self, path: str) -> LoadOutcome:
        """Load ``path`` on this thread (start-up, lifecycle configure); logs the outcome."""
        if not path:
            self.slot.set_missing("no model loaded: parameter model_path is empty")
            outcome = LoadOutcome(False, "model_path is empty; set it (ros2 param set) and call ~/reload_model")
        else:
            outcome = self.slot.load(path)
        self._report_load(outcome)
        return outcome

    def load_model_in_background(self, path: str, done=None) -> bool:
        """Start loading ``path`` off the executor thread; ``done(outcome)`` runs on the loading thread."""
        if not path:
            self.load_model_now(path)
            if done is not None:
                done(LoadOutcome(False, "model_path is empty; set it (ros2 param set) and call ~/reload_model"))
            return True

        def finished(outcome: LoadOutcome) -> None:
            self._report_load(outcome)
            with self._queue_cv:
                self._queue_cv.notify_all()  # the worker may be waiting for the first model
            if done is not None:
                done(outcome)

        return self.slot.load_async(path, finished)

    def _report_load(self, outcome: LoadOutcome) -> None:
        log_outcome(self.get_logger(), outcome.ok, f"{outcome.message} ({outcome.seconds:.1f} s incl. self-test)"
                    if outcome.ok else outcome.message)
        if outcome.warning:
            self.get_logger().warning(outcome.warning)

    async def _on_reload(self, request, response):
        """~/reload_model: load the current ``model_path`` off the executor thread; answer when done."""
        from rclpy.task import Future

        future = Future(executor=self.executor)
        started = self.load_model_in_background(self.get_parameter("model_path").value, future.set_result)
        if not started:
            response.success, response.message = False, "a model load is already running; try again when it ends"
            return response
        outcome = await future
        response.success, response.message = outcome.ok, outcome.message
        return response

    def _on_enable(self, request, response):
        self.enabled = bool(request.data)
        response.success = True
        response.message = "inspection enabled" if self.enabled else "inspection disabled (pairs get SKIPPED)"
        self.get_logger().info(response.message)
        return response

    # ------------------------------------------------------------------ input
    def _on_pair(self, messages: Dict[str, Any], received: float) -> None:
        """Intake callback (executor thread): enqueue, never infer here."""
        self.count("received")
        self._arrivals.append(received)
        pair = _Pair(messages, received)
        if not self.enabled:
            self.publish_result(pair.header, received, InspectionResult.skipped("inspection disabled (~/enable)"))
            return
        with self._queue_cv:
            if self.queue_policy == "latest":
                self.count("dropped_stale", len(self._queue))
                self._queue.clear()
            full = len(self._queue) >= self.queue_size
            if not full:
                self._queue.append(pair)
                self._queue_cv.notify()
        if full:  # policy all: never a silent drop
            self.publish_result(pair.header, received,
                                InspectionResult.skipped(f"inference queue full (queue_size={self.queue_size})"))

    def _on_lone(self, image: Any, reason: str) -> None:
        """Intake callback: an image whose 3D data never came."""
        self.count("received")
        self.publish_result(image.header, time.monotonic(), InspectionResult.error(reason))

    # ------------------------------------------------------------------ worker
    def _work(self) -> None:
        while True:
            with self._queue_cv:
                while not self._stopping and (not self._queue or (self.slot.loading and self.slot.current()[0] is None)):
                    self._queue_cv.wait(timeout=0.5)  # the first model is loading: parts wait for it
                if self._stopping:
                    return
                pair = self._queue.popleft()
            try:
                self._process(pair)
            except Exception as exc:  # noqa: BLE001 - keep serving: report and go on with the next pair
                self.get_logger().error(f"processing failed: {type(exc).__name__}: {exc}")
                self.publish_result(pair.header, pair.received,
                                    InspectionResult.error(f"internal error: {type(exc).__name__}: {exc}"))

    def _input_checks(self) -> InputChecks:
        """The current working_volume / require_same_frame parameters as InputChecks (cached by value)."""
        key = (tuple(self.get_parameter("working_volume").value), bool(self.get_parameter("require_same_frame").value))
        if getattr(self, "_checks_key", None) != key:
            self._checks_key, self._checks = key, InputChecks(WorkingVolume.from_list(key[0]), key[1])
        return self._checks

    def _process(self, pair: _Pair) -> None:
        detector, model_id, model_error = self.slot.current()
        override = float(self.get_parameter("threshold").value)
        self.pipeline.min_valid_points = int(self.get_parameter("min_valid_points").value)
        self.pipeline.checks = self._input_checks()
        result, rgb = self.pipeline.judge(detector, pair.messages, override if override >= 0.0 else None, model_error)
        self.publish_result(pair.header, pair.received, result.replace(model_id=result.model_id or model_id))
        if not result.verdict.is_decision:
            return
        # map, overlay and markers are volatile: with no matched subscriber nobody could receive them, so the
        # rendering and message building are skipped
        if self.get_parameter("publish_anomaly_map").value and self.map_pub.get_subscription_count() > 0:
            self.map_pub.publish(self.pipeline.map_message(result, pair.header))
        if self.get_parameter("publish_overlay").value and self.overlay_pub.get_subscription_count() > 0:
            self.overlay_pub.publish(self.pipeline.overlay_message(result, rgb, pair.header))
        if self.get_parameter("publish_markers").value and self.markers_pub.get_subscription_count() > 0:
            from .markers import region_markers

            cloud_header = pair.messages[self.mode.topic_keys[0]].header
            self.markers_pub.publish(region_markers(result, cloud_header))

    def publish_result(self, header: Any, received: float, result: InspectionResult) -> None:
        latency_ms = (time.monotonic() - received) * 1e3
        self.count(_VERDICT_COUNTER[result.verdict])
        if result.verdict.is_decision:
            self.count("processed")
            self._latencies_ms.append(latency_ms)
        result = result.replace(latency_ms=latency_ms, model_id=result.model_id or self.slot.current()[1])
        self.result_pub.publish(self.pipeline.result_message(result, header))

    # ------------------------------------------------------------------ health
    def publish_diagnostics(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        now = time.monotonic()
        recent = [t for t in self._arrivals if now - t <= 10.0]
        rate = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0
        lat = np.asarray(self._latencies_ms, float)
        pct = {q: (float(np.percentile(lat, q)) if lat.size else math.nan) for q in (50, 90, 99)}
        detector, model_id, model_error = self.slot.current()
        if detector is None:
            level, message = DiagnosticStatus.ERROR, ("loading the model" if self.slot.loading else model_error)
        elif self.intake is None:
            level, message = DiagnosticStatus.WARN, "not listening (inactive)"
        elif not self.enabled:
            level, message = DiagnosticStatus.WARN, "inspection disabled"
        elif self.intake.incompatible_topics:
            level, message = DiagnosticStatus.ERROR, (f"publishers with incompatible QoS on "
                                                      f"{', '.join(self.intake.incompatible_topics)}: their "
                                                      f"messages never arrive (input_reliability)")
        elif self.device_note:
            level, message = DiagnosticStatus.WARN, f"running; {self.device_note}"
        else:
            level, message = DiagnosticStatus.OK, "running"
        values = {
            "enabled": str(self.enabled), "model": model_id, "model_error": model_error,
            "model_loading": str(self.slot.loading), "device": self.device, "device_note": self.device_note,
            "input_mode": self.mode.name, "input_reliability": self.p["input_reliability"],
            "queue_policy": self.queue_policy, "input_rate_hz": f"{rate:.2f}", "latency_p50_ms": f"{pct[50]:.1f}",
            "latency_p90_ms": f"{pct[90]:.1f}", "latency_p99_ms": f"{pct[99]:.1f}", "queued": str(len(self._queue)),
        }
        with self._counts_lock:
            values.update({key: str(self._counts[key]) for key in COUNTERS})
        if self.intake is not None:
            values.update({key: str(value) for key, value in self.intake.counts().items()})
        status = DiagnosticStatus(level=level, name=f"{self.get_fully_qualified_name()}: inspector", message=message,
                                  hardware_id=model_id, values=[KeyValue(key=k, value=v) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(array)

    def stop_worker(self) -> None:
        with self._queue_cv:
            self._stopping = True
            self._queue_cv.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=5.0)
        logging.getLogger("mentor3ad").removeHandler(self._log_handler)


__all__ = ["InspectorLogic", "INSPECTOR_PARAMETERS", "resolve_device", "RELIABILITIES"]
