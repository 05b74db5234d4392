"""Evaluation reports: metrics table, JSON report, ROC/PRO plots, gallery of worst and best samples.

:func:`evaluate_predictions` takes test samples (with ground-truth masks) and the detector's
predictions (any object with ``score``, ``anomaly_map``, ``threshold``, ``is_anomalous``) and returns a
report dict; with ``out_dir`` it also writes::

    report.json      metrics (+ per defect type, verdict counts at the model threshold, naive baseline)
    curves.json      image ROC, pixel ROC and PRO curves
    roc.png, pro.png curve plots (matplotlib, Agg backend)
    gallery.html     worst and best test samples: RGB | depth | heatmap overlay (GT outlined in green)
    gallery/*.png    one strip per gallery sample, and gallery.png with all strips stacked

"Worst" samples are those the detector gets most wrong relative to its threshold (anomalous parts
with the lowest scores, good parts with the highest), "best" the most confidently correct ones.
"""
from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from .metrics import METRIC_KEYS, compute_metrics, compute_metrics_per_defect
from .types import Sample

PathLike = Union[str, Path]


def _labels_and_masks(samples: Sequence[Sample]):
    masks, labels = [], []
    for i, s in enumerate(samples):
        if s.mask is None:
            raise ValueError(
                f"sample {s.name or i} has no ground-truth mask; evaluation needs labelled test data "
                "(a dataset test split or a bag with the mask topic)"
            )
        mask = (np.asarray(s.mask) > 0).astype(np.uint8)
        masks.append(mask)
        labels.append(int(s.label) if s.label is not None else int(mask.any()))
    return labels, masks


def _check_predictions(samples: Sequence[Sample], predictions: Sequence[Any], what: str) -> None:
    if len(samples) != len(predictions):
        raise ValueError(f"{len(samples)} samples but {len(predictions)} {what} predictions")
    for i, (s, p) in enumerate(zip(samples, predictions)):
        shape = np.asarray(p.anomaly_map).shape
        if shape != s.rgb.shape[:2]:
            raise ValueError(f"{what} anomaly map {i} has shape {shape}, sample {s.name or i} is {s.rgb.shape[:2]}")


def _finite(value: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _verdicts(labels: Sequence[int], predictions: Sequence[Any]) -> Dict[str, Any]:
    tp = sum(1 for y, p in zip(labels, predictions) if y == 1 and p.is_anomalous)
    fn = sum(1 for y, p in zip(labels, predictions) if y == 1 and not p.is_anomalous)
    fp = sum(1 for y, p in zip(labels, predictions) if y == 0 and p.is_anomalous)
    tn = sum(1 for y, p in zip(labels, predictions) if y == 0 and not p.is_anomalous)
    n = max(tp + fn + fp + tn, 1)
    thresholds = sorted({float(p.threshold) for p in predictions})
    return {
        "threshold": thresholds[0] if len(thresholds) == 1 else thresholds,
        "true_positives": tp, "false_negatives": fn, "false_positives": fp, "true_negatives": tn,
        "accuracy": (tp + tn) / n,
        "recall": tp / (tp + fn) if tp + fn else math.nan,
        "false_positive_rate": fp / (fp + tn) if fp + tn else math.nan,
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
    ``report["per_group"]``. Returns the report dict (curves are in ``report["curves"]``).
    """
    samples, predictions = list(samples), list(predictions)
    if not samples:
        raise ValueError("no test samples to evaluate")
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
    report["verdicts"] = _verdicts(labels, predictions)
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
        (out / "report.json").write_text(json.dumps(_finite({k: v for k, v in report.items() if k != "curves"}), indent=2))
        (out / "curves.json").write_text(json.dumps(_finite(curves)))
        _plot_curves(curves, metrics, out, title)
        _write_gallery(samples, predictions, labels, masks, out, gallery_size, title)
        report["files"] = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    return report


# ------------------------------------------------------------------------------------------- plots
def _plot_curves(curves: Mapping[str, Any], metrics: Mapping[str, Any], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    if "image_roc" in curves:
        ax.plot(*curves["image_roc"], label=f"image (I-AUROC {metrics['i_auroc']:.3f})", drawstyle="steps-post")
    if "pixel_roc" in curves:
        ax.plot(*curves["pixel_roc"], label=f"pixel (P-AUROC {metrics['p_auroc']:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{title}: ROC", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "roc.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 5))
    if "pro" in curves:
        fpr, pro = np.asarray(curves["pro"][0]), np.asarray(curves["pro"][1])
        keep = fpr <= 0.35
        ax.plot(fpr[keep], pro[keep], label=f"PRO (AUPRO@30% {metrics['aupro_30']:.3f}, @1% {metrics['aupro_1']:.3f})")
        for limit in (0.3, 0.01):
            ax.axvline(limit, color="grey", ls="--", lw=0.8)
    ax.set(xlabel="false positive rate (pixels)", ylabel="per-region overlap", title=f"{title}: PRO", xlim=(0, 0.35),
           ylim=(0, 1.01))
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "pro.png", dpi=100)
    plt.close(fig)


def _colormap(values: np.ndarray, name: str) -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps[name](np.clip(values, 0, 1))[..., :3] * 255).astype(np.uint8)


def _depth_image(xyz: np.ndarray) -> np.ndarray:
    z = np.asarray(xyz, dtype=np.float64)[..., 2]
    valid = np.isfinite(z) & (z != 0)
    out = np.zeros(z.shape + (3,), np.uint8)
    if valid.any():
        lo, hi = np.percentile(z[valid], [1, 99])
        out = _colormap((z - lo) / max(hi - lo, 1e-9), "viridis")
        out[~valid] = 0
    return out


def _outline(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    m = mask > 0
    return m & ~ndimage.binary_erosion(m)


def _sample_strip(sample: Sample, amap: np.ndarray, mask: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    rgb = np.asarray(sample.rgb, dtype=np.uint8)
    heat = _colormap((np.asarray(amap, np.float64) - vmin) / max(vmax - vmin, 1e-12), "jet")
    overlay = (0.5 * rgb + 0.5 * heat).astype(np.uint8)
    edge = _outline(mask)
    overlay[edge] = (0, 255, 0)
    panels = [rgb, _depth_image(sample.xyz), overlay]
    scale = int(math.ceil(128 / rgb.shape[0])) if rgb.shape[0] < 128 else 1  # tiny images: enlarge (nearest)
    if scale > 1:
        panels = [np.repeat(np.repeat(p, scale, axis=0), scale, axis=1) for p in panels]
    gap = np.full((panels[0].shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)


def _write_gallery(samples, predictions, labels, masks, out: Path, size: int, title: str) -> None:
    from PIL import Image

    n = len(samples)
    scores = np.array([float(p.score) for p in predictions])
    thresholds = np.array([float(p.threshold) for p in predictions])
    reference = np.where(np.isfinite(thresholds), thresholds, np.median(scores))
    spread = max(float(scores.std()), 1e-12)
    margin = (scores - reference) / spread * np.where(np.asarray(labels) == 1, 1.0, -1.0)  # > 0 = correct side
    order = np.argsort(margin, kind="stable")
    size = max(0, min(size, n // 2 if n > 1 else n))
    worst = order[:size].tolist()
    best = order[::-1][:size].tolist() if n > size else []
    best = [i for i in best if i not in worst]
    all_maps = np.concatenate([np.asarray(p.anomaly_map, np.float64).ravel() for p in predictions])
    vmin, vmax = float(all_maps.min()), float(np.percentile(all_maps, 99.9))
    gallery = out / "gallery"
    gallery.mkdir(exist_ok=True)
    rows_html, strips = [], []
    for group, indices in (("worst", worst), ("best", best)):
        rows_html.append(f"<h2>{group} samples</h2>")
        for i in indices:
            s = samples[i]
            strip = _sample_strip(s, predictions[i].anomaly_map, masks[i], vmin, vmax)
            stem = f"{group}_{len(strips):02d}"
            Image.fromarray(strip).save(gallery / f"{stem}.png")
            strips.append(strip)
            verdict = "FAIL" if predictions[i].is_anomalous else "PASS"
            truth = "anomalous" if labels[i] else "good"
            rows_html.append(
                f"<div><p><b>{html.escape(s.name or str(i))}</b> ({html.escape(s.defect)}, {truth}) score "
                f"{scores[i]:.4g}, threshold {thresholds[i]:.4g}: {verdict}</p>"
                f"<img src='gallery/{stem}.png' alt='{html.escape(s.name or str(i))}'></div>"
            )
    if strips:
        width = max(st.shape[1] for st in strips)
        padded = [np.pad(st, ((0, 6), (0, width - st.shape[1]), (0, 0)), constant_values=255) for st in strips]
        Image.fromarray(np.concatenate(padded, axis=0)).save(out / "gallery.png")
    (out / "gallery.html").write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>"
        f"{html.escape(title)} gallery</title></head><body><h1>{html.escape(title)}</h1>"
        "<p>Each row: RGB | depth | anomaly heatmap over RGB (colour scale shared by all samples, "
        "ground truth outlined in green).</p>" + "\n".join(rows_html) + "</body></html>\n"
    )


# ------------------------------------------------------------------------------------------- table
def format_metric_table(rows: Sequence[Mapping[str, Any]], keys: Sequence[str] = METRIC_KEYS) -> str:
    """Markdown table: one row per dict with a ``name`` (or ``method``) and the metric keys."""
    headers = {"i_auroc": "I-AUROC", "p_auroc": "P-AUROC", "aupro_30": "AUPRO@30%", "aupro_1": "AUPRO@1%",
               "n_images": "images"}
    cols = ["method"] + [headers.get(k, k) for k in keys]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] + ["---:"] * len(keys)) + "|"]
    for row in rows:
        cells = [str(row.get("name", row.get("method", "")))]
        for k in keys:
            v = row.get(k)
            if isinstance(v, (float, np.floating)):
                cells.append("n/a" if not math.isfinite(float(v)) else f"{float(v):.3f}")
            else:
                cells.append("n/a" if v is None else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def print_metric_table(rows: Sequence[Mapping[str, Any]], keys: Sequence[str] = METRIC_KEYS) -> str:
    """Print (and return) :func:`format_metric_table`."""
    table = format_metric_table(rows, keys)
    print(table)
    return table


def report_rows(report: Mapping[str, Any], name: str = "mentor3ad") -> List[Dict[str, Any]]:
    """Table rows of a report: the model, then the naive baseline when present."""
    rows = [{"name": name, **report["metrics"]}]
    if "naive" in report:
        rows.append({"name": "naive baseline", **report["naive"]})
    return rows


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
