"""Pictures of results, each saying what it shows: the one heat-map overlay (used by reports, the inspection
record and the inspector's ``~/overlay``) with its colour scale, ROC/PRO curve plots titled with model and
data, and the captioned gallery of worst and best parts.

:func:`heatmap_overlay` and :func:`threshold_overlay` need numpy and Pillow only (a JET colour map computed
here, boxes and the scale bar drawn here, labels with Pillow's built-in font), so nodes render overlays
without matplotlib; plots and the gallery's depth view use matplotlib (Agg).
"""
from __future__ import annotations

import html
import math
import textwrap
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Tuple

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


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _number(value: float) -> str:
    return f"{value:.3g}" if math.isfinite(value) else "n/a"


def colour_scale(image: np.ndarray, vmin: float, vmax: float, marks: Sequence[Tuple[float, str]] = ()) -> np.ndarray:
    """A copy of ``image`` (H, W, 3) uint8 with the JET scale of [vmin, vmax] as a bar inside its right edge
    (the picture keeps its size), a white tick per mark (value, label) and, from 96 px height on, the
    labels of both ends and of the marks."""
    out = np.array(image, np.uint8, copy=True)
    height, width = out.shape[:2]
    if height < 16 or width < 16:
        return out
    bar = max(3, width // 40)
    top, bottom, right = 2, height - 3, width - 2
    left = right - bar
    fractions = (bottom - np.arange(top, bottom + 1)) / max(bottom - top, 1)
    out[top - 1:bottom + 2, left - 1:right + 1] = 0
    out[top:bottom + 1, left:right] = jet(fractions)[:, None, :]
    span = vmax - vmin if vmax > vmin else 1.0
    ticks = [(bottom - (value - vmin) / span * (bottom - top), text) for value, text in marks
             if math.isfinite(value) and vmin <= value <= vmax]
    for y, _ in ticks:
        out[int(round(y)), max(0, left - 4):right] = 255
    if height < 96:
        return out
    from PIL import Image, ImageDraw

    picture = Image.fromarray(out)
    draw = ImageDraw.Draw(picture)
    size = max(9, min(14, height // 24))
    font = _font(size)
    tiny = 1e-4 * max(abs(vmin), abs(vmax), 1e-12)
    ends = [(top + 4, _number(vmax)), (bottom - 4, _number(vmin if abs(vmin) > tiny else 0.0))]
    labels = [end for end in ends if all(abs(end[0] - y) > size + 1 for y, _ in ticks)] + ticks
    for y, text in labels:
        draw.text((left - 6, y), text, fill=(255, 255, 255), font=font, anchor="rm", stroke_width=2,
                  stroke_fill=(0, 0, 0))
    return np.asarray(picture)


def threshold_overlay(rgb: np.ndarray, anomaly_map: np.ndarray, threshold: float, regions=()) -> np.ndarray:
    """The inspector's overlay: :func:`heatmap_overlay` on [0, 2 * threshold] (the threshold at mid-scale;
    the map's maximum when there is no usable threshold), regions boxed, with its colour scale (the
    threshold marked "thr")."""
    amap = np.nan_to_num(np.asarray(anomaly_map, np.float32))
    usable = math.isfinite(threshold) and threshold > 0
    vmax = 2.0 * threshold if usable else float(amap.max()) or 1.0
    out = heatmap_overlay(rgb, amap, 0.0, vmax, [r.bbox for r in regions])
    return colour_scale(out, 0.0, vmax, [(threshold, f"thr {_number(threshold)}")] if usable else [])


def _legend_or_note(ax: Any, note: str) -> None:
    """A legend when curves were drawn, else ``note`` in the middle of the axes (single-class data)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right")
    else:
        ax.text(0.5, 0.5, note, ha="center", va="center", fontsize=8, transform=ax.transAxes)


def plot_curves(curves: Mapping[str, Any], metrics: Mapping[str, Any], out: Path, title: str,
                subtitle: str = "") -> None:
    """roc.png and pro.png in ``out``, titled "<title>: ROC|PRO" over ``subtitle`` (model, data, part counts)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def finish(fig, ax, kind: str, note: str, name: str) -> None:
        ax.set_title(f"{title}: {kind}" + (f"\n{textwrap.fill(subtitle, 64)}" if subtitle else ""), fontsize=9)
        _legend_or_note(ax, note)
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 5))
    if "image_roc" in curves:
        ax.plot(*curves["image_roc"], label=f"image (I-AUROC {metrics['i_auroc']:.3f})", drawstyle="steps-post")
    if "pixel_roc" in curves:
        ax.plot(*curves["pixel_roc"], label=f"pixel (P-AUROC {metrics['p_auroc']:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01))
    finish(fig, ax, "ROC", "no ROC: the parts are all good or all defective", "roc.png")

    fig, ax = plt.subplots(figsize=(5, 5))
    if "pro" in curves:
        fpr, pro = np.asarray(curves["pro"][0]), np.asarray(curves["pro"][1])
        keep = fpr <= 0.35
        ax.plot(fpr[keep], pro[keep], label=f"PRO (AUPRO@30% {metrics['aupro_30']:.3f}, @1% {metrics['aupro_1']:.3f})")
        for limit in (0.3, 0.01):
            ax.axvline(limit, color="grey", ls="--", lw=0.8)
    ax.set(xlabel="false positive rate (pixels)", ylabel="per-region overlap", xlim=(0, 0.35), ylim=(0, 1.01))
    finish(fig, ax, "PRO", "no PRO curve: no defect region in the masks", "pro.png")


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


def text_band(width: int, lines: Sequence[Tuple[str, Tuple[int, int, int]]], size: int = 12) -> np.ndarray:
    """(h, width, 3) uint8 white band with one coloured text line per (text, rgb), cut to the width."""
    from PIL import Image, ImageDraw

    font = _font(size)
    line_height = size + 5
    band = Image.new("RGB", (width, 4 + line_height * len(lines)), (255, 255, 255))
    draw = ImageDraw.Draw(band)
    for row, (text, colour) in enumerate(lines):
        while text and draw.textlength(text, font=font) > width - 8:
            text = text[:-2] + "…"
        draw.text((4, 3 + row * line_height), text, fill=colour, font=font)
    return np.asarray(band)


def part_caption(name: str, defect: str, label: int, prediction: Any) -> List[Tuple[str, Tuple[int, int, int]]]:
    """Two caption lines of a gallery part: which part (defect type, ground truth) and its verdict with
    score vs threshold and whether that is right (escape / false reject in red)."""
    score, threshold = float(prediction.score), float(prediction.threshold)
    failed = bool(prediction.is_anomalous)
    verdict = getattr(prediction, "verdict", None)
    decided = verdict is None or verdict.is_decision
    if not decided:
        outcome, colour, text = "no decision", (160, 90, 0), f"{verdict}: {getattr(prediction, 'reason', '')}"
    else:
        text = (f"{'FAIL' if failed else 'PASS'}: score {_number(score)} {'>' if failed else '<='} "
                f"threshold {_number(threshold)}")
        outcome, colour = {(1, True): ("correct", (0, 120, 0)), (0, False): ("correct", (0, 120, 0)),
                           (1, False): ("ESCAPE", (200, 0, 0)), (0, True): ("FALSE REJECT", (200, 0, 0))}[
            (int(bool(label)), failed)]
    truth = f"defective: {defect}" if label else "good part"
    return [(f"{name}  ({truth})", (0, 0, 0)), (f"{text}  ({outcome})", colour)]


PANEL_TITLES = ("RGB", "depth (z)", "anomaly map, ground truth green")


def _sample_strip(sample: Sample, prediction: Any, label: int, mask: np.ndarray, vmin: float,
                  vmax: float) -> np.ndarray:
    """Caption + panel titles over RGB | depth | overlay (with its colour scale, the threshold marked)."""
    rgb = np.asarray(sample.rgb, dtype=np.uint8)
    overlay = heatmap_overlay(rgb, prediction.anomaly_map, vmin, vmax, outline=_outline(mask))
    panels = [rgb, _depth_image(sample.xyz), overlay]
    scale = int(math.ceil(128 / rgb.shape[0])) if rgb.shape[0] < 128 else 1  # tiny images: enlarge (nearest)
    if scale > 1:
        panels = [np.repeat(np.repeat(p, scale, axis=0), scale, axis=1) for p in panels]
    threshold = float(prediction.threshold)
    panels[2] = colour_scale(panels[2], vmin, vmax, [(threshold, f"thr {_number(threshold)}")])
    gap = np.full((panels[0].shape[0], 4, 3), 255, np.uint8)
    body = np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)
    titles = [text_band(panel.shape[1], [(name, (90, 90, 90))], 10) for panel, name in zip(panels, PANEL_TITLES)]
    spacer = np.full((titles[0].shape[0], gap.shape[1], 3), 255, np.uint8)
    title_row = np.concatenate([titles[0], spacer, titles[1], spacer, titles[2]], axis=1)
    caption = text_band(body.shape[1], part_caption(sample.name, sample.defect, label, prediction))
    return np.concatenate([caption, title_row, body], axis=0)


def write_gallery(samples, predictions, labels, masks, out: Path, size: int, title: str) -> None:
    """gallery.html, gallery/<group>_NN.png (one captioned strip per part) and gallery.png (all strips under a
    title) of the ``size`` worst and best parts relative to the threshold."""
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
    if np.isfinite(thresholds).any():  # the threshold on the scale: its top colours are the failing scores
        vmax = max(vmax, float(np.nanmax(np.where(np.isfinite(thresholds), thresholds, np.nan))) * 1.05)
    gallery = out / "gallery"
    gallery.mkdir(exist_ok=True)
    rows_html, strips = [], []
    for group, indices in (("worst", worst), ("best", best)):
        rows_html.append(f"<h2>{group} samples</h2>")
        for i in indices:
            s = samples[i]
            strip = _sample_strip(s, predictions[i], labels[i], masks[i], vmin, vmax)
            stem = f"{group}_{len(strips):02d}"
            Image.fromarray(strip).save(gallery / f"{stem}.png")
            strips.append((group, strip))
            caption = " ".join(text for text, _ in part_caption(s.name or str(i), s.defect, labels[i], predictions[i]))
            rows_html.append(f"<div><p>{html.escape(caption)}</p>"
                             f"<img src='gallery/{stem}.png' alt='{html.escape(s.name or str(i))}'></div>")
    if strips:
        width = max(st.shape[1] for _, st in strips)
        parts = [text_band(width, [(f"{title}: parts most wrong (worst) and most surely right (best) relative to "
                                    "the threshold", (0, 0, 0)),
                                   (f"overlay colour scale {_number(vmin)} - {_number(vmax)} shared by all parts", (90, 90, 90))],
                           13)]
        for index, (group, strip) in enumerate(strips):
            if index == 0 or strips[index - 1][0] != group:
                parts.append(text_band(width, [(f"{group} parts", (0, 0, 160))], 13))
            parts.append(np.pad(strip, ((0, 6), (0, width - strip.shape[1]), (0, 0)), constant_values=255))
        Image.fromarray(np.concatenate(parts, axis=0)).save(out / "gallery.png")
    (out / "gallery.html").write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>"
        f"{html.escape(title)} gallery</title></head><body><h1>{html.escape(title)}</h1>"
        "<p>Each row: RGB | depth | anomaly heatmap over RGB (colour scale shared by all samples, the threshold "
        "marked on it, ground truth outlined in green).</p>" + "\n".join(rows_html) + "</body></html>\n"
    )
