"""Every picture says what it shows: the overlay's colour scale (the inspector's ~/overlay too), the gallery's
captions, the curve plots' subtitle with model and data."""
import math

import numpy as np
from PIL import Image

from mentor3ad.eval.report import evaluate_predictions, plot_subtitle
from mentor3ad.eval.visualize import jet, part_caption, threshold_overlay
from mentor3ad.io.datasets.synthetic import generate_sample
from mentor3ad.model.postprocess import decide


def test_threshold_overlay_keeps_the_size_and_draws_its_scale_with_the_threshold_marked():
    rgb = np.full((160, 200, 3), 128, np.uint8)
    amap = np.zeros((160, 200), np.float32)
    amap[40:60, 40:60] = 3.0
    result = decide(amap, 2.0)
    overlay = threshold_overlay(rgb, amap, 2.0, result.regions)
    assert overlay.shape == rgb.shape and overlay.dtype == np.uint8
    bar_column = overlay[2:158, 197]  # the bar sits inside the right edge: JET from 0 (bottom) to 2 * threshold (top)
    assert tuple(bar_column[0]) == tuple(jet(np.array([1.0]))[0]) and tuple(bar_column[-1]) == tuple(jet(np.array([0.0]))[0])
    tick_row = round(157 - 0.5 * (157 - 2))  # the threshold at mid-scale: a white tick through the bar
    assert (overlay[tick_row, 190:198] == 255).all() and not (overlay[tick_row - 3, 193:198] == 255).all()
    labels = overlay[:, 120:190]  # "4", "thr 2", "0" written left of the bar: white text pixels
    assert (labels >= 200).all(axis=-1).sum() > 20
    tiny = threshold_overlay(rgb[:64, :64], amap[:64, :64], 2.0)
    assert tiny.shape == (64, 64, 3)  # small images: the bar and the tick, no labels
    assert threshold_overlay(rgb, amap, math.nan).shape == rgb.shape  # no usable threshold: the map's range


def test_captions_name_the_part_the_verdict_and_whether_it_is_right():
    fail, passed = decide(np.full((8, 8), 3.0, np.float32), 2.0), decide(np.full((8, 8), 1.0, np.float32), 2.0)
    escape = part_caption("test/dent/000", "dent", 1, passed)
    assert escape[0][0] == "test/dent/000  (defective: dent)"
    assert escape[1][0] == "PASS: score 1 <= threshold 2  (ESCAPE)" and escape[1][1][0] > 150
    assert part_caption("test/good/001", "good", 0, fail)[1][0] == "FAIL: score 3 > threshold 2  (FALSE REJECT)"
    assert part_caption("test/dent/001", "dent", 1, fail)[1][0].endswith("(correct)")


def test_gallery_png_and_plots_carry_captions_and_titles(tmp_path):
    res = (48, 64)
    samples = [generate_sample(i, res, name=f"test/good/{i:03d}") for i in range(2)]
    samples += [generate_sample(10 + i, res, "dent", name=f"test/dent/{i:03d}") for i in range(2)]
    predictions = [decide(s.mask.astype(np.float32) * 3.0 + 0.1 * i, 1.0) for i, s in enumerate(samples)]
    extra = {"model": {"model_id": "0123456789ab"}, "model_path": "runs/m.safetensors", "data": "data/cell", "split": "test"}
    report = evaluate_predictions(samples, predictions, out_dir=tmp_path, title="tiny", extra=extra, gallery_size=1)
    assert plot_subtitle(extra, report["metrics"]) == \
        "model 0123456789ab (m.safetensors) | data data/cell (test) | 2 good + 2 defective parts"
    gallery = np.asarray(Image.open(tmp_path / "gallery.png"))
    strip = np.asarray(Image.open(tmp_path / "gallery" / "worst_00.png"))
    assert gallery.shape[0] > 2 * strip.shape[0]  # title band + group headers + the strips
    caption = strip[:30]
    assert (caption.min(axis=-1) < 100).sum() > 50  # dark text on the white caption band
    roc = np.asarray(Image.open(tmp_path / "roc.png").convert("L"))
    title_rows = roc[:40]
    assert (title_rows < 100).sum() > 200  # two title lines (title and model/data subtitle)
