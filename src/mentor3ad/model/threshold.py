"""Where a decision threshold came from: ONE record, written by ONE writer, stored with the model.

Every threshold in the package (training, ``mentor3ad calibrate``, ``ablate``'s derived rows, the
PatchCore yardsticks, the naive baseline, a value set by hand) is a :class:`ThresholdRecord` made by one
of the builders below and put on its detector by
:meth:`mentor3ad.model.scoring.PartScorer.set_threshold`. A Detector keeps it in its metadata as
``training_info["threshold"]`` (:meth:`ThresholdRecord.to_dict`)::

    {"value": 1.38, "rule": "tail", "target_false_reject_rate": 0.01, "margin": 0.0,
     "sources": [{"kind": "validation", "n": 4, "data": ""}],
     "expected_false_reject_rate": {"expected": 0.004, "low": 0.0001, "high": 0.03, "empirical": 0.0},
     "calibration_scores": [0.91, 1.02, 1.1, 1.21], "outliers": [], "replaced": null,
     "set_at": "2025-01-01T12:00:00Z", "set_by": "train",
     "expected_escape_rate": {"rate": 0.25, "n": 24, "per_kind": {...}, "source": "pseudo-defects", ...},
     "alternatives": [{"target_false_reject_rate": 0.005, "threshold": 1.52, ...}, ...]}

* rule: ``tail`` | ``quantile`` (good parts at a target false-reject rate,
  :func:`mentor3ad.model.calibration.calibrate_false_reject`), ``f1`` (labelled parts), ``manual``;
* sources: the score sets, each ``kind`` (:data:`SOURCE_KINDS`), count ``n`` and ``data`` (a dataset
  split or recording, "" inside a training run);
* calibration_scores: the good parts' image scores the value was set from, sorted, 6 significant digits
  (for bounding overrides and estimating rates later); outliers: those flagged by
  :func:`~mentor3ad.model.calibration.calibration_outliers`;
* replaced: the threshold this one replaced (null for the first one); set_at: UTC; set_by: ``train`` |
  ``calibrate`` | ``ablate`` | ``patchcore`` | ``naive`` | ``manual`` | ``legacy``;
* expected_escape_rate / alternatives: the pseudo-defect escape rate at this threshold and a table of other
  operating points (:mod:`mentor3ad.model.escape`); empty when not estimated (files from before them too).

Model files written before this record (``threshold_source`` / ``threshold_rule`` keys) load with a
``legacy`` record rebuilt from those keys (:meth:`ThresholdRecord.legacy`).
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence, Tuple

from ..errors import ConfigError
from .calibration import calibrate_by_config, calibrate_f1, calibration_outliers, false_reject_estimate

SOURCE_KINDS = ("validation", "cv", "train", "recalibration", "manual")
RATE_KEYS = ("expected", "low", "high", "empirical")
LEGACY_KEYS = ("threshold_source", "threshold_rule", "expected_false_reject_rate", "calibration_outliers",
               "inherited_threshold")
SCORE_DIGITS = 6


def significant(value: float, digits: int = SCORE_DIGITS) -> float:
    """``value`` rounded to ``digits`` significant digits (how calibration scores are stored)."""
    return float(f"{float(value):.{digits}g}")


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class ThresholdSource:
    """One set of scores a threshold was set from: kind (:data:`SOURCE_KINDS`), count, where ("" in training)."""

    kind: str
    n: int
    data: str = ""

    def __post_init__(self):
        if self.kind not in SOURCE_KINDS:
            raise ConfigError(f"threshold source kind must be one of {SOURCE_KINDS}, got {self.kind!r}")

    def describe(self) -> str:
        return f"{self.n} {self.kind}{f' ({self.data})' if self.data else ''}"


@dataclass(frozen=True)
class ThresholdRecord:
    """A threshold and its provenance (module docstring); build it with the functions below."""

    value: float
    rule: str
    sources: Tuple[ThresholdSource, ...] = ()
    target_false_reject_rate: Optional[float] = None
    margin: float = 0.0
    expected_false_reject_rate: Dict[str, Optional[float]] = field(default_factory=dict)
    calibration_scores: Tuple[float, ...] = ()
    outliers: Tuple[float, ...] = ()
    replaced: Optional[float] = None
    set_at: str = ""
    set_by: str = "manual"
    expected_escape_rate: Dict[str, Any] = field(default_factory=dict)
    alternatives: Tuple[Dict[str, Any], ...] = ()

    @property
    def source(self) -> str:
        """The source kinds joined by "+", e.g. "validation+cv"."""
        return "+".join(s.kind for s in self.sources)

    def describe(self) -> str:
        """One line for logs and command output."""
        if self.rule == "manual":
            return f"{self.value:.6g} set by hand ({self.set_by})"
        where = " + ".join(s.describe() for s in self.sources) or "no recorded scores"
        target = "" if self.target_false_reject_rate is None else \
            f", target false-reject rate {self.target_false_reject_rate:g}"
        return f"{self.value:.6g} by the {self.rule} rule{target} on {where} scores (set by {self.set_by})"

    def to_dict(self) -> Dict[str, Any]:
        """JSON-able: what ``training_info["threshold"]`` holds."""
        return {"value": self.value, "rule": self.rule, "target_false_reject_rate": self.target_false_reject_rate,
                "margin": self.margin, "sources": [{"kind": s.kind, "n": s.n, "data": s.data} for s in self.sources],
                "expected_false_reject_rate": dict(self.expected_false_reject_rate),
                "calibration_scores": list(self.calibration_scores), "outliers": list(self.outliers),
                "replaced": self.replaced, "set_at": self.set_at, "set_by": self.set_by,
                "expected_escape_rate": dict(self.expected_escape_rate),
                "alternatives": [dict(row) for row in self.alternatives]}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "ThresholdRecord":
        return cls(value=float(data["value"]), rule=str(data["rule"]),
                   sources=tuple(ThresholdSource(s["kind"], int(s["n"]), str(s.get("data") or ""))
                                 for s in data.get("sources") or ()),
                   target_false_reject_rate=_number(data.get("target_false_reject_rate")),
                   margin=float(data.get("margin") or 0.0),
                   expected_false_reject_rate={k: _number(v) for k, v in
                                               (data.get("expected_false_reject_rate") or {}).items()},
                   calibration_scores=tuple(float(v) for v in data.get("calibration_scores") or ()),
                   outliers=tuple(float(v) for v in data.get("outliers") or ()),
                   replaced=_number(data.get("replaced")), set_at=str(data.get("set_at") or ""),
                   set_by=str(data.get("set_by") or "manual"),
                   expected_escape_rate=dict(data.get("expected_escape_rate") or {}),
                   alternatives=tuple(dict(row) for row in data.get("alternatives") or ()))

    @classmethod
    def stored(cls, info: Dict[str, Any], threshold: float) -> Optional["ThresholdRecord"]:
        """The record in a model's ``training_info["threshold"]`` when it is the record of ``threshold``."""
        data = info.get("threshold")
        try:
            record = cls.from_dict(data) if isinstance(data, dict) else None
        except (KeyError, TypeError, ValueError):
            return None
        return record if record is not None and record.value == threshold else None

    @classmethod
    def legacy(cls, info: Dict[str, Any], threshold: float, saved_at: str = "") -> "ThresholdRecord":
        """A record rebuilt from the keys model files had before it (``threshold_source``, ``threshold_rule``,
        ``expected_false_reject_rate``, ...): ``set_by: legacy``, no calibration scores."""
        source = str(info.get("threshold_source") or "")
        kinds = source.split("+") if source and all(k in SOURCE_KINDS for k in source.split("+")) else []
        estimate = info.get("expected_false_reject_rate")
        estimate = estimate if isinstance(estimate, dict) else {}
        count = int(estimate.get("n") or 0) if len(kinds) <= 1 else 0
        sources = tuple(ThresholdSource(k, count) for k in kinds) or \
            ((ThresholdSource("recalibration", count, source),) if source else ())
        text = str(info.get("threshold_rule") or "")  # e.g. "tail, target false-reject rate 0.01 on 4 held-out ..."
        words = text.replace(",", " ").split()
        rule = {"tail": "tail", "quantile": "quantile", "F1-optimal": "f1"}.get(words[0] if words else "", "unrecorded")
        rate = re.search(r"false-reject rate ([0-9.eE+-]+)", text)
        return cls(value=float(threshold), rule=rule, sources=sources,
                   target_false_reject_rate=float(rate.group(1).rstrip(".")) if rate and rule != "f1" else None,
                   expected_false_reject_rate={k: _number(estimate.get(k)) for k in RATE_KEYS if k in estimate},
                   outliers=tuple(float(v) for v in info.get("calibration_outliers") or ()),
                   replaced=_number(info.get("inherited_threshold")), set_at=saved_at, set_by="legacy")


def _number(value) -> Optional[float]:
    return None if value is None else float(value)


def _estimate(good_scores: Sequence[float], value: float) -> Dict[str, Optional[float]]:
    estimate = false_reject_estimate(good_scores, value)
    return {k: (float(estimate[k]) if math.isfinite(estimate[k]) else None) for k in RATE_KEYS}


def from_good_scores(good_scores: Sequence[float], calibration, sources: Sequence[ThresholdSource], set_by: str,
                     target_false_reject_rate: Optional[float] = None, replaced: Optional[float] = None) -> ThresholdRecord:
    """The threshold of good parts' image scores by a ``CalibrationConfig``'s rule, margin and target rate (or
    ``target_false_reject_rate``), with the expected false-reject rate, the outliers and the scores."""
    value = calibrate_by_config(good_scores, calibration, target_false_reject_rate)
    rate = calibration.target_false_reject_rate if target_false_reject_rate is None else target_false_reject_rate
    return ThresholdRecord(
        value=value, rule=calibration.rule, sources=tuple(sources), target_false_reject_rate=float(rate),
        margin=float(calibration.margin), expected_false_reject_rate=_estimate(good_scores, value),
        calibration_scores=tuple(sorted(significant(s) for s in good_scores)),
        outliers=tuple(significant(good_scores[i]) for i in calibration_outliers(good_scores)),
        replaced=_replaced(replaced), set_at=utc_now(), set_by=set_by)


def from_labelled_scores(scores: Sequence[float], labels: Sequence[int], sources: Sequence[ThresholdSource],
                         set_by: str, replaced: Optional[float] = None) -> Tuple[ThresholdRecord, float]:
    """(the F1-optimal threshold of labelled scores (1 = defective), its F1); the record keeps the good parts'
    scores and their false-reject rates."""
    value, f1 = calibrate_f1(scores, labels)
    good = [float(s) for s, label in zip(scores, labels) if label == 0]
    estimate = _estimate(good, value) if good else {}
    return ThresholdRecord(
        value=value, rule="f1", sources=tuple(sources), expected_false_reject_rate=estimate,
        calibration_scores=tuple(sorted(significant(s) for s in good)), replaced=_replaced(replaced),
        set_at=utc_now(), set_by=set_by), f1


def manual(value: float, replaced: Optional[float] = None, set_by: str = "manual") -> ThresholdRecord:
    """A threshold set by hand (no scores behind it)."""
    return ThresholdRecord(value=float(value), rule="manual", sources=(ThresholdSource("manual", 0),),
                           replaced=_replaced(replaced), set_at=utc_now(), set_by=set_by)


def _replaced(value: Optional[float]) -> Optional[float]:
    return float(value) if value is not None and math.isfinite(value) else None


__all__ = ["ThresholdRecord", "ThresholdSource", "SOURCE_KINDS", "from_good_scores", "from_labelled_scores", "manual",
           "significant"]
