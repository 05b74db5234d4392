"""Re-calibration from the record: a model's threshold set anew from the recent parts an operator confirmed
good (``mentor3ad record confirm``), by the model's own calibration rule
(:func:`mentor3ad.model.threshold.from_good_scores`); ``mentor3ad calibrate --record`` runs it.

The scores come from results of the model and of the models it was re-calibrated from (its lineage in the
record: the same heads, so the same scores). Confirmed-good FAIL parts (false rejects) count too: leaving
them out would pull the threshold down.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from ..errors import InputError
from .reader import RecordReader

MIN_CONFIRMED_PARTS = 5


def recalibrate_from_record(detector, reader: RecordReader, target_false_reject_rate: Optional[float] = None,
                            since_ns: Optional[int] = None, limit: int = 1000,
                            min_parts: int = MIN_CONFIRMED_PARTS) -> Dict[str, Any]:
    """Set ``detector``'s threshold from the newest ``limit`` parts confirmed good (since ``since_ns``);
    returns {old_threshold, threshold, rule, confirmed_parts, parent_model_id, models,
    expected_false_reject_rate, outliers}. InputError when fewer than ``min_parts`` are confirmed."""
    from ..model.threshold import ThresholdSource, from_good_scores

    parent = detector.model_id
    lineage = reader.lineage(parent)
    scores = reader.good_scores(lineage, limit, confirmed_only=True, since_ns=since_ns)
    if len(scores) < min_parts:
        raise InputError(f"{len(scores)} parts of model {parent} are confirmed good in {reader.database.describe()}"
                         f"{' in that time range' if since_ns is not None else ''}; at least {min_parts} are needed "
                         "(an operator confirms them: mentor3ad record confirm --record ... --part ID)")
    source = ThresholdSource("recalibration", len(scores), f"{reader.database.describe()}: parts confirmed good")
    old = detector.threshold
    record = from_good_scores(scores, detector.config.calibration, [source], "calibrate", target_false_reject_rate,
                              replaced=old)
    detector.set_threshold(record)
    return {"old_threshold": old, "threshold": record.value, "rule": record.describe(), "confirmed_parts": len(scores),
            "parent_model_id": parent, "models": lineage,
            "expected_false_reject_rate": record.expected_false_reject_rate, "outliers": list(record.outliers)}


__all__ = ["recalibrate_from_record", "MIN_CONFIRMED_PARTS"]
