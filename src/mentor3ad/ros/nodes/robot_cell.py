"""Robot-cell example (``robot_cell_example``): a robot program that has each part it places inspected and sorts
it by the verdict, the integrator's starting point (README: Robot-cell integration).

For each of ``parts`` parts (part_id ``part_prefix`` + number): "place" the part (wait ``place_s``), send an
``InspectPart`` goal to the inspector's ``~/inspect`` action, wait for its result (the goal's timeout plus
``ANSWER_MARGIN_S``; a goal whose acceptance does not arrive is sent once more, a goal the inspector never
answers is cancelled and counts as ERROR), then sort:

* ``~/reject`` (std_msgs/Bool, reliable): the line to the PLC, true = reject this part; only a PASS is false
  (FAIL, ERROR and SKIPPED parts are rejected: a part is never passed without a PASS verdict);
* ``~/pass_bin`` / ``~/reject_bin`` (std_msgs/String): the part_id of each part put into that bin;
* one log line per part: verdict, score / threshold, the stamp of the image that was judged, the bin, the
  reason of an ERROR.

Exit code 0 once every part is sorted, 1 when the inspector's action server did not appear within
``server_timeout`` seconds. With ``trigger_mode: request`` on the inspector only these parts are judged.
"""
from __future__ import annotations

import sys
import time
from typing import Any, List, Optional, Tuple

from rclpy.action import ActionClient
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import Bool, String

from ...types import InspectionResult, Verdict
from ..inspection_codec import decode
from ..params import ParamSpec, declare_parameters, parse_node_help
from . import DestroysWaitables, deliver_before_exit, run_node

ANSWER_MARGIN_S = 10.0  # beyond the goal's timeout: the inspector answers every goal, this only guards a lost node
ACCEPT_WAIT_S = 5.0  # per try: a goal's acceptance normally arrives in milliseconds
SEND_TRIES = 2  # a lost acceptance (a DDS reply dropped during discovery) is re-sent once; the inspector lets
# the newer goal for the same part_id supersede the earlier one, so the part is never judged twice
MAX_TIMEOUT_S = 3600.0  # the longest timeout an inspector accepts
STAGES = {1: "waiting for camera data", 2: "image captured (the part may move)", 3: "inspecting"}

ROBOT_PARAMETERS = [
    ParamSpec("parts", 5, "Parts to inspect and sort, one InspectPart goal each, one after the other.",
              read_only=True, minimum=1),
    ParamSpec("part_prefix", "part-", "part_id of part i: this prefix + i with three digits (part-001, ...).",
              read_only=True),
    ParamSpec("inspect_action", "/inspector/inspect", "The inspector's InspectPart action server.", read_only=True),
    ParamSpec("timeout_s", 10.0, "timeout_s of each goal: seconds for camera data and the verdict (0: the "
              "inspector's inspect_timeout; the robot then waits up to an hour).", read_only=True, minimum=0.0),
    ParamSpec("server_timeout", 120.0, "Seconds to wait for the action server (the inspector loads its model "
              "first); exit 1 after that.", read_only=True, minimum=0.0),
    ParamSpec("place_s", 0.0, "Seconds the robot takes to place the next part before it asks for the inspection "
              "(simulated motion).", read_only=True, minimum=0.0),
]


class RobotCellExample(DestroysWaitables, Node):
    """The robot program (see the module docstring): :meth:`inspect` one part, :meth:`sort` it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("robot_cell", **kwargs)
        from mentor3ad_interfaces.action import InspectPart

        self.action = InspectPart
        self.p = declare_parameters(self, ROBOT_PARAMETERS)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.reject_line = self.create_publisher(Bool, "~/reject", reliable)
        self.bins = {name: self.create_publisher(String, f"~/{name}_bin", reliable) for name in ("pass", "reject")}
        self.client = ActionClient(self, InspectPart, self.p["inspect_action"])
        self.sorted: List[Tuple[str, str, InspectionResult]] = []  # (part_id, bin, result)

    def inspect(self, executor: Any, part_id: str) -> InspectionResult:
        """Ask the inspector to inspect ``part_id``; its result (ERROR with the reason when no answer came)."""
        goal = self.action.Goal(part_id=part_id, timeout_s=float(self.p["timeout_s"]))
        feedback = lambda msg: self.get_logger().info(  # noqa: E731
            f"{part_id}: {STAGES.get(msg.feedback.stage, msg.feedback.stage)}")
        for attempt in range(1, SEND_TRIES + 1):
            sent = self.client.send_goal_async(goal, feedback_callback=feedback)
            if _spin_until(executor, sent.done, ACCEPT_WAIT_S):
                break
            self.get_logger().warning(f"{part_id}: no acceptance of the goal within {ACCEPT_WAIT_S:g} s (try "
                                      f"{attempt} of {SEND_TRIES})")
        if not sent.done() or not sent.result().accepted:
            return InspectionResult.error("the inspector did not accept the goal", part_id=part_id)
        answer = sent.result().get_result_async()
        timeout = (float(self.p["timeout_s"]) or MAX_TIMEOUT_S) + ANSWER_MARGIN_S
        if not _spin_until(executor, answer.done, timeout):
            sent.result().cancel_goal_async()
            return InspectionResult.error(f"no answer from the inspector within {timeout:g} s", part_id=part_id)
        return decode(answer.result().result.result)

    def sort(self, part_id: str, result: InspectionResult) -> str:
        """Put the part into its bin: the PLC's reject line, the bin topic, a log line; returns the bin."""
        passed = result.verdict is Verdict.PASS
        bin_name = "pass" if passed else "reject"
        self.reject_line.publish(Bool(data=not passed))
        self.bins[bin_name].publish(String(data=part_id))
        stamp = f"{result.stamp_ns / 1e9:.3f} s" if result.stamp_ns else "none"
        why = f": {result.reason}" if result.reason else ""
        self.get_logger().info(f"{part_id}: {result.verdict.value} (score {result.score:.4g}, threshold "
                               f"{result.threshold:.4g}, image stamped {stamp}) -> {bin_name} bin{why}")
        self.sorted.append((part_id, bin_name, result))
        return bin_name


def _spin_until(executor: Any, done: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.1)
    return bool(done())


def run_cell(executor: Any, node: RobotCellExample) -> int:
    """The robot program: wait for the inspector, then inspect and sort every part; the exit code."""
    log = node.get_logger()
    log.info(f"waiting for the inspector's {node.p['inspect_action']} action ...")
    if not _spin_until(executor, node.client.server_is_ready, float(node.p["server_timeout"])):
        log.error(f"no {node.p['inspect_action']} action server within {node.p['server_timeout']:g} s: is the "
                  "inspector running (and ready: model loaded)?")
        return 1
    for number in range(1, int(node.p["parts"]) + 1):
        part_id = f"{node.p['part_prefix']}{number:03d}"
        _spin_until(executor, lambda: False, float(node.p["place_s"]))  # the robot places the part
        node.sort(part_id, node.inspect(executor, part_id))
    counts = {name: sum(1 for _, b, _ in node.sorted if b == name) for name in ("pass", "reject")}
    errors = sum(1 for _, _, r in node.sorted if not r.verdict.is_decision)
    log.info(f"{len(node.sorted)} parts sorted: {counts['pass']} pass, {counts['reject']} reject "
             f"({errors} without a PASS/FAIL verdict)")
    deliver_before_exit(node, [node.reject_line, *node.bins.values()])  # the PLC must get the last part's line
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    parse_node_help(argv, "robot_cell_example", "Robot-cell example: inspect each placed part through the "
                    "inspector's ~/inspect action and sort it by the verdict.", ROBOT_PARAMETERS)
    return run_node(RobotCellExample, argv, "robot_cell_example", loop=run_cell)


if __name__ == "__main__":
    sys.exit(main())
