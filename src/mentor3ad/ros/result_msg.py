"""The inspector's ``~/result`` message: a ``diagnostic_msgs/DiagnosticArray`` (standard packages only).

One message per synchronized input pair::

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
        regions      JSON list of {"bbox": [x_min, y_min, x_max, y_max] (pixels, inclusive),
                     "area_px": int, "area_mm2": float, "centroid_xyz": [x, y, z] (metres, cloud frame,
                     null when no valid point), "peak_score": float}

``result_fields``/``parse_result`` convert between this message and a plain dict, so consumers
(evaluator, tests, integrators' scripts) never parse strings by hand.
"""
from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Sequence

from mentor3ad.types import Region

PASS, FAIL, ERROR, SKIPPED = "PASS", "FAIL", "ERROR", "SKIPPED"
VERDICTS = (PASS, FAIL, ERROR, SKIPPED)


def _level_for(verdict: str) -> bytes:
    from diagnostic_msgs.msg import DiagnosticStatus

    return {
        PASS: DiagnosticStatus.OK,
        FAIL: DiagnosticStatus.WARN,
        ERROR: DiagnosticStatus.ERROR,
        SKIPPED: DiagnosticStatus.STALE,
    }[verdict]


def regions_to_json(regions: Sequence[Region]) -> str:
    """Regions -> compact JSON list (NaN centroids become null)."""
    out = []
    for r in regions:
        centroid = [float(c) for c in r.centroid_xyz]
        out.append(
            {
                "bbox": [int(v) for v in r.bbox],
                "area_px": int(r.area_px),
                "area_mm2": float(r.area_mm2),
                "centroid_xyz": None if not all(math.isfinite(c) for c in centroid) else centroid,
                "peak_score": float(r.peak_score),
            }
        )
    return json.dumps(out, separators=(",", ":"))


def regions_from_json(text: str) -> List[Region]:
    """Inverse of :func:`regions_to_json`."""
    regions = []
    for r in json.loads(text or "[]"):
        centroid = r.get("centroid_xyz") or [math.nan] * 3
        regions.append(
            Region(
                bbox=tuple(int(v) for v in r["bbox"]),
                area_px=int(r["area_px"]),
                area_mm2=float(r["area_mm2"]),
                centroid_xyz=tuple(float(c) for c in centroid),
                peak_score=float(r["peak_score"]),
            )
        )
    return regions


def build_result(
    header: Any,
    verdict: str,
    name: str,
    *,
    reason: str = "",
    score: float = math.nan,
    threshold: float = math.nan,
    latency_ms: float = math.nan,
    model: str = "",
    regions: Sequence[Region] = (),
):
    """Result ``DiagnosticArray`` for one pair (see module docstring). ``header``: the image header."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    message = verdict if not reason else f"{verdict}: {reason}"
    values = {
        "verdict": verdict,
        "reason": reason,
        "score": repr(float(score)),
        "threshold": repr(float(threshold)),
        "latency_ms": f"{float(latency_ms):.3f}",
        "model": model,
        "regions": regions_to_json(regions),
    }
    status = DiagnosticStatus(
        level=_level_for(verdict),
        name=name,
        message=message,
        hardware_id=model,
        values=[KeyValue(key=k, value=v) for k, v in values.items()],
    )
    return DiagnosticArray(header=header, status=[status])


def parse_result(msg: Any) -> Dict[str, Any]:
    """Result ``DiagnosticArray`` -> dict: stamp_ns, frame_id, verdict, reason, score, threshold,
    latency_ms, model, regions (list of Region), message, level."""
    if not msg.status:
        raise ValueError("result message has no status entry")
    status = msg.status[0]
    values = {kv.key: kv.value for kv in status.values}
    missing = [k for k in ("verdict", "score", "threshold") if k not in values]
    if missing:
        raise ValueError(f"result message lacks value(s) {missing}; has {sorted(values)}")
    stamp = msg.header.stamp
    return {
        "stamp_ns": int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec),
        "frame_id": msg.header.frame_id,
        "verdict": values["verdict"],
        "reason": values.get("reason", ""),
        "score": float(values["score"]),
        "threshold": float(values["threshold"]),
        "latency_ms": float(values.get("latency_ms", "nan")),
        "model": values.get("model", ""),
        "regions": regions_from_json(values.get("regions", "[]")),
        "message": status.message,
        "level": int.from_bytes(status.level, "little") if isinstance(status.level, bytes) else int(status.level),
    }
