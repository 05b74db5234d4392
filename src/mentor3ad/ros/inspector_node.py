"""Inspector node: synchronized image + organized cloud (or depth + camera_info) -> anomaly verdicts.

Topics (relative, remappable), services and parameters are documented in the README and in
``INSPECTOR_PARAMETERS``; the result message format in :mod:`mentor3ad.ros.result_msg`.

Threading: the executor threads only synchronize and enqueue pairs (cheap). One worker thread
converts, runs the detector and publishes, so inference never blocks the executor. The queue is
bounded: policy ``all`` processes every pair in order and answers an overflowing pair with an
explicit SKIPPED result; policy ``latest`` keeps only the newest pending pair and counts the stale
ones it drops.
"""
from __future__ import annotations

import collections
import math
import re
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Deque, List, Optional

import numpy as np

from mentor3ad.ros import configure_local_discovery, log_outcome
from mentor3ad.ros.params import ParamSpec, declare_parameters, parse_node_help
from mentor3ad.ros.result_msg import ERROR, FAIL, PASS, SKIPPED, build_result

INSPECTOR_PARAMETERS = [
    ParamSpec("model_path", "", "Model file written by `mentor3ad train` / trainer_node (empty: no model; "
              "every result is ERROR until ~/reload_model loads one)."),
    ParamSpec("device", "auto", "Inference device: auto (cuda when available, else cpu), cpu, cuda or cuda:N.",
              read_only=True),
    ParamSpec("input_mode", "points", "3D input: points (organized PointCloud2 on `points`) or depth "
              "(registered depth Image on `depth` + CameraInfo on `camera_info`).", read_only=True),
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


def resolve_device(device: str) -> str:
    """auto|cpu|cuda|cuda:N -> the torch device string to use (auto picks cuda when available)."""
    if not _DEVICE_PATTERN.match(device or ""):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def model_id_of(detector: Any, fallback: str) -> str:
    """Short model identity for results: ``identity["model_id"]`` (or ``identity`` if it is a string)."""
    identity = getattr(detector, "identity", None)
    if isinstance(identity, dict) and identity.get("model_id"):
        return str(identity["model_id"])
    return str(identity) if identity else fallback


@dataclass
class _Pair:
    """One synchronized input set waiting for inference."""

    image: Any
    cloud: Any = None  # PointCloud2 (input_mode points)
    depth: Any = None  # depth Image (input_mode depth)
    camera_info: Any = None
    received: float = 0.0  # time.monotonic() when the pair was complete


def overlay_bgr(rgb: np.ndarray, anomaly_map: np.ndarray, threshold: float, regions) -> np.ndarray:
    """(H, W, 3) uint8 BGR: JET heat map (threshold at mid-scale) blended 50/50 over the image, regions boxed."""
    import cv2

    amap = np.nan_to_num(np.asarray(anomaly_map, np.float32))
    scale = 2.0 * threshold if math.isfinite(threshold) and threshold > 0 else float(amap.max()) or 1.0
    heat = cv2.applyColorMap((np.clip(amap / scale, 0.0, 1.0) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    out = cv2.addWeighted(np.ascontiguousarray(rgb[..., ::-1]), 0.5, heat, 0.5, 0.0)
    for region in regions:
        x0, y0, x1, y1 = (int(v) for v in region.bbox)
        cv2.rectangle(out, (x0, y0), (x1, y1), (255, 255, 255), 1)
    return out


def _image_msg(header: Any, array: np.ndarray, encoding: str):
    """numpy (H, W) float32 (32FC1) or (H, W, 3) uint8 (bgr8) -> sensor_msgs/Image with ``header``."""
    from sensor_msgs.msg import Image

    arr = np.ascontiguousarray(array)
    height, width = arr.shape[:2]
    return Image(header=header, height=height, width=width, encoding=encoding, is_bigendian=0,
                 step=int(arr.strides[0]), data=arr.tobytes())


def _make_node_class():
    """Build the rclpy Node subclass (import rclpy only when a node is actually created)."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
    from rclpy.clock import Clock, ClockType
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from rclpy.qos_overriding_options import QoSOverridingOptions
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from std_srvs.srv import SetBool, Trigger

    from mentor3ad.ros.sync import ApproximateTimeSynchronizer, Subscriber

    class InspectorNode(Node):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__("inspector", **kwargs)
            p = declare_parameters(self, INSPECTOR_PARAMETERS)
            if p["input_mode"] not in ("points", "depth"):
                raise ValueError(f"input_mode must be points or depth, got {p['input_mode']!r}")
            if p["queue_policy"] not in ("all", "latest"):
                raise ValueError(f"queue_policy must be all or latest, got {p['queue_policy']!r}")
            if p["queue_size"] < 1:
                raise ValueError(f"queue_size must be >= 1, got {p['queue_size']}")
            self.input_mode = p["input_mode"]
            self.queue_policy = p["queue_policy"]
            self.queue_size = int(p["queue_size"]) if self.queue_policy == "all" else 1
            self.device = resolve_device(p["device"])

            self._model_lock = threading.Lock()
            self.detector = None
            self.model_identity = ""
            self.model_error = "no model loaded yet"
            self._counts = collections.Counter()
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
            maps_qos = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
            self.map_pub = self.create_publisher(Image, "~/anomaly_map", maps_qos)
            self.overlay_pub = self.create_publisher(Image, "~/overlay", 10)
            self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

            self._service_group = MutuallyExclusiveCallbackGroup()
            self.create_service(Trigger, "~/reload_model", self._on_reload, callback_group=self._service_group)
            self.create_service(SetBool, "~/enable", self._on_enable, callback_group=self._service_group)
            # wall-clock (steady) timer: health is reported even while a replay's sim time stands still
            self.create_timer(float(p["diagnostics_period"]), self._publish_diagnostics,
                              callback_group=MutuallyExclusiveCallbackGroup(), clock=Clock(clock_type=ClockType.STEADY_TIME))

            self._worker = threading.Thread(target=self._work, name="inspector-inference", daemon=True)
            self._worker.start()

            overrides = QoSOverridingOptions.with_default_policies()
            image_sub = Subscriber(self, Image, "image", qos_profile=qos_profile_sensor_data,
                                   qos_overriding_options=overrides)
            if self.input_mode == "points":
                inputs = [image_sub, Subscriber(self, PointCloud2, "points", qos_profile=qos_profile_sensor_data,
                                                qos_overriding_options=overrides)]
            else:
                inputs = [
                    image_sub,
                    Subscriber(self, Image, "depth", qos_profile=qos_profile_sensor_data,
                               qos_overriding_options=overrides),
                    Subscriber(self, CameraInfo, "camera_info", qos_profile=qos_profile_sensor_data,
                               qos_overriding_options=overrides),
                ]
            self._sync = ApproximateTimeSynchronizer(inputs, int(p["sync_queue_size"]), float(p["sync_slop"]))
            self._sync.registerCallback(self._on_pair)
            self.get_logger().info(
                f"inspector ready: input_mode={self.input_mode}, device={self.device}, "
                f"queue_policy={self.queue_policy} (size {self.queue_size}), model={self.model_identity or 'none'}"
            )

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
                from mentor3ad.detector import Detector

                detector = Detector.load(path, self.device)
            except Exception as exc:  # a bad file must never take the node down
                message = f"cannot load model {path!r}: {type(exc).__name__}: {exc}"
                if self.detector is None:
                    self.model_error = f"no model loaded: {message}"
                return False, message + ("" if self.detector is None else f"; keeping {self.model_identity}")
            try:
                warm_s = detector.warmup()  # lazy initialisation before the first part, not during it
                self.get_logger().info(f"warm-up prediction: {warm_s * 1e3:.0f} ms")
            except Exception as exc:  # noqa: BLE001 - the real parts will report their own errors
                self.get_logger().warning(f"warm-up prediction failed: {type(exc).__name__}: {exc}")
            identity = model_id_of(detector, path)
            with self._model_lock:
                self.detector, self.model_identity, self.model_error = detector, identity, ""
            return True, f"loaded model {identity} from {path} on {self.device}"

        def _on_reload(self, request, response):
            path = self.get_parameter("model_path").value
            response.success, response.message = self.load_model(path)
            log_outcome(self.get_logger(), response.success, response.message)
            return response

        def _on_enable(self, request, response):
            self.enabled = bool(request.data)
            response.success = True
            response.message = "inspection enabled" if self.enabled else "inspection disabled (pairs get SKIPPED)"
            self.get_logger().info(response.message)
            return response

        # ------------------------------------------------------------------ input
        def _on_pair(self, image, *others) -> None:
            """Synchronizer callback (executor thread): enqueue, never infer here."""
            now = time.monotonic()
            self._count("received")
            self._arrivals.append(now)
            if self.input_mode == "points":
                pair = _Pair(image=image, cloud=others[0], received=now)
            else:
                pair = _Pair(image=image, depth=others[0], camera_info=others[1], received=now)
            if not self.enabled:
                self._count("skipped")
                self._publish_result(pair, SKIPPED, reason="inspection disabled (~/enable)")
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
                self._publish_result(pair, SKIPPED, reason=f"inference queue full (queue_size={self.queue_size})")

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
                except Exception as exc:  # keep serving: report and go on with the next pair
                    self._count("errored")
                    self.get_logger().error(f"processing failed: {type(exc).__name__}: {exc}")
                    self._publish_result(pair, ERROR, reason=f"internal error: {type(exc).__name__}: {exc}")

        def _convert(self, pair: _Pair):
            """-> (rgb (H, W, 3) uint8, xyz (H, W, 3) float32 metres); raises MessageConversionError."""
            from mentor3ad import msgconv

            rgb = msgconv.image_to_rgb(pair.image)
            if self.input_mode == "points":
                xyz = msgconv.cloud_to_xyz(pair.cloud)
            else:
                xyz = msgconv.depth_to_xyz(pair.depth, pair.camera_info)
            msgconv.check_aligned(rgb, xyz)
            msgconv.check_enough_valid_points(xyz, int(self.get_parameter("min_valid_points").value))
            return rgb, xyz

        def _process(self, pair: _Pair) -> None:
            from mentor3ad.msgconv import MessageConversionError

            try:
                rgb, xyz = self._convert(pair)
            except MessageConversionError as exc:
                self._count("errored")
                self._publish_result(pair, ERROR, reason=f"bad input: {exc}")
                return
            with self._model_lock:
                detector, identity, model_error = self.detector, self.model_identity, self.model_error
            if detector is None:
                self._count("errored")
                self._publish_result(pair, ERROR, reason=model_error)
                return
            try:
                prediction = detector.predict(rgb, xyz)
            except ValueError as exc:
                self._count("errored")
                self._publish_result(pair, ERROR, reason=f"bad input: {exc}", model=identity)
                return
            score, threshold = float(prediction.score), float(prediction.threshold)
            is_anomalous, regions = bool(prediction.is_anomalous), list(prediction.regions)
            override = float(self.get_parameter("threshold").value)
            if override >= 0.0 and override != threshold:
                from mentor3ad.regions import extract_regions

                threshold = override
                is_anomalous = score > threshold
                regions = extract_regions(prediction.anomaly_map, threshold, xyz) if is_anomalous else []
            self._count("failed" if is_anomalous else "passed")
            self._publish_result(pair, FAIL if is_anomalous else PASS, score=score, threshold=threshold,
                                 model=identity, regions=regions)
            # map and overlay are volatile: with no matched subscriber nobody could receive them, so the
            # rendering and message building are skipped
            header = pair.image.header
            if self.get_parameter("publish_anomaly_map").value and self.map_pub.get_subscription_count() > 0:
                self.map_pub.publish(_image_msg(header, np.asarray(prediction.anomaly_map, np.float32), "32FC1"))
            if self.get_parameter("publish_overlay").value and self.overlay_pub.get_subscription_count() > 0:
                self.overlay_pub.publish(
                    _image_msg(header, overlay_bgr(rgb, prediction.anomaly_map, threshold, regions), "bgr8"))

        def _publish_result(self, pair: _Pair, verdict: str, **fields: Any) -> None:
            latency_ms = (time.monotonic() - pair.received) * 1e3
            fields.setdefault("model", self.model_identity)
            if verdict in (PASS, FAIL):
                self._count("processed")
                self._latencies_ms.append(latency_ms)
            name = f"{self.get_fully_qualified_name()}/result"
            self.result_pub.publish(build_result(pair.image.header, verdict, name, latency_ms=latency_ms, **fields))

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
                "enabled": str(self.enabled),
                "model": self.model_identity,
                "model_error": self.model_error,
                "device": self.device,
                "input_mode": self.input_mode,
                "queue_policy": self.queue_policy,
                "input_rate_hz": f"{rate:.2f}",
                "latency_p50_ms": f"{pct[50]:.1f}",
                "latency_p90_ms": f"{pct[90]:.1f}",
                "latency_p99_ms": f"{pct[99]:.1f}",
                "queued": str(len(self._queue)),
            }
            for key in ("received", "processed", "passed", "failed", "errored", "skipped", "dropped_stale"):
                values[key] = str(self._counts[key])
            status = DiagnosticStatus(level=level, name=f"{self.get_fully_qualified_name()}: inspector",
                                      message=message, hardware_id=self.model_identity,
                                      values=[KeyValue(key=k, value=v) for k, v in values.items()])
            array = DiagnosticArray(status=[status])
            array.header.stamp = self.get_clock().now().to_msg()
            self.diag_pub.publish(array)

        def stop(self) -> None:
            with self._queue_cv:
                self._stopping = True
                self._queue_cv.notify_all()
            self._worker.join(timeout=5.0)

    return InspectorNode



def spin_node(node_factory, argv: Optional[List[str]], prog: str = "inspector_node") -> int:
    """Main loop: init rclpy (local discovery), spin a single-threaded executor, clean shutdown.

    Inference runs on the node's own worker thread, so every executor callback is short. A
    MultiThreadedExecutor was measured to go into a GIL-holding busy loop under sim time (/clock at
    100 Hz), starving the inference thread (pair latency 0.33 s -> 10+ s); a single thread does not.
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    configure_local_discovery()
    rclpy.init(args=argv)
    node = None
    try:
        try:
            node = node_factory()
        except ValueError as exc:  # configuration errors: a clear message, no traceback
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return 2
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            if hasattr(node, "stop"):
                node.stop()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    parse_node_help(argv, "inspector_node",
                    "Mentor3AD inspector: subscribes image + points (or depth + camera_info), publishes "
                    "~/result, ~/anomaly_map, ~/overlay and /diagnostics. ROS arguments follow --ros-args.",
                    INSPECTOR_PARAMETERS)
    return spin_node(_make_node_class(), argv)


if __name__ == "__main__":
    sys.exit(main())
