"""``~/markers``: defect regions as ``visualization_msgs/MarkerArray`` for RViz, in the cloud's frame, built
only while someone subscribes (PASS / FAIL only).

Per region with a 3D centroid: a translucent red CUBE at the centroid, sized by the region's 3D extent
(at least ``MIN_SIZE_M`` per axis), and a TEXT_VIEW_FACING label with the region's peak score above it.
Every array starts with a DELETEALL marker, so a PASS (no region) clears what the last FAIL showed.
"""
from __future__ import annotations

import math
from typing import Any

from ....types import InspectionResult
from ...params import ParamSpec
from ..part import JudgedPart
from . import ViewOutput, register_output

NAMESPACE = "mentor3ad_regions"
MIN_SIZE_M = 0.002


def region_markers(result: InspectionResult, header: Any):
    """The MarkerArray for ``result`` (regions of a FAIL; only a clear for anything else)."""
    from visualization_msgs.msg import Marker, MarkerArray

    clear = Marker(header=header, ns=NAMESPACE, action=Marker.DELETEALL)
    markers = [clear]
    for index, region in enumerate(result.regions):
        if not all(math.isfinite(c) for c in region.centroid_xyz):
            continue
        size = [max(MIN_SIZE_M, e) if math.isfinite(e) else MIN_SIZE_M for e in region.extent_xyz]
        box = Marker(header=header, ns=NAMESPACE, id=2 * index, type=Marker.CUBE, action=Marker.ADD)
        box.pose.position.x, box.pose.position.y, box.pose.position.z = region.centroid_xyz
        box.pose.orientation.w = 1.0
        box.scale.x, box.scale.y, box.scale.z = size
        box.color.r, box.color.g, box.color.b, box.color.a = 1.0, 0.1, 0.1, 0.6
        label = Marker(header=header, ns=NAMESPACE, id=2 * index + 1, type=Marker.TEXT_VIEW_FACING,
                       action=Marker.ADD, text=f"{region.peak_score:.3g}")
        label.pose.position.x, label.pose.position.y = region.centroid_xyz[0], region.centroid_xyz[1]
        label.pose.position.z = region.centroid_xyz[2] - size[2] / 2 - 0.004  # toward the camera (optical frame)
        label.pose.orientation.w = 1.0
        label.scale.z = 0.004
        label.color.r = label.color.g = label.color.b = label.color.a = 1.0
        markers += [box, label]
    return MarkerArray(markers=markers)


@register_output
class Markers(ViewOutput):
    """``~/markers`` (MarkerArray, history 10) in the frame of the part's 3D message."""

    name, order, switch = "markers", 30, "publish_markers"
    PARAMETERS = [ParamSpec("publish_markers", True, "Publish ~/markers (visualization_msgs/MarkerArray: a box and "
                            "a score label per defect region in the cloud's frame, for RViz) while it has "
                            "subscribers.")]

    def __init__(self, node: Any) -> None:
        super().__init__(node)
        from visualization_msgs.msg import MarkerArray

        self.publisher = node.create_publisher(MarkerArray, "~/markers", 10)

    def message(self, part: JudgedPart):
        return region_markers(part.result, part.header_3d)


__all__ = ["region_markers", "NAMESPACE", "Markers"]
