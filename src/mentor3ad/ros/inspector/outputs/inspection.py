"""``~/inspection``: one ``mentor3ad_interfaces/msg/InspectionResult`` per answered part, the inspector's typed
result (the documented one; ``~/result``, a DiagnosticArray, is the legacy form of the same answers). Fields
and units: :mod:`mentor3ad.ros.inspection_codec`. Published reliably with a deep history, like ``~/result``,
for every answered part (PASS / FAIL / ERROR / SKIPPED, with its part_id); in ``trigger_mode: request`` the
answered parts are those a goal asked for."""
from __future__ import annotations

from typing import Any

from ...inspection_codec import encode
from ..part import JudgedPart
from . import Output, register_output

HISTORY = 100  # results kept for a late or slow reliable reader


@register_output
class TypedResult(Output):
    """``~/inspection`` (mentor3ad_interfaces/msg/InspectionResult)."""

    name = "inspection"
    order = 1

    def __init__(self, node: Any) -> None:
        super().__init__(node)
        from mentor3ad_interfaces.msg import InspectionResult
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        self.publisher = node.create_publisher(InspectionResult, "~/inspection",
                                               QoSProfile(depth=HISTORY, reliability=ReliabilityPolicy.RELIABLE))

    def publish(self, part: JudgedPart) -> None:
        self.publisher.publish(encode(part.result, part.header, part.header_3d))


__all__ = ["TypedResult"]
