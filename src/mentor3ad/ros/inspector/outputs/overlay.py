"""``~/overlay``: the anomaly map as a heat map over the image (threshold at mid-scale), regions boxed (bgr8,
PASS / FAIL only), rendered only while someone subscribes."""
from __future__ import annotations

from typing import Any

import numpy as np

from ....eval.visualize import threshold_overlay
from ....types import InspectionResult
from ...messages import image_from_array
from ...params import ParamSpec
from ..part import JudgedPart
from . import ViewOutput, register_output


def overlay_message(result: InspectionResult, rgb: np.ndarray, header: Any):
    """sensor_msgs/Image bgr8 of :func:`~mentor3ad.eval.visualize.threshold_overlay` over ``rgb`` (H, W, 3)."""
    overlay = threshold_overlay(rgb, result.anomaly_map, result.threshold, result.regions)
    return image_from_array(header, np.ascontiguousarray(overlay[..., ::-1]), "bgr8")


@register_output
class Overlay(ViewOutput):
    """``~/overlay`` (sensor_msgs/Image, history 10)."""

    name, order, switch = "overlay", 20, "publish_overlay"
    PARAMETERS = [ParamSpec("publish_overlay", True, "Publish ~/overlay (bgr8 heat map blended over the image, "
                            "regions boxed) while it has subscribers (not rendered otherwise).")]

    def __init__(self, node: Any) -> None:
        super().__init__(node)
        from sensor_msgs.msg import Image

        self.publisher = node.create_publisher(Image, "~/overlay", 10)

    def message(self, part: JudgedPart):
        return overlay_message(part.result, part.rgb, part.header)
