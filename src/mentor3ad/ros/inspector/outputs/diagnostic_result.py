"""``~/result``: one ``diagnostic_msgs/DiagnosticArray`` per part, the inspector's first result form (standard
message packages only; encoding and decoding in :mod:`mentor3ad.ros.result_codec`). Published reliably with a
deep history, for every part: a matched ``~/result`` subscription is how a client knows the node is ready."""
from __future__ import annotations

from typing import Any

from ...result_codec import encode
from ..part import JudgedPart
from . import Output, register_output


@register_output
class DiagnosticResult(Output):
    """``~/result`` (DiagnosticArray)."""

    name = "result"
    order = 0

    def __init__(self, node: Any) -> None:
        super().__init__(node)
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        self.status_name = f"{node.get_fully_qualified_name()}/result"
        self.publisher = node.create_publisher(DiagnosticArray, "~/result",
                                               QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))

    def publish(self, part: JudgedPart) -> None:
        self.publisher.publish(encode(part.result, part.header, self.status_name))
