"""Trainer node: train a detector from rosbag2 recordings of good parts, write it atomically, exit.

    ros2 run mentor3ad trainer_node --ros-args -p bag_paths:="['/bags/good']" -p output_model_path:=/models/m.safetensors

Pairs image and 3D data by header stamp, trains, calibrates the threshold on held-out good pairs
(``val_bag_paths``, else the last ``val_fraction`` of the pairs) and saves: :func:`mentor3ad.jobs.train_from_bags`,
the same job as ``mentor3ad train --bag``. Optionally asks a running inspector to reload
(``reload_service``). Progress goes to the log and to ``~/progress`` (diagnostic_msgs/DiagnosticStatus:
message = stage text, values = stage, elapsed_s, ...). Exit code 0 on success, 1 when training failed
(the reason is logged and published). It yields the CPU to an inspector on the same machine: its budget
(``threads`` 1, ``nice`` +19, :mod:`mentor3ad.cpu_budget`) is applied before torch is imported.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from ...errors import ConfigError
from ...io.inputs import INPUT_MODES, TOPICS, input_mode_help
from .. import configure_local_discovery, log_outcome
from ..params import (ParamSpec, cpu_budget_parameters, declare_parameters, parse_node_help, topic_parameters,
                      topics_from_parameters)
from . import apply_cpu_budget, deliver_before_exit

# the CPU budget beside a running inspector on the same cores (README "Speed and memory": thread budgets)
TRAINER_THREADS = 1
TRAINER_NICE = 19  # the lowest priority; against 10: README "Speed and memory", thread budgets
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
    ParamSpec("input_mode", "points", f"3D data in the recordings: {input_mode_help()}.", read_only=True),
    *topic_parameters([key for key in TOPICS if key in {k for m in INPUT_MODES.values() for k in m.keys}]),
    ParamSpec("sync_slop", 0.02, "Largest stamp difference (seconds) between an image and its 3D data.",
              read_only=True),
    ParamSpec("device", "auto", "Training device: auto (cuda when available, else cpu), cpu, cuda or cuda:N.",
              read_only=True),
    ParamSpec("cache_dir", "", "Feature cache directory (empty: no cache).", read_only=True),
    *cpu_budget_parameters(TRAINER_THREADS, TRAINER_NICE, "the training"),
    ParamSpec("reload_service", "", "~/reload_model service of a running inspector, e.g. /inspector/reload_model "
              "(empty: none): once the model is written, the inspector's model_path is set to it and the "
              "service is called; a refused swap is a failure (exit 1).", read_only=True),
]


def _paths(values: Sequence[str]) -> List[str]:
    return [v for v in (values or []) if v and v.strip()]


class TrainerNode(Node):
    """See the module docstring and the README (Nodes -> trainer_node)."""

    def __init__(self, **kwargs) -> None:
        super().__init__("trainer", **kwargs)
        self.p = declare_parameters(self, TRAINER_PARAMETERS)
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
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
        p = self.p
        self.cpu_budget = apply_cpu_budget(self, p)  # before torch is imported (OMP_WAIT_POLICY)
        from ...jobs import train_from_bags
        from ..inspector import resolve_device

        try:
            self.stage = "training"
            detector = train_from_bags(
                _paths(p["bag_paths"]), p["output_model_path"], val_bag_paths=_paths(p["val_bag_paths"]),
                val_fraction=float(p["val_fraction"]), config_file=p["config_file"], input_mode=p["input_mode"],
                topics=topics_from_parameters(p), slop_ns=int(round(float(p["sync_slop"]) * 1e9)),
                device=resolve_device(p["device"])[0], cache_dir=p["cache_dir"], log=self.report)
        except Exception as exc:  # noqa: BLE001 - every failure is reported with its reason, then exit 1
            self.stage = "failed"
            self.report(f"training failed: {type(exc).__name__}: {exc}", DiagnosticStatus.ERROR)
            return 1
        self.stage = "done"
        self.report(f"model written to {p['output_model_path']}", model=detector.model_id,
                    threshold=detector.threshold, model_path=p["output_model_path"])
        if p["reload_service"]:
            return self.request_reload(p["reload_service"], str(Path(p["output_model_path"]).resolve()))
        return 0

    def request_reload(self, service: str, model_path: str, discovery_s: float = 20.0, answer_s: float = 180.0) -> int:
        """Hand ``model_path`` to the inspector owning ``service``: set its model_path parameter, call its
        reload service; 0 when it swapped the model in, 1 (logged at ERROR) otherwise."""
        import rclpy
        from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters
        from std_srvs.srv import Trigger

        if not service.endswith("/reload_model"):
            self.report(f"reload_service {service!r} must name an inspector's ~/reload_model service",
                        DiagnosticStatus.ERROR)
            return 1
        inspector = service[: -len("/reload_model")]

        def call(srv_type, name, request):
            client = self.create_client(srv_type, name)
            if not client.wait_for_service(timeout_sec=discovery_s):
                return None, f"{name} not available after {discovery_s:g} s"
            future = client.call_async(request)
            rclpy.spin_until_future_complete(self, future, timeout_sec=answer_s)
            return future.result(), "no answer" if future.result() is None else ""

        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(model_path))
        answer, problem = call(SetParameters, f"{inspector}/set_parameters",
                               SetParameters.Request(parameters=[Parameter(name="model_path", value=value)]))
        if answer is not None and not answer.results[0].successful:
            problem = f"{inspector} refused model_path: {answer.results[0].reason}"
        if not problem:
            answer, problem = call(Trigger, service, Trigger.Request())
            if answer is not None and not answer.success:
                problem = f"{service} refused the model: {answer.message}"
        if problem:
            self.stage = "swap failed"
            self.report(f"the new model was written but not swapped in: {problem}", DiagnosticStatus.ERROR)
            return 1
        self.report(f"{service}: {answer.message}")
        return 0


def main(argv: Optional[List[str]] = None) -> int:
    import rclpy

    argv = list(sys.argv if argv is None else argv)
    parse_node_help(argv, "trainer_node", "Mentor3AD trainer: rosbag2 recordings of good parts -> model file.",
                    TRAINER_PARAMETERS)
    configure_local_discovery()
    rclpy.init(args=argv)
    try:
        node = TrainerNode()
    except ConfigError as exc:  # a parameter of the wrong type or value: one line, exit 2
        print(f"trainer_node: error: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    try:
        code = node.run()
        deliver_before_exit(node, [node.progress_pub])  # the last progress message (the outcome) reaches its readers
    except KeyboardInterrupt:
        code = 130
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
