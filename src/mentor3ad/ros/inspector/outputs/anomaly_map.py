"""``~/anomaly_map``: the part's anomaly map as a 32FC1 image at the input resolution (PASS / FAIL only),
built only while someone subscribes."""
from __future__ import annotations

from typing import Any

import numpy as np

from ....types import InspectionResult
from ...messages import image_from_array
from ...params import ParamSpec
from ..part import JudgedPart
from . import ViewOutput, register_output


def map_message(result: InspectionResult, header: Any):
    """sensor_msgs/Image 32FC1 of ``result.anomaly_map`` (H, W) with the input image's ``header``."""
    return image_from_array(header, np.asarray(result.anomaly_map, np.float32), "32FC1")


@register_output
class AnomalyMap(ViewOutput):
    """``~/anomaly_map`` (sensor_msgs/Image, reliable, history 20)."""

    name, order, switch = "anomaly_map", 10, "publish_anomaly_map"
    PARAMETERS = [ParamSpec("publish_anomaly_map", True, "Publish ~/anomaly_map (32FC1, input resolution) while it "
                            "has subscribers.")]

    def __init__(self, node: Any) -> None:
        super().__init__(node)
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        self.publisher = node.create_publisher(Image, "~/anomaly_map",
                                               QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE))

    def message(self, part: JudgedPart):
        return map_message(part.result, part.header)
