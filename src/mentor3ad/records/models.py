"""What the record keeps about a model: its threshold and the calibration behind it (for drift and
re-calibration), filled when a model is first seen or registered.

The calibration information is read from a model's ``training_info`` tolerantly: the nested
``training_info["threshold"]`` record (``calibration_scores``, ``target_false_reject_rate``,
``expected_false_reject_rate``) when present, else the flat keys written by training so far
(``expected_false_reject_rate`` as a number or as {"expected": ...}); missing pieces stay empty (NaN, []).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional


def _finite(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


@dataclass
class ModelRecord:
    """One model as the record knows it.

    threshold: decision threshold (image score units); target_false_reject_rate: the calibration target
    (fraction); calibration_scores: the good parts' image scores the threshold was set from;
    expected_false_reject_rate: expected fraction of good parts failing at calibration (NaN unknown);
    parent_model_id: the model this one was re-calibrated from ("" none); path: the model file; info:
    small JSON-able facts (threshold source and rule).
    """

    model_id: str
    threshold: float = math.nan
    target_false_reject_rate: float = math.nan
    rule: str = ""
    calibration_scores: List[float] = field(default_factory=list)
    expected_false_reject_rate: float = math.nan
    parent_model_id: str = ""
    path: str = ""
    info: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_training_info(cls, model_id: str, threshold: float, training_info: Optional[Mapping[str, Any]],
                           target_false_reject_rate: float = math.nan, rule: str = "", path: str = "",
                           parent_model_id: str = "") -> "ModelRecord":
        """A record from a model's metadata (missing calibration pieces tolerated)."""
        info = dict(training_info or {})
        nested = info.get("threshold") if isinstance(info.get("threshold"), Mapping) else {}
        scores = nested.get("calibration_scores", info.get("calibration_scores")) or []
        expected = nested.get("expected_false_reject_rate", info.get("expected_false_reject_rate"))
        if isinstance(expected, Mapping):
            expected = expected.get("expected")
        target = _finite(nested.get("target_false_reject_rate"))
        target = target if math.isfinite(target) else _finite(target_false_reject_rate)
        facts = {key: info[key] for key in ("threshold_source", "threshold_rule") if isinstance(info.get(key), str)}
        return cls(model_id=str(model_id), threshold=_finite(threshold), target_false_reject_rate=target,
                   rule=str(nested.get("rule", rule) or ""),
                   calibration_scores=[s for s in (_finite(v) for v in scores if not isinstance(v, bool))
                                       if math.isfinite(s)] if isinstance(scores, list) else [],
                   expected_false_reject_rate=_finite(expected), parent_model_id=parent_model_id, path=str(path),
                   info=facts)

    @classmethod
    def from_detector(cls, detector, path: str = "", parent_model_id: str = "") -> "ModelRecord":
        """From a loaded :class:`~mentor3ad.model.detector.Detector` (its model_id, threshold, calibration
        config and training_info)."""
        calibration = detector.config.calibration
        return cls.from_training_info(detector.model_id, detector.threshold, detector.training_info,
                                      calibration.target_false_reject_rate, calibration.rule, str(path or ""),
                                      parent_model_id)

    def row(self, first_seen_ns: int) -> Dict[str, Any]:
        """The ``models`` table row (NaN -> NULL, lists and dicts as JSON)."""
        def number(value: float) -> Optional[float]:
            return value if math.isfinite(value) else None

        return {"model_id": self.model_id, "first_seen_ns": int(first_seen_ns), "threshold": number(self.threshold),
                "target_false_reject_rate": number(self.target_false_reject_rate), "rule": self.rule or None,
                "calibration_scores": json.dumps(self.calibration_scores) if self.calibration_scores else None,
                "expected_false_reject_rate": number(self.expected_false_reject_rate),
                "parent_model_id": self.parent_model_id or None, "path": self.path or None,
                "info": json.dumps(self.info) if self.info else None}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "ModelRecord":
        def loads(text, default):
            try:
                return json.loads(text) if text else default
            except ValueError:
                return default

        return cls(model_id=row["model_id"], threshold=_finite(row.get("threshold")),
                   target_false_reject_rate=_finite(row.get("target_false_reject_rate")), rule=row.get("rule") or "",
                   calibration_scores=[float(s) for s in loads(row.get("calibration_scores"), [])],
                   expected_false_reject_rate=_finite(row.get("expected_false_reject_rate")),
                   parent_model_id=row.get("parent_model_id") or "", path=row.get("path") or "",
                   info=loads(row.get("info"), {}))


__all__ = ["ModelRecord"]
