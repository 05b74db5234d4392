"""Metrics: hand-computed PRO/AUPRO cases, brute-force PRO curve, sklearn agreement for the AUROCs."""
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mentor3ad.eval.metrics import (
    aupro, compute_image_roc, compute_metrics, compute_metrics_per_defect, compute_pro_curve, mean_metrics, trapezoid,
)


def test_trapezoid_interpolates_at_limit():
    x, y = [0.0, 0.5, 1.0], [0.0, 1.0, 1.0]
    assert trapezoid(x, y) == pytest.approx(0.75)
    # up to 0.25: y rises linearly to 0.5 -> area 0.0625
    assert trapezoid(x, y, x_max=0.25) == pytest.approx(0.0625)
    assert trapezoid(x, y, x_max=0.5) == pytest.approx(0.25)


def test_perfect_and_worst_maps():
    gt = np.zeros((2, 2), np.uint8)
    gt[0, 0] = 1
    good_map = np.array([[0.9, 0.1], [0.2, 0.3]])
    other = np.array([[0.5, 0.4], [0.05, 0.0]])
    m = compute_metrics([0.9, 0.5], [1, 0], [good_map, other], [gt, np.zeros_like(gt)])
    assert m["aupro_30"] == pytest.approx(1.0) and m["aupro_1"] == pytest.approx(1.0)
    assert m["i_auroc"] == 1.0 and m["p_auroc"] == 1.0 and m["n_regions"] == 1
    worst = np.array([[0.0, 0.6], [0.7, 0.8]])
    m = compute_metrics([0.8, 0.5], [1, 0], [worst, other + 0.01], [gt, np.zeros_like(gt)])
    assert m["aupro_30"] == 0.0 and m["p_auroc"] == 0.0


def test_hand_computed_staircase_with_interpolation():
    gt = np.array([[1, 1, 1, 1, 0, 0, 0, 0]])
    amap = np.array([[0.9, 0.7, 0.5, 0.3, 0.8, 0.6, 0.4, 0.2]])
    fprs, pros = compute_pro_curve([amap], [gt])
    assert np.allclose(fprs, [0, 0, 0.25, 0.25, 0.5, 0.5, 0.75, 0.75, 1, 1])
    assert np.allclose(pros, [0, 0.25, 0.25, 0.5, 0.5, 0.75, 0.75, 1, 1, 1])
    # area to 0.3: 0.25 * 0.25 + 0.05 * 0.5 = 0.0875, normalised by 0.3
    assert aupro(fprs, pros, 0.3) == pytest.approx(0.0875 / 0.3)
    assert aupro(fprs, pros, 0.01) == pytest.approx(0.25)


def test_regions_use_8_connectivity_and_ties_collapse():
    gt = np.zeros((4, 4), np.uint8)
    gt[0, 0] = gt[1, 1] = 1  # diagonal neighbours: one region with 8-connectivity
    gt[3, 3] = 1
    amap = np.zeros((4, 4))
    amap[0, 0] = 1.0
    fprs, pros = compute_pro_curve([amap], [gt])
    # threshold 1.0: region A half covered, region B not -> (0.5 + 0) / 2 (4-connectivity would give 1/3)
    assert pros[1] == pytest.approx(0.25) and fprs[1] == 0.0
    # all other pixels tie at 0 -> a single point (1, 1)
    assert len(fprs) == 4
    assert compute_metrics([1.0], [1], [amap], [gt])["n_regions"] == 2


def _brute_force_pro(maps, masks):
    from scipy import ndimage

    thresholds = np.unique(np.concatenate([m.ravel() for m in maps]))[::-1]
    labeled = [ndimage.label(g, np.ones((3, 3)))[0] for g in masks]
    regions = [(i, lab == k) for i, lab in enumerate(labeled) for k in range(1, lab.max() + 1)]
    ok = sum(int((g == 0).sum()) for g in masks)
    fprs, pros = [], []
    for t in thresholds:
        fprs.append(sum(int(((m >= t) & (g == 0)).sum()) for m, g in zip(maps, masks)) / ok)
        pros.append(np.mean([(maps[i][r] >= t).mean() for i, r in regions]))
    return np.array(fprs), np.array(pros)


def test_pro_curve_equals_brute_force_thresholding():
    rng = np.random.default_rng(0)
    maps, masks = [], []
    for i in range(4):
        gt = np.zeros((12, 12), np.uint8)
        if i:
            gt[2 + i: 5 + i, 3:6 + i] = 1
            gt[9, 9 - i] = 1
        maps.append(np.round(rng.random((12, 12)) + gt * 0.3, 2))  # rounding makes ties
        masks.append(gt)
    fprs, pros = compute_pro_curve(maps, masks)
    bf, bp = _brute_force_pro(maps, masks)
    assert np.allclose(fprs[1:-1], bf) and np.allclose(pros[1:-1], bp)


def test_aurocs_agree_with_sklearn():
    rng = np.random.default_rng(1)
    n = 30
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]
    scores = np.round(rng.normal(size=n) + labels * 0.8, 1)  # ties
    fpr, tpr = compute_image_roc(scores, labels)
    assert trapezoid(fpr, tpr) == pytest.approx(roc_auc_score(labels, scores))
    maps = [rng.random((8, 8)) for _ in range(n)]
    masks = [np.zeros((8, 8), np.uint8) for _ in range(n)]
    for i in np.flatnonzero(labels):
        masks[i][2:5, 2:5] = 1
        maps[i][2:5, 2:5] += 0.3
    m = compute_metrics(scores, labels, maps, masks, with_curves=True)
    assert m["i_auroc"] == pytest.approx(roc_auc_score(labels, scores))
    flat_gt = np.concatenate([x.ravel() for x in masks])
    flat = np.concatenate([x.ravel() for x in maps])
    assert m["p_auroc"] == pytest.approx(roc_auc_score(flat_gt, flat))
    assert 0 < m["aupro_1"] < m["aupro_30"] < 1
    assert set(m["curves"]) == {"image_roc", "pixel_roc", "pro"}
    assert m["n_good"] + m["n_anomalous"] == n


def test_undefined_and_bad_inputs():
    amap = np.zeros((3, 3))
    m = compute_metrics([0.0], None, [amap], [np.zeros((3, 3), np.uint8)])
    assert math.isnan(m["i_auroc"]) and math.isnan(m["p_auroc"]) and math.isnan(m["aupro_30"])
    with pytest.raises(ValueError, match="must match"):
        compute_metrics([0.0, 1.0], None, [amap], [amap])
    with pytest.raises(ValueError, match="shape"):
        compute_metrics([0.0], None, [amap], [np.zeros((2, 3))])
    with pytest.raises(ValueError, match="NaN"):
        compute_metrics([0.0], None, [amap * np.nan], [amap])


def test_per_defect_and_mean():
    gt = np.zeros((4, 4), np.uint8)
    gt[1:3, 1:3] = 1
    good = np.zeros((4, 4))
    hit = gt * 1.0
    miss = 1.0 - gt
    per = compute_metrics_per_defect(
        [0, 0, 1, 1], [0, 0, 1, 1], [good, good, hit, miss], [gt * 0, gt * 0, gt, gt], ["good", "good", "dent", "spot"]
    )
    # spot: FPR jumps to 12/44 with PRO 0, then straight to (1, 1); interpolated at 0.3
    f0 = 12 / 44
    y = (0.3 - f0) / (1 - f0)
    expected_spot = 0.5 * y * (0.3 - f0) / 0.3
    assert per["dent"]["aupro_30"] == pytest.approx(1.0) and per["spot"]["aupro_30"] == pytest.approx(expected_spot)
    mean = mean_metrics(per)
    assert mean["aupro_30"] == pytest.approx((1.0 + expected_spot) / 2)
