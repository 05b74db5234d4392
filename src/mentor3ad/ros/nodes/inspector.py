"""Inspector node: synchronized image + 3D data (an input mode of :mod:`mentor3ad.io.inputs`) -> one verdict
per part. The behaviour lives in :class:`mentor3ad.ros.inspector.Inspector` (composed of parts: model,
intake, worker, outputs, health); this module has the two node forms and their console scripts:

* ``inspector_node`` (:class:`InspectorNode`): loads and self-tests the model (``model_path``), then
  subscribes: from the moment it listens, every part is answered (without a usable model: ERROR naming why).
* ``inspector_lifecycle_node`` (:class:`LifecycleInspectorNode`), a managed node: configure = create the
  outputs and load and self-test the model (refused model: the transition fails with the reason, the
  outputs go again), activate = subscribe, deactivate = unsubscribe, cleanup = drop the model and destroy
  the outputs (``~/result``, the "ready" signal, goes with the model; /diagnostics says WARN
  "unconfigured"). ``autostart:=true`` configures and activates at start-up (otherwise a lifecycle
  manager / ``ros2 lifecycle set`` drives it).

Topics, services and parameters: README (Nodes -> inspector_node) and ``INSPECTOR_PARAMETERS``.
"""
from __future__ import annotations

import sys
import time
from typing import Any, List, Optional

from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.node import Node

from ...errors import ConfigError
from ...io.inputs import INPUT_MODES
from ..inspector import INSPECTOR_PARAMETERS, Inspector
from ..params import ParamSpec, declare_parameters, parse_node_help
from . import DestroysWaitables, apply_cpu_budget, run_node

LIFECYCLE_PARAMETERS = [
    ParamSpec("autostart", False, "Configure (load + self-test the model) and activate (subscribe) at start-up "
              "instead of waiting for lifecycle transitions.", read_only=True),
]
DESCRIPTION = ("Mentor3AD inspector: subscribes image + 3D data (" + ", ".join(INPUT_MODES) + "), publishes "
               "~/inspection (typed result), ~/result (legacy), ~/anomaly_map, ~/overlay, ~/markers and "
               "/diagnostics, serves the ~/inspect action (inspection on request). ROS arguments follow --ros-args.")


class InspectorNode(DestroysWaitables, Node):
    """The inspector as a plain node (see the module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("inspector", **kwargs)
        self.inspector = inspector = Inspector(self)
        self.cpu_budget = apply_cpu_budget(self, inspector.p)  # before the model's first inference
        inspector.model.load_now(inspector.p["model_path"], "start-up (parameter model_path)")  # before the outputs:
        # a matched ~/result means "ready"
        inspector.create_outputs()
        inspector.start_listening()
        worker = inspector.worker
        self.get_logger().info(
            f"inspector ready: input_mode={inspector.mode.name}, input_reliability="
            f"{inspector.p['input_reliability']}, device={inspector.model.device}, queue_policy={worker.policy} "
            f"(size {worker.queue_size}, batch {worker.batch_size}), model="
            f"{inspector.model.slot.current()[1] or 'none'}, {time.monotonic() - inspector.started:.1f} s after start")

    def stop(self) -> None:
        self.inspector.stop()


class LifecycleInspectorNode(DestroysWaitables, LifecycleNode):
    """The inspector as a managed (lifecycle) node (see the module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("inspector", **kwargs)
        self.inspector = Inspector(self)
        self.cpu_budget = apply_cpu_budget(self, self.inspector.p)
        self.autostart = declare_parameters(self, LIFECYCLE_PARAMETERS)["autostart"]
        self.inspector.unconfigured = True
        if self.autostart:
            self.trigger_configure()
            self.trigger_activate()

    def on_configure(self, state) -> TransitionCallbackReturn:
        try:
            self.inspector.create_outputs()
        except ConfigError as exc:  # e.g. contradicting output parameters: rclpy would fail it silently
            self.get_logger().error(f"cannot configure: {exc}")
            self.inspector.destroy_outputs(f"unconfigured (configure failed: {exc})")
            return TransitionCallbackReturn.FAILURE
        outcome = self.inspector.model.load_now(self.get_parameter("model_path").value, "lifecycle configure")
        if not outcome.ok:  # no model: the outputs (~/result = "ready") go again
            self.inspector.destroy_outputs("unconfigured (configure failed: no model)")
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        self.inspector.start_listening()
        self.get_logger().info(f"inspector active: listening to {', '.join(self.inspector.mode.keys)}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self.inspector.stop_listening()
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self.inspector.stop_listening()
        self.inspector.destroy_outputs("unconfigured (lifecycle cleanup)")  # after the worker answered its pairs
        self.inspector.model.slot.clear("no model loaded: unconfigured (lifecycle cleanup)")
        self.get_logger().warning("cleaned up: model unloaded, outputs destroyed (configure to serve again)")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self.inspector.stop_listening()
        return TransitionCallbackReturn.SUCCESS

    def stop(self) -> None:
        self.inspector.stop()


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    parse_node_help(argv, "inspector_node", DESCRIPTION, INSPECTOR_PARAMETERS)
    return run_node(InspectorNode, argv, "inspector_node", dds_profile=True)


def lifecycle_main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    parse_node_help(argv, "inspector_lifecycle_node", DESCRIPTION + " Managed (lifecycle) node.",
                    INSPECTOR_PARAMETERS + LIFECYCLE_PARAMETERS)
    return run_node(LifecycleInspectorNode, argv, "inspector_lifecycle_node", dds_profile=True)


if __name__ == "__main__":
    sys.exit(main())
