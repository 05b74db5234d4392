"""Evaluation reports: metrics table, JSON report, ROC/PRO plots, gallery of worst and best samples.

:func:`evaluate_predictions` takes test samples (with ground-truth masks) and the detector's
predictions (any object with ``score``, ``anomaly_map``, ``threshold``, ``is_anomalous``) and returns a
report dict; with ``out_dir`` it also writes::

    report.json      metrics (+ per defect type, verdict counts, escape and false-reject rates at the model
                     threshold overall and per defect type, naive baseline)
    curves.json      image ROC, pixel ROC and PRO curves
    roc.png, pro.png curve plots (matplotlib, Agg backend), titled with the model and the data
    gallery.html     worst and best test samples: RGB | depth | heatmap overlay (GT outlined in green)
    gallery/*.png    one captioned strip per gallery sample (part, defect type, verdict, score vs
                     threshold, right or wrong; the overlay's colour scale with the threshold marked), and
                     gallery.png with all strips stacked under a title

"Worst" samples are those the detector gets most wrong relative to its threshold (anomalous parts
with the lowest scores, good parts with the highest), "best" the most confidently correct ones.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from ..errors import InputError
from ..io.files import atomic_write_text
from ..types import Sample
from .metrics import compute_metrics, compute_metrics_per_defect
from .visualize import plot_curves, write_gallery

PathLike = Union[str, Path]


def _labels_and_masks(samples: Sequence[Sample]):
    """(labels, masks) of labelled samples; a part known to be good (label 0) without a mask has an empty
    mask, so good-only recordings can be evaluated (verdicts and false-reject rate; AUROC/AUPRO are NaN)."""
    masks, labels = [], []
    for i, s in enumerate(samples):
        if s.mask is None and s.label == 0:
            masks.append(np.zeros(np.asarray(s.rgb).shape[:2], np.uint8))
            labels.append(0)
            continue
        if s.mask is None:
            raise InputError(
                f"sample {s.name or i} has no ground-truth mask; evaluation needs labelled test data "
                "(a dataset test split or a bag with the mask topic)"
            )
        mask = (np.asarray(s.mask) > 0).astype(np.uint8)
        masks.append(mask)
        labels.append(int(s.label) if s.label is not None else int(mask.any()))
    return labels, masks


def _check_predictions(samples: Sequence[Sample], predictions: Sequence[Any], what: str) -> None:
    if len(samples) != len(predictions):
        raise InputError(f"{len(samples)} samples but {len(predictions)} {what} predictions")
    for i, (s, p) in enumerate(zip(samples, predictions)):
        shape = np.asarray(p.anomaly_map).shape
        if shape != s.rgb.shape[:2]:
            raise InputError(f"{what} anomaly map {i} has shape {shape}, sample {s.name or i} is {s.rgb.shape[:2]}")


def json_safe(value: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def verdict_counts(labels: Sequence[int], predictions: Sequence[Any]) -> Dict[str, Any]:
    """Confusion counts at the predictions' threshold(s); undecided answers (ERROR) are ``errors``, never
    counted as PASS."""
    decided = [(y, p.is_anomalous) for y, p in zip(labels, predictions) if _decided(p)]
    tp = sum(1 for y, failed in decided if y == 1 and failed)
    fn = sum(1 for y, failed in decided if y == 1 and not failed)
    fp = sum(1 for y, failed in decided if y == 0 and failed)
    tn = sum(1 for y, failed in decided if y == 0 and not failed)
    n = max(tp + fn + fp + tn, 1)
    return {
        "threshold": _threshold_of(predictions),
        "true_positives": tp, "false_negatives": fn, "false_positives": fp, "true_negatives": tn,
        "errors": len(labels) - len(decided),
        "accuracy": (tp + tn) / n,
        "recall": tp / (tp + fn) if tp + fn else math.nan,
        "false_positive_rate": fp / (fp + tn) if fp + tn else math.nan,
    }


def _decided(prediction: Any) -> bool:
    verdict = getattr(prediction, "verdict", None)
    return bool(verdict.is_decision) if verdict is not None else True


def _threshold_of(predictions: Sequence[Any]) -> Any:
    thresholds = sorted({float(p.threshold) for p in predictions if math.isfinite(float(p.threshold))})
    return thresholds[0] if len(thresholds) == 1 else (thresholds or math.nan)


def part_type(label: int, defect: Optional[str]) -> str:
    """The rate group of a part: "good" for label 0, else its defect type ("defective" when unnamed)."""
    if not label:
        return "good"
    return defect if defect and defect != "good" else "defective"


def decision_rates(labels: Sequence[int], defects: Sequence[Optional[str]],
                   predictions: Sequence[Any]) -> Dict[str, Any]:
    """Escape and false-reject rates at the model's threshold, overall and per part type.

    escape rate = defective parts that PASS / defective parts; false-reject rate = good parts that FAIL /
    good parts. Parts without a decision (ERROR, SKIPPED) are counted as ``errors`` (in the denominators,
    never as PASS). Returns {threshold, escape_rate, escapes, defective_parts, false_reject_rate,
    false_rejects, good_parts, errors, per_type: {type: {parts, passed, failed, errors, escape_rate |
    false_reject_rate}}} with "good" the good parts' type."""
    if not len(labels) == len(defects) == len(predictions):
        raise InputError(f"{len(labels)} labels, {len(defects)} defect types and {len(predictions)} predictions")
    per_type: Dict[str, Dict[str, Any]] = {}
    for label, defect, prediction in zip(labels, defects, predictions):
        entry = per_type.setdefault(part_type(label, defect), {"parts": 0, "passed": 0, "failed": 0, "errors": 0})
        entry["parts"] += 1
        if not _decided(prediction):
            entry["errors"] += 1
        elif prediction.is_anomalous:
            entry["failed"] += 1
        else:
            entry["passed"] += 1
    for name, entry in per_type.items():
        key, count = ("false_reject_rate", entry["failed"]) if name == "good" else ("escape_rate", entry["passed"])
        entry[key] = count / entry["parts"]
    good = per_type.get("good", {"parts": 0, "failed": 0, "errors": 0})
    defective = [entry for name, entry in per_type.items() if name != "good"]
    n_defective = sum(e["parts"] for e in defective)
    escapes = sum(e["passed"] for e in defective)
    ordered = {"good": per_type["good"]} if "good" in per_type else {}
    ordered.update({name: per_type[name] for name in sorted(per_type) if name != "good"})
    return {
        "threshold": _threshold_of(predictions),
        "escape_rate": escapes / n_defective if n_defective else math.nan,
        "escapes": escapes, "defective_parts": n_defective,
        "false_reject_rate": good["failed"] / good["parts"] if good["parts"] else math.nan,
        "false_rejects": good["failed"], "good_parts": good["parts"],
        "errors": good["errors"] + sum(e["errors"] for e in defective),
        "per_type": ordered,
    }


def evaluate_predictions(
    samples: Sequence[Sample],
    predictions: Sequence[Any],
    out_dir: Optional[PathLike] = None,
    title: str = "mentor3ad",
    naive: Optional[Union[Sequence[Any], Mapping[str, Any]]] = None,
    gallery_size: int = 4,
    extra: Optional[Mapping[str, Any]] = None,
    defect_groups: Optional[Mapping[str, Sequence[str]]] = None,
) -> Dict[str, Any]:
    """Metrics and (with ``out_dir``) report files for predictions on labelled test samples.

    naive: the naive baseline's predictions on the same samples, or its metrics dict; reported as
    ``report["naive"]``. extra: additional JSON-able info stored under ``report["info"]`` (model id,
    data path, backbone weights ...). defect_groups: {group: [defect types]} (e.g. the synthetic
    cell's families geometry/appearance/both): metrics of good + each group's samples in
    ``report["per_group"]``. ``report["verdicts"]``: confusion counts at the threshold, ``report["rates"]``:
    escape and false-reject rates with counts, overall and per defect type (:func:`decision_rates`).
    Returns the report dict (curves are in ``report["curves"]``).
    """
    samples, predictions = list(samples), list(predictions)
    if not samples:
        raise InputError("no test samples to evaluate")
    _check_predictions(samples, predictions, "model")
    labels, masks = _labels_and_masks(samples)
    scores = [float(p.score) for p in predictions]
    maps = [np.asarray(p.anomaly_map, dtype=np.float32) for p in predictions]
    metrics = compute_metrics(scores, labels, maps, masks, with_curves=True)
    curves = metrics.pop("curves")
    defects = [s.defect for s in samples]
    report: Dict[str, Any] = {"title": title, "metrics": metrics}
    if len(set(defects) - {"good"}) > 1:
        report["per_defect"] = compute_metrics_per_defect(scores, labels, maps, masks, defects)
    if defect_groups:
        report["per_group"] = {}
        for group, members in defect_groups.items():
            idx = [i for i, d in enumerate(defects) if d == "good" or d in set(members)]
            if any(labels[i] for i in idx) and not all(labels[i] for i in idx):
                report["per_group"][group] = compute_metrics(
                    [scores[i] for i in idx], [labels[i] for i in idx], [maps[i] for i in idx], [masks[i] for i in idx])
    report["verdicts"] = verdict_counts(labels, predictions)
    report["rates"] = decision_rates(labels, defects, predictions)
    if naive is not None:
        if isinstance(naive, Mapping):
            report["naive"] = dict(naive)
        else:
            naive = list(naive)
            _check_predictions(samples, naive, "naive")
            report["naive"] = compute_metrics([float(p.score) for p in naive], labels,
                                              [np.asarray(p.anomaly_map) for p in naive], masks)
    report["samples"] = [
        {"name": s.name, "defect": s.defect, "label": y, "score": sc, "is_anomalous": bool(p.is_anomalous),
         **({"stamp_ns": s.stamp_ns} if s.stamp_ns is not None else {})}
        for s, y, sc, p in zip(samples, labels, scores, predictions)
    ]
    if extra:
        report["info"] = dict(extra)
    report["curves"] = curves
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "report.json", json.dumps(json_safe({k: v for k, v in report.items() if k != "curves"}),
                                                           indent=2))
        atomic_write_text(out / "curves.json", json.dumps(json_safe(curves)))
        plot_curves(curves, metrics, out, title, plot_subtitle(extra, metrics))
        write_gallery(samples, predictions, labels, masks, out, gallery_size, title)
        report["files"] = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    return report


def plot_subtitle(extra: Optional[Mapping[str, Any]], metrics: Mapping[str, Any]) -> str:
    """"model <id> (<file>) | data <path> (<split>) | <n> good + <n> defective parts" from what ``extra``
    knows (model identity or path, data or ground-truth bag) and the metrics' counts."""
    extra = extra or {}
    model = extra.get("model")
    model_id = model.get("model_id") if isinstance(model, Mapping) else (model if isinstance(model, str) else None)
    model_path = extra.get("model_path")
    names = [n for n in (model_id, Path(str(model_path)).name if model_path else None) if n]
    data = extra.get("data") or extra.get("ground_truth_bag")
    parts = [f"model {names[0]}" + (f" ({names[1]})" if len(names) > 1 else "")] if names else []
    if data:
        split = extra.get("split")
        parts.append(f"data {data}" + (f" ({split})" if split else ""))
    if "n_good" in metrics and "n_anomalous" in metrics:
        parts.append(f"{metrics['n_good']} good + {metrics['n_anomalous']} defective parts")
    return " | ".join(parts)


def dataset_defect_groups(dataset_dir: PathLike) -> Optional[Dict[str, List[str]]]:
    """{family: [defect types]} from a synthetic dataset's ``dataset.json``; None for other datasets."""
    path = Path(dataset_dir) / "dataset.json"
    if not path.is_file():
        return None
    try:
        families = json.loads(path.read_text()).get("defect_families") or {}
    except (ValueError, AttributeError):
        return None
    groups: Dict[str, List[str]] = {}
    for defect, family in families.items():
        groups.setdefault(str(family), []).append(str(defect))
    return groups or None
