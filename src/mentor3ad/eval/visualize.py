"""Pictures of results: the one heat-map overlay (used by reports and by the inspector's ``~/overlay``),
ROC/PRO curve plots and the gallery of worst and best parts.

:func:`heatmap_overlay` needs numpy only (a JET colour map computed here, boxes drawn here), so nodes
can render overlays without matplotlib; plots and the gallery's depth view use matplotlib (Agg).
"""
from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..types import Sample

# matplotlib's "jet" as piecewise-linear (x, value) control points per channel
_JET = {
    "r": ((0.0, 0.35, 0.66, 0.89, 1.0), (0.0, 0.0, 1.0, 1.0, 0.5)),
    "g": ((0.0, 0.125, 0.375, 0.64, 0.91, 1.0), (0.0, 0.0, 1.0, 1.0, 0.0, 0.0)),
    "b": ((0.0, 0.11, 0.34, 0.65, 1.0), (0.5, 1.0, 1.0, 0.0, 0.0)),
}


def jet(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (clipped; NaN -> 0) -> (..., 3) uint8 RGB of the JET colour map."""
    v = np.clip(np.nan_to_num(np.asarray(values, np.float64)), 0.0, 1.0)
    channels = np.stack([np.interp(v, *_JET[c]) for c in "rgb"], axis=-1)
    return np.round(channels * 255.0).astype(np.uint8)


def heatmap_overlay(rgb: np.ndarray, anomaly_map: np.ndarray, vmin: float, vmax: float,
                    boxes: Sequence[Sequence[int]] = (), outline: Optional[np.ndarray] = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB: the map in JET on [vmin, vmax] blended 50/50 over the image; ``boxes``
    (x0, y0, x1, y1 inclusive) drawn in white; ``outline`` (H, W) bool (e.g. a ground-truth edge) in green."""
    scale = (np.asarray(anomaly_map, np.float64) - vmin) / max(vmax - vmin, 1e-12)
    out = (0.5 * np.asarray(rgb, np.float64) + 0.5 * jet(scale)).round().astype(np.uint8)
    height, width = out.shape[:2]
    for box in boxes:
        x0, y0, x1, y1 = (int(v) for v in box)
        x0, x1 = max(0, min(x0, width - 1)), max(0, min(x1, width - 1))
        y0, y1 = max(0, min(y0, height - 1)), max(0, min(y1, height - 1))
        out[y0, x0:x1 + 1] = out[y1, x0:x1 + 1] = 255
        out[y0:y1 + 1, x0] = out[y0:y1 + 1, x1] = 255
    if outline is not None:
        out[np.asarray(outline, bool)] = (0, 255, 0)
    return out


def threshold_overlay(rgb: np.ndarray, anomaly_map: np.ndarray, threshold: float, regions=()) -> np.ndarray:
    """The inspector's overlay: :func:`heatmap_overlay` on [0, 2 * threshold] (the threshold at mid-scale;
    the map's maximum when there is no usable threshold), regions boxed."""
    amap = np.nan_to_num(np.asarray(anomaly_map, np.float32))
    vmax = 2.0 * threshold if math.isfinite(threshold) and threshold > 0 else float(amap.max()) or 1.0
    return heatmap_overlay(rgb, amap, 0.0, vmax, [r.bbox for r in regions])


def _legend_or_note(ax: Any, note: str) -> None:
    """A legend when curves were drawn, else ``note`` in the middle of the axes (single-class data)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right")
    else:
        ax.text(0.5, 0.5, note, ha="center", va="center", fontsize=8, transform=ax.transAxes)


def plot_curves(curves: Mapping[str, Any], metrics: Mapping[str, Any], out: Path, title: str) -> None:
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
    _legend_or_note(ax, "no ROC: the parts are all good or all defective")
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
    _legend_or_note(ax, "no PRO curve: no defect region in the masks")
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
    overlay = heatmap_overlay(rgb, amap, vmin, vmax, outline=_outline(mask))
    panels = [rgb, _depth_image(sample.xyz), overlay]
    scale = int(math.ceil(128 / rgb.shape[0])) if rgb.shape[0] < 128 else 1  # tiny images: enlarge (nearest)
    if scale > 1:
        panels = [np.repeat(np.repeat(p, scale, axis=0), scale, axis=1) for p in panels]
    gap = np.full((panels[0].shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)


def write_gallery(samples, predictions, labels, masks, out: Path, size: int, title: str) -> None:
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
