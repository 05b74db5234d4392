"""Trainer node: train a detector from rosbag2 recordings of good parts, write it atomically, exit.

    ros2 run mentor3ad trainer_node --ros-args -p bag_paths:="['/bags/good']" -p output_model_path:=/models/m.m3ad

Pairs image and cloud (or depth + camera_info) by header stamp (:func:`mentor3ad.data.bags.read_bag_samples`),
trains (:func:`mentor3ad.training.train_detector`), calibrates the threshold on held-out good pairs
(``val_bag_paths``, else the last ``val_fraction`` of the pairs), saves, and optionally asks a
running inspector to reload (``reload_service``). Progress goes to the log and to ``~/progress``
(diagnostic_msgs/DiagnosticStatus: message = stage text, values = stage, elapsed_s, ...).
Exit code 0 on success, 1 when training failed (the reason is logged and published).
"""
from __future__ import annotations

import sys
import time
from typing import Callable, List, Optional, Sequence

from mentor3ad.ros import log_outcome
from mentor3ad.ros.params import ParamSpec, declare_parameters, parse_node_help

TRAINER_PARAMETERS = [
    ParamSpec("bag_paths", [""], "rosbag2 recordings (directories, sqlite3 or mcap) of good parts to train on.",
              read_only=True),
    ParamSpec("val_bag_paths", [""], "Held-out recordings of good parts for threshold calibration (empty: "
              "hold out the last val_fraction of the training pairs).", read_only=True),
    ParamSpec("val_fraction", 0.2, "Share of the training pairs held out for calibration when val_bag_paths "
              "is empty (at least one pair when there are two or more).", read_only=True),
    ParamSpec("output_model_path", "", "Model file to write (atomically: temporary file + rename).", read_only=True),
    ParamSpec("config_file", "", "Mentor3AD model/training config YAML (empty: the packaged config/model.yaml).",
              read_only=True),
    ParamSpec("input_mode", "points", "3D data in the recordings: points (organized PointCloud2) or depth "
              "(depth Image + CameraInfo).", read_only=True),
    ParamSpec("image_topic", "/camera/image", "Image topic in the recordings.", read_only=True),
    ParamSpec("points_topic", "/camera/points", "Organized cloud topic in the recordings (input_mode points).",
              read_only=True),
    ParamSpec("depth_topic", "/camera/depth", "Depth image topic in the recordings (input_mode depth).",
              read_only=True),
    ParamSpec("camera_info_topic", "/camera/camera_info", "CameraInfo topic in the recordings (input_mode depth).",
              read_only=True),
    ParamSpec("sync_slop", 0.02, "Largest stamp difference (seconds) between an image and its cloud/depth.",
              read_only=True),
    ParamSpec("device", "auto", "Training device: auto (cuda when available, else cpu), cpu, cuda or cuda:N.",
              read_only=True),
    ParamSpec("cache_dir", "", "Feature cache directory (empty: no cache).", read_only=True),
    ParamSpec("reload_service", "", "std_srvs/Trigger service of a running inspector to call once the model is "
              "written, e.g. /inspector/reload_model (empty: none).", read_only=True),
]


def _paths(values: Sequence[str]) -> List[str]:
    return [v for v in (values or []) if v and v.strip()]


def train_from_bags(bag_paths: Sequence[str], output_model_path: str, *, val_bag_paths: Sequence[str] = (),
                    val_fraction: float = 0.2, config_file: str = "", input_mode: str = "points", topics=None,
                    slop_ns: int = 20_000_000, device: str = "cpu", cache_dir: str = "",
                    log: Callable[[str], None] = print):
    """Read good pairs from bags, train, calibrate, save atomically; returns the Detector (no ROS needed)."""
    from mentor3ad.config import Mentor3ADConfig, default_config_path
    from mentor3ad.data.bags import read_good_parts
    from mentor3ad.training import train_detector

    if not bag_paths:
        raise ValueError("no training recordings: set bag_paths")
    if not output_model_path:
        raise ValueError("output_model_path is empty")
    config = Mentor3ADConfig.from_yaml(config_file or default_config_path())
    log(f"reading {len(bag_paths)} recording(s): {', '.join(map(str, bag_paths))}")
    train, val = read_good_parts(bag_paths, val_bag_paths, val_fraction, topics, input_mode, slop_ns)
    log(f"training on {len(train)} pairs, calibrating on {len(val)} held-out pairs, device {device}")
    started = time.monotonic()
    detector = train_detector(train, config, val or None, cache_dir=cache_dir or None, device=device,
                              progress=False, log=log)
    detector.training_info.update(bags=[str(p) for p in bag_paths], val_bags=[str(p) for p in val_bag_paths])
    path = detector.save(output_model_path)
    log(f"model {detector.model_id} (threshold {detector.threshold:.6g}) written to {path} "
        f"after {time.monotonic() - started:.1f} s")
    return detector


def _make_node_class():
    from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    class TrainerNode(Node):
        def __init__(self, **kwargs) -> None:
            super().__init__("trainer", **kwargs)
            self.p = declare_parameters(self, TRAINER_PARAMETERS)
            qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
            self.progress_pub = self.create_publisher(DiagnosticStatus, "~/progress", qos)
            self.started = time.monotonic()
            self.stage = "start"

        def report(self, text: str, level: bytes = DiagnosticStatus.OK, **values: object) -> None:
            log_outcome(self.get_logger(), level != DiagnosticStatus.ERROR, text)
            fields = {"stage": self.stage, "elapsed_s": f"{time.monotonic() - self.started:.1f}"}
            fields.update({k: str(v) for k, v in values.items()})
            self.progress_pub.publish(DiagnosticStatus(
                level=level, name=f"{self.get_fully_qualified_name()}: training", message=text,
                values=[KeyValue(key=k, value=v) for k, v in fields.items()]))

        def run(self) -> int:
            from mentor3ad.data.bags import BagTopics
            from mentor3ad.ros.inspector_node import resolve_device

            p = self.p
            try:
                device = resolve_device(p["device"])
                topics = BagTopics(image=p["image_topic"], points=p["points_topic"], depth=p["depth_topic"],
                                   camera_info=p["camera_info_topic"])
                self.stage = "training"
                detector = train_from_bags(
                    _paths(p["bag_paths"]), p["output_model_path"], val_bag_paths=_paths(p["val_bag_paths"]),
                    val_fraction=float(p["val_fraction"]), config_file=p["config_file"],
                    input_mode=p["input_mode"], topics=topics, slop_ns=int(round(float(p["sync_slop"]) * 1e9)),
                    device=device, cache_dir=p["cache_dir"], log=self.report)
            except Exception as exc:  # every failure is reported with its reason, then exit 1
                self.stage = "failed"
                self.report(f"training failed: {type(exc).__name__}: {exc}", DiagnosticStatus.ERROR)
                return 1
            self.stage = "done"
            self.report(f"model written to {p['output_model_path']}", model=detector.model_id,
                        threshold=detector.threshold, model_path=p["output_model_path"])
            if p["reload_service"]:
                return self.request_reload(p["reload_service"])
            return 0

        def request_reload(self, service: str, timeout: float = 30.0) -> int:
            import rclpy
            from std_srvs.srv import Trigger

            client = self.create_client(Trigger, service)
            if not client.wait_for_service(timeout_sec=timeout):
                self.report(f"reload service {service} not available", DiagnosticStatus.WARN)
                return 0
            future = client.call_async(Trigger.Request())
            rclpy.spin_until_future_complete(self, future, timeout_sec=timeout)
            result = future.result()
            if result is None or not result.success:
                self.report(f"{service} refused the model: {getattr(result, 'message', 'no answer')}",
                            DiagnosticStatus.WARN)
            else:
                self.report(f"{service}: {result.message}")
            return 0

    return TrainerNode


def main(argv: Optional[List[str]] = None) -> int:
    import rclpy

    from mentor3ad.ros import configure_local_discovery

    argv = list(sys.argv if argv is None else argv)
    parse_node_help(argv, "trainer_node", "Mentor3AD trainer: rosbag2 recordings of good parts -> model file.",
                    TRAINER_PARAMETERS)
    configure_local_discovery()
    rclpy.init(args=argv)
    node = _make_node_class()()
    try:
        code = node.run()
        time.sleep(0.3)  # let the last progress message go out
    except KeyboardInterrupt:
        code = 130
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
