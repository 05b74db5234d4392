"""The inspector's ``~/result`` transport: :class:`~mentor3ad.types.InspectionResult` <->
``diagnostic_msgs/DiagnosticArray`` (standard message packages only). One message per part::

    header                 = the input image's header (stamp and frame_id of the pair)
    status[0].level        = OK (PASS), WARN (FAIL: defect found), ERROR (ERROR), STALE (SKIPPED)
    status[0].name         = "<node's fully qualified name>/result"
    status[0].message      = "PASS" | "FAIL" | "ERROR: <reason>" | "SKIPPED: <reason>"
    status[0].hardware_id  = model identity ("" when no model is loaded)
    status[0].values       = key/value strings:
        verdict      PASS | FAIL | ERROR | SKIPPED
        reason       why ERROR / SKIPPED ("" otherwise)
        score        image anomaly score (float, "nan" when not computed)
        threshold    decision threshold used (float, "nan" when not computed)
        latency_ms   receive-to-publish time of the pair in milliseconds
        model        model identity
        part_id      the part's identity (an ~/inspect goal's or ~/part_id's; "" when none)
        regions      JSON list of {"bbox": [x_min, y_min, x_max, y_max] (pixels, inclusive),
                     "area_px": int, "area_mm2": float, "centroid_xyz": [x, y, z] (metres, cloud frame,
                     null when no valid point), "extent_xyz": [dx, dy, dz] (metres, or null),
                     "peak_score": float}

The legacy form of the inspector's answer, kept for the tools built on it (the evaluator, paced replay,
launch files, the bench); the typed form is :mod:`mentor3ad.ros.inspection_codec` (``~/inspection``). A new
result transport is one module like these: ``encode(result, header, ...)`` and ``decode(msg) ->
InspectionResult`` for its message type; the nodes call the codec, nothing else.
"""
from __future__ import annotations

import json
import math
from typing import Any, List, Sequence

from ..errors import InputError
from ..io.msgconv import stamp_to_ns
from ..types import InspectionResult, Region, Verdict


def _level(verdict: Verdict) -> bytes:
    from diagnostic_msgs.msg import DiagnosticStatus

    return {Verdict.PASS: DiagnosticStatus.OK, Verdict.FAIL: DiagnosticStatus.WARN,
            Verdict.ERROR: DiagnosticStatus.ERROR, Verdict.SKIPPED: DiagnosticStatus.STALE}[verdict]


def _triple(values) -> Any:
    values = [float(c) for c in values]
    return values if all(math.isfinite(c) for c in values) else None


def regions_to_json(regions: Sequence[Region]) -> str:
    """Regions -> compact JSON list (non-finite centroids / extents become null)."""
    return json.dumps([{"bbox": [int(v) for v in r.bbox], "area_px": int(r.area_px), "area_mm2": float(r.area_mm2),
                        "centroid_xyz": _triple(r.centroid_xyz), "extent_xyz": _triple(r.extent_xyz),
                        "peak_score": float(r.peak_score)} for r in regions], separators=(",", ":"))


def regions_from_json(text: str) -> List[Region]:
    """Inverse of :func:`regions_to_json`."""
    nan3 = [math.nan] * 3
    return [Region(bbox=tuple(int(v) for v in r["bbox"]), area_px=int(r["area_px"]), area_mm2=float(r["area_mm2"]),
                   centroid_xyz=tuple(float(c) for c in (r.get("centroid_xyz") or nan3)),
                   extent_xyz=tuple(float(c) for c in (r.get("extent_xyz") or nan3)),
                   peak_score=float(r["peak_score"])) for r in json.loads(text or "[]")]


def encode(result: InspectionResult, header: Any, name: str):
    """InspectionResult -> DiagnosticArray (see module docstring); ``header``: the input image's header."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    verdict = Verdict(result.verdict)
    values = {
        "verdict": verdict.value,
        "reason": result.reason,
        "score": repr(float(result.score)),
        "threshold": repr(float(result.threshold)),
        "latency_ms": f"{float(result.latency_ms):.3f}",
        "model": result.model_id,
        "part_id": result.part_id,
        "regions": regions_to_json(result.regions),
    }
    status = DiagnosticStatus(level=_level(verdict), name=name,
                              message=verdict.value if not result.reason else f"{verdict.value}: {result.reason}",
                              hardware_id=result.model_id, values=[KeyValue(key=k, value=v) for k, v in values.items()])
    return DiagnosticArray(header=header, status=[status])


def decode(msg: Any) -> InspectionResult:
    """DiagnosticArray -> InspectionResult (with stamp_ns and frame_id of the header); InputError if it is
    not a result message."""
    if not msg.status:
        raise InputError("result message has no status entry")
    status = msg.status[0]
    values = {kv.key: kv.value for kv in status.values}
    missing = [k for k in ("verdict", "score", "threshold") if k not in values]
    if missing:
        raise InputError(f"result message lacks value(s) {missing}; has {sorted(values)}")
    try:
        return InspectionResult(
            Verdict(values["verdict"]), score=float(values["score"]), threshold=float(values["threshold"]),
            reason=values.get("reason", ""), regions=regions_from_json(values.get("regions", "[]")),
            model_id=values.get("model", ""), stamp_ns=stamp_to_ns(msg.header.stamp), frame_id=msg.header.frame_id,
            latency_ms=float(values.get("latency_ms", "nan")), part_id=values.get("part_id", ""))
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"result message is malformed: {err}") from None


__all__ = ["encode", "decode", "regions_to_json", "regions_from_json"]
