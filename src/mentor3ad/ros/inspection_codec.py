"""The inspector's typed result: :class:`~mentor3ad.types.InspectionResult` <->
``mentor3ad_interfaces/msg/InspectionResult`` (published on ``~/inspection`` and answered by the ``~/inspect``
action). Field by field::

    header          = the judged image's header (zero stamp when no image was judged: a goal that timed out)
    part_id         = result.part_id
    verdict         = InspectionResult.PASS | FAIL | ERROR | SKIPPED (uint8 constants; 0 = UNKNOWN, never sent)
    reason, score, threshold, model_id, latency_ms = the result's (NaN score / threshold when not computed)
    cloud_frame_id, cloud_stamp = the 3D message's header (the frame of the regions' 3D values; empty / zero
                      when the part has no 3D message)
    regions[i]      = DefectRegion: bbox (RegionOfInterest: x_offset = x_min, y_offset = y_min, width =
                      x_max - x_min + 1, height = y_max - y_min + 1; the core's bbox is inclusive), area_px,
                      area_mm2, centroid (Point, m) and extent (Vector3, m) in cloud_frame_id (NaN without valid
                      3D points), peak_score

:func:`decode` is the inverse (``stamp_ns`` / ``frame_id`` from the header; the cloud frame is not a core
field). ``mentor3ad_interfaces`` is imported when called, never at import time.
"""
from __future__ import annotations

from typing import Any, Optional

from ..errors import InputError
from ..io.msgconv import ns_to_stamp, stamp_to_ns
from ..types import InspectionResult, Region, Verdict


def encode(result: InspectionResult, header: Any, header_3d: Optional[Any] = None):
    """InspectionResult -> mentor3ad_interfaces/msg/InspectionResult; ``header``: the judged image's
    std_msgs/Header (None: zero stamp, empty frame), ``header_3d``: the 3D message's header or None."""
    from geometry_msgs.msg import Point, Vector3
    from mentor3ad_interfaces.msg import DefectRegion
    from mentor3ad_interfaces.msg import InspectionResult as ResultMsg
    from sensor_msgs.msg import RegionOfInterest

    msg = ResultMsg(part_id=result.part_id, verdict=getattr(ResultMsg, Verdict(result.verdict).value),
                    reason=result.reason, score=float(result.score), threshold=float(result.threshold),
                    model_id=result.model_id, latency_ms=float(result.latency_ms))
    if header is not None:
        msg.header = header
    if header_3d is not None:
        msg.cloud_frame_id, msg.cloud_stamp = header_3d.frame_id, header_3d.stamp
    msg.regions = [
        DefectRegion(bbox=RegionOfInterest(x_offset=int(r.bbox[0]), y_offset=int(r.bbox[1]),
                                           width=int(r.bbox[2]) - int(r.bbox[0]) + 1,
                                           height=int(r.bbox[3]) - int(r.bbox[1]) + 1),
                     area_px=int(r.area_px), area_mm2=float(r.area_mm2),
                     centroid=Point(x=float(r.centroid_xyz[0]), y=float(r.centroid_xyz[1]), z=float(r.centroid_xyz[2])),
                     extent=Vector3(x=float(r.extent_xyz[0]), y=float(r.extent_xyz[1]), z=float(r.extent_xyz[2])),
                     peak_score=float(r.peak_score))
        for r in result.regions]
    return msg


VERDICTS = {1: Verdict.PASS, 2: Verdict.FAIL, 3: Verdict.ERROR, 4: Verdict.SKIPPED}  # the message's constants


def decode(msg: Any) -> InspectionResult:
    """mentor3ad_interfaces/msg/InspectionResult -> InspectionResult (stamp_ns, frame_id from the header;
    stamp_ns None for a zero stamp: no image was judged); InputError for a verdict that is not one of the
    four (UNKNOWN: a message nobody filled in)."""
    verdict = VERDICTS.get(int(msg.verdict))
    if verdict is None:
        raise InputError(f"inspection result has verdict {int(msg.verdict)}: not PASS (1), FAIL (2), ERROR (3) or "
                         "SKIPPED (4)")
    stamp_ns = stamp_to_ns(msg.header.stamp)
    regions = [Region(bbox=(r.bbox.x_offset, r.bbox.y_offset, r.bbox.x_offset + r.bbox.width - 1,
                            r.bbox.y_offset + r.bbox.height - 1), area_px=int(r.area_px), area_mm2=float(r.area_mm2),
                      centroid_xyz=(r.centroid.x, r.centroid.y, r.centroid.z), peak_score=float(r.peak_score),
                      extent_xyz=(r.extent.x, r.extent.y, r.extent.z)) for r in msg.regions]
    return InspectionResult(verdict, score=float(msg.score), threshold=float(msg.threshold), reason=msg.reason,
                            regions=regions, model_id=msg.model_id, stamp_ns=stamp_ns or None,
                            frame_id=msg.header.frame_id, latency_ms=float(msg.latency_ms), part_id=msg.part_id)


def stamp(stamp_ns: int):
    """builtin_interfaces/Time of ``stamp_ns`` nanoseconds."""
    from builtin_interfaces.msg import Time

    sec, nanosec = ns_to_stamp(int(stamp_ns))
    return Time(sec=sec, nanosec=nanosec)


__all__ = ["encode", "decode", "stamp", "VERDICTS"]
