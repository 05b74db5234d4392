"""Rows of the record: an inspection result as a ``results`` row, and the statements that write rows (the
writer's batches and the command-line's single writes use the same ones)."""
from __future__ import annotations

import json
import math
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence

from .database import Session
from .models import ModelRecord

RESULT_COLUMNS = ("uid", "part_id", "part_type", "cell", "stamp_ns", "decided_ns", "written_ns", "verdict", "reason",
                  "score", "threshold", "model_id", "latency_ms", "frame_id", "regions", "thumbnail", "image",
                  "overlay", "raw_map")
EVIDENCE_KINDS = ("thumbnail", "image", "overlay", "raw_map")
MODEL_COLUMNS = ("model_id", "first_seen_ns", "threshold", "target_false_reject_rate", "rule", "calibration_scores",
                 "expected_false_reject_rate", "parent_model_id", "path", "info")


def _number(value: Any) -> Optional[float]:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _coordinates(values: Sequence[Any]) -> list:
    return [_number(v) for v in values]


def regions_json(regions: Iterable[Any]) -> str:
    """Regions as a JSON list of {bbox, area_px, area_mm2, centroid_xyz, extent_xyz, peak_score} (NaN -> null)."""
    out = []
    for region in regions or ():
        out.append({"bbox": [int(v) for v in region.bbox], "area_px": int(region.area_px),
                    "area_mm2": _number(region.area_mm2), "centroid_xyz": _coordinates(region.centroid_xyz),
                    "extent_xyz": _coordinates(getattr(region, "extent_xyz", ())),
                    "peak_score": _number(region.peak_score)})
    return json.dumps(out)


def result_row(result: Any, uid: str, decided_ns: int, cell: str, part_id: Optional[str],
               part_type: Optional[str]) -> Dict[str, Any]:
    """The ``results`` row of an :class:`~mentor3ad.types.InspectionResult` (evidence paths and written_ns
    filled later; part_id falls back to the result's own ``part_id`` field)."""
    part = part_id if part_id else getattr(result, "part_id", "") or None
    return {"uid": uid, "part_id": str(part) if part else None, "part_type": str(part_type) if part_type else None,
            "cell": str(cell or ""), "stamp_ns": int(result.stamp_ns) if result.stamp_ns is not None else None,
            "decided_ns": int(decided_ns), "written_ns": None, "verdict": str(result.verdict),
            "reason": str(result.reason or ""), "score": _number(result.score), "threshold": _number(result.threshold),
            "model_id": str(result.model_id or ""), "latency_ms": _number(result.latency_ms),
            "frame_id": str(result.frame_id or ""), "regions": regions_json(result.regions),
            "thumbnail": None, "image": None, "overlay": None, "raw_map": None}


def _placeholders(count: int) -> str:
    return ", ".join("?" * count)


def insert_results(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert rows; a row whose uid is already there is skipped (a retried batch is recorded once)."""
    sql = (f"INSERT INTO results ({', '.join(RESULT_COLUMNS)}) VALUES ({_placeholders(len(RESULT_COLUMNS))}) "
           "ON CONFLICT (uid) DO NOTHING")
    session.execute_many(sql, [[row[c] for c in RESULT_COLUMNS] for row in rows])


def note_models(session: Session, model_ids: Iterable[str], seen_ns: int) -> None:
    """A ``models`` row for each model id not there yet (first seen now, calibration unknown)."""
    for model_id in model_ids:
        session.execute("INSERT INTO models (model_id, first_seen_ns) VALUES (?, ?) ON CONFLICT (model_id) DO NOTHING",
                        (model_id, int(seen_ns)))


def upsert_model(session: Session, model: ModelRecord, seen_ns: int) -> None:
    """Insert or update a model's row (its first_seen_ns is kept)."""
    row = model.row(seen_ns)
    updates = ", ".join(f"{c} = excluded.{c}" for c in MODEL_COLUMNS if c not in ("model_id", "first_seen_ns"))
    session.execute(f"INSERT INTO models ({', '.join(MODEL_COLUMNS)}) VALUES ({_placeholders(len(MODEL_COLUMNS))}) "
                    f"ON CONFLICT (model_id) DO UPDATE SET {updates}", [row[c] for c in MODEL_COLUMNS])


__all__ = ["RESULT_COLUMNS", "EVIDENCE_KINDS", "regions_json", "result_row", "insert_results", "note_models",
           "upsert_model"]
