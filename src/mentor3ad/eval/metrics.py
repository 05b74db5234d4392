"""Anomaly detection metrics with the definitions of the official MVTec 3D-AD evaluation.

* I-AUROC: area under the image-level ROC of the image scores (the official code scores an image by
  the max of its map); computed with the official step-wise ROC and trapezoid rule (equal to
  ``sklearn.metrics.roc_auc_score``).
* P-AUROC: ROC AUC over every pixel of every test image (as in the 3D-ADS / M3DM evaluations).
* AUPRO@limit: the exact PRO curve (one point per distinct score): FPR over all anomaly-free pixels of
  all images, PRO = mean over all connected ground-truth regions (8-connectivity, over all images) of
  the fraction of the region above the threshold; integrated with the trapezoid rule up to the FPR
  limit, the curve linearly interpolated at the limit, then divided by the limit
  (``pro_curve_util.compute_pro`` + ``generic_util.trapezoid`` + ``evaluate_experiment``).
  Curves are kept in float64 (the official code casts the FPRs to float32; differences < 1e-6).

Metrics that are undefined for the given data (one class only, no defect region) are NaN.
"""
from __future__ import annotations

import math
from bisect import bisect
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

EIGHT_CONNECTIVITY = np.ones((3, 3), dtype=int)


def trapezoid(x: Sequence[float], y: Sequence[float], x_max: Optional[float] = None) -> float:
    """Area under y(x) (x ascending) by the trapezoid rule, up to ``x_max`` with linear interpolation.

    Non-finite points are dropped. Same definition as MVTec's ``generic_util.trapezoid``.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    correction = 0.0
    if x_max is not None:
        if x_max not in x:
            ins = bisect(x.tolist(), x_max)
            if not 0 < ins < len(x):
                raise ValueError(f"integration limit {x_max} is outside the curve's x range [{x[0]}, {x[-1]}]")
            y_interp = y[ins - 1] + (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1])
            correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
        keep = x <= x_max
        x, y = x[keep], y[keep]
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction)


def compute_pro_curve(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """Exact PRO curve. maps: N x (H, W) scores; masks: N x (H, W) ground truth (nonzero = defect).

    Returns (fprs, pros), both ascending, starting at (0, 0) and ending at (1, 1), one point per
    distinct anomaly score.
    """
    if len(maps) != len(masks):
        raise ValueError(f"{len(maps)} anomaly maps but {len(masks)} ground-truth masks")
    scores_parts: List[np.ndarray] = []
    fp_parts: List[np.ndarray] = []
    pro_parts: List[np.ndarray] = []
    num_ok_pixels = 0
    num_regions = 0
    for i, (amap, gt) in enumerate(zip(maps, masks)):
        amap = np.asarray(amap, dtype=np.float64)
        gt = np.asarray(gt)
        if amap.shape != gt.shape:
            raise ValueError(f"anomaly map {i} has shape {amap.shape} but its mask has shape {gt.shape}")
        labeled, n_components = ndimage.label(gt > 0, structure=EIGHT_CONNECTIVITY)
        num_regions += n_components
        ok = labeled == 0
        num_ok_pixels += int(ok.sum())
        pro_change = np.zeros(gt.shape, np.float64)
        if n_components:
            sizes = np.bincount(labeled.ravel(), minlength=n_components + 1).astype(np.float64)
            inv = np.zeros_like(sizes)
            inv[1:] = 1.0 / sizes[1:]
            pro_change = inv[labeled]
        scores_parts.append(amap.ravel())
        fp_parts.append(ok.ravel().astype(np.float64))
        pro_parts.append(pro_change.ravel())
    if num_regions == 0:
        raise ValueError("no ground-truth defect region in the masks: the PRO curve is undefined")
    if num_ok_pixels == 0:
        raise ValueError("no anomaly-free pixel in the masks: the false positive rate is undefined")
    scores = np.concatenate(scores_parts)
    if not np.isfinite(scores).all():
        raise ValueError("anomaly maps contain NaN or inf values")
    order = np.argsort(scores, kind="stable")[::-1]
    scores = scores[order]
    fprs = np.cumsum(np.concatenate(fp_parts)[order]) / num_ok_pixels
    pros = np.cumsum(np.concatenate(pro_parts)[order]) / num_regions
    keep = np.append(np.diff(scores) != 0, True)  # last index of each run of equal scores
    fprs = np.clip(fprs[keep], None, 1.0)
    pros = np.clip(pros[keep], None, 1.0)
    return np.concatenate(([0.0], fprs, [1.0])), np.concatenate(([0.0], pros, [1.0]))


def aupro(fprs: np.ndarray, pros: np.ndarray, limit: float) -> float:
    """Normalised area under the PRO curve up to the FPR ``limit`` (1.0 = perfect)."""
    if not 0 < limit <= 1:
        raise ValueError(f"integration limit must be in (0, 1], got {limit}")
    return trapezoid(fprs, pros, x_max=limit) / limit


def compute_image_roc(scores: Sequence[float], labels: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """Image-level ROC (fprs, tprs) ascending, one point per distinct score, from (0,0) to (1,1)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(int)
    num_nok = int(labels.sum())
    num_ok = len(labels) - num_nok
    if num_nok == 0 or num_ok == 0:
        raise ValueError(f"the ROC needs good and anomalous samples; got {num_ok} good and {num_nok} anomalous")
    order = np.argsort(scores, kind="stable")[::-1]
    s = scores[order]
    tps = np.cumsum(labels[order] == 1)
    fps = np.cumsum(labels[order] == 0)
    keep = np.append(np.diff(s) != 0, True)
    fprs = np.concatenate(([0.0], fps[keep] / num_ok))
    tprs = np.concatenate(([0.0], tps[keep] / num_nok))
    return fprs, tprs


def compute_metrics(
    scores: Sequence[float],
    labels: Optional[Sequence[int]],
    maps: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    integration_limits: Sequence[float] = (0.3, 0.01),
    with_curves: bool = False,
) -> Dict[str, object]:
    """All metrics for one test set.

    scores: N image scores; labels: N (0 good, 1 anomalous), None = derived from the masks (any
    defect pixel); maps: N x (H, W) float anomaly maps; masks: N x (H, W) ground truth.
    Returns i_auroc, p_auroc, ``aupro_<100*limit>`` per limit (aupro_30, aupro_1), n_images, n_good,
    n_anomalous, n_regions; with ``with_curves`` also ``curves`` = {image_roc: (fpr, tpr),
    pixel_roc: (fpr, tpr), pro: (fpr, pro)} as lists.
    """
    n = len(maps)
    if len(scores) != n or len(masks) != n:
        raise ValueError(f"got {len(scores)} scores, {n} anomaly maps and {len(masks)} masks; they must match")
    if n == 0:
        raise ValueError("no test samples to evaluate")
    if labels is None:
        labels = [int(np.any(np.asarray(m) > 0)) for m in masks]
    if len(labels) != n:
        raise ValueError(f"got {len(labels)} labels for {n} samples")
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(scores).all():
        raise ValueError("image scores contain NaN or inf values")
    result: Dict[str, object] = {
        "n_images": n,
        "n_good": int((labels == 0).sum()),
        "n_anomalous": int((labels == 1).sum()),
    }
    curves: Dict[str, object] = {}
    try:
        fpr, tpr = compute_image_roc(scores, labels)
        result["i_auroc"] = trapezoid(fpr, tpr)
        curves["image_roc"] = (fpr.tolist(), tpr.tolist())
    except ValueError:
        result["i_auroc"] = math.nan

    flat_maps = np.concatenate([np.asarray(m, dtype=np.float64).ravel() for m in maps])
    flat_gt = np.concatenate([(np.asarray(m) > 0).ravel() for m in masks])
    for i, (a, m) in enumerate(zip(maps, masks)):
        if np.asarray(a).shape != np.asarray(m).shape:
            raise ValueError(f"anomaly map {i} has shape {np.asarray(a).shape} but its mask has shape {np.asarray(m).shape}")
    if not np.isfinite(flat_maps).all():
        raise ValueError("anomaly maps contain NaN or inf values")
    if flat_gt.any() and not flat_gt.all():
        from sklearn.metrics import roc_auc_score, roc_curve

        result["p_auroc"] = float(roc_auc_score(flat_gt, flat_maps))
        if with_curves:
            pf, pt, _ = roc_curve(flat_gt, flat_maps, drop_intermediate=True)
            curves["pixel_roc"] = (pf.tolist(), pt.tolist())
    else:
        result["p_auroc"] = math.nan

    try:
        fprs, pros = compute_pro_curve(maps, masks)
        result["n_regions"] = int(sum(ndimage.label(np.asarray(m) > 0, EIGHT_CONNECTIVITY)[1] for m in masks))
        for limit in integration_limits:
            result[f"aupro_{limit * 100:g}"] = aupro(fprs, pros, limit)
        if with_curves:
            # thin the exact curve for plotting: keep every point up to FPR 0.3, then a coarse tail
            curves["pro"] = (fprs.tolist(), pros.tolist()) if len(fprs) < 20000 else _thin_curve(fprs, pros)
    except ValueError:
        result["n_regions"] = 0
        for limit in integration_limits:
            result[f"aupro_{limit * 100:g}"] = math.nan
    if with_curves:
        result["curves"] = curves
    return result


def _thin_curve(x: np.ndarray, y: np.ndarray, points: int = 5000) -> Tuple[List[float], List[float]]:
    grid = np.linspace(0.0, 1.0, points)
    idx = np.unique(np.clip(np.searchsorted(x, grid), 0, len(x) - 1))
    return x[idx].tolist(), y[idx].tolist()


def compute_metrics_per_defect(
    scores: Sequence[float],
    labels: Sequence[int],
    maps: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    defects: Sequence[str],
    integration_limits: Sequence[float] = (0.3, 0.01),
) -> Dict[str, Dict[str, object]]:
    """Metrics of (all good samples + the samples of one defect type), for each defect type."""
    defects = list(defects)
    good = [i for i, d in enumerate(defects) if d == "good"]
    out: Dict[str, Dict[str, object]] = {}
    for defect in sorted(set(defects) - {"good"}):
        idx = good + [i for i, d in enumerate(defects) if d == defect]
        out[defect] = compute_metrics(
            [scores[i] for i in idx], [labels[i] for i in idx], [maps[i] for i in idx], [masks[i] for i in idx],
            integration_limits,
        )
    return out


METRIC_KEYS = ("i_auroc", "p_auroc", "aupro_30", "aupro_1")


def mean_metrics(per_class: Mapping[str, Mapping[str, object]], keys: Sequence[str] = METRIC_KEYS) -> Dict[str, float]:
    """Mean of each metric over classes (NaN entries ignored; NaN if no class has it)."""
    out: Dict[str, float] = {}
    for key in keys:
        values = [float(m[key]) for m in per_class.values() if key in m and not math.isnan(float(m[key]))]
        out[key] = float(np.mean(values)) if values else math.nan
    return out
