"""Evaluation reports with hand-made predictions; the evaluate CLI end to end with a tiny model."""
import json

import numpy as np
import pytest

from helpers import LEARNING_CONFIG
from mentor3ad.eval.baselines import NaiveBaseline
from mentor3ad.io.datasets.synthetic import generate_sample
from mentor3ad.eval.report import decision_rates, evaluate_predictions, verdict_counts
from mentor3ad.eval.tables import format_metric_table, format_rate_table, print_metric_table, report_rows
from mentor3ad.model.postprocess import decide
from mentor3ad.types import InspectionResult

RES = (24, 32)


def _test_set():
    samples = [generate_sample(i, RES, name=f"test/good/{i:03d}") for i in range(3)]
    samples += [generate_sample(10 + i, RES, d, name=f"test/{d}/{i:03d}") for i, d in enumerate(["dent", "paint", "dent"])]
    return samples


def _oracle(samples, miss=()):
    preds = []
    for i, s in enumerate(samples):
        amap = s.mask.astype(np.float32) + 0.01 * i if i not in miss else np.zeros(RES, np.float32)
        preds.append(decide(amap, 0.5))
    return preds


def test_report_files_and_numbers(tmp_path):
    samples = _test_set()
    naive = NaiveBaseline().fit([generate_sample(100 + i, RES) for i in range(4)]).predict_samples(samples)
    report = evaluate_predictions(samples, _oracle(samples), out_dir=tmp_path, title="oracle", naive=naive,
                                  extra={"model": "hand-made"})
    m = report["metrics"]
    assert m["i_auroc"] == 1.0 and m["p_auroc"] == pytest.approx(1.0) and m["aupro_30"] == pytest.approx(1.0)
    assert set(report["per_defect"]) == {"dent", "paint"}
    grouped = evaluate_predictions(samples, _oracle(samples), defect_groups={"geometry": ["dent"], "appearance": ["paint"]})
    assert grouped["per_group"]["geometry"]["n_images"] == 5 and grouped["per_group"]["appearance"]["n_images"] == 4
    assert report["verdicts"]["true_positives"] == 3 and report["verdicts"]["false_positives"] == 0
    assert "i_auroc" in report["naive"]
    for name in ("report.json", "curves.json", "roc.png", "pro.png", "gallery.html", "gallery.png"):
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["metrics"]["n_images"] == 6 and saved["info"]["model"] == "hand-made"
    html = (tmp_path / "gallery.html").read_text()
    assert "worst samples" in html and "best samples" in html and "gallery/worst_00.png" in html
    from PIL import Image
    strip = np.asarray(Image.open(tmp_path / "gallery/worst_00.png"))
    k = 6  # 24-pixel images are enlarged to >= 128 rows; caption and panel titles above the panels
    assert strip.shape[1:] == (3 * k * RES[1] + 8, 3) and strip.shape[0] > k * RES[0] + 30


def test_worst_sample_is_the_missed_defect(tmp_path):
    samples = _test_set()
    report = evaluate_predictions(samples, _oracle(samples, miss={4}), out_dir=tmp_path, gallery_size=1)
    assert report["metrics"]["i_auroc"] < 1.0 and report["verdicts"]["false_negatives"] == 1
    assert samples[4].name in (tmp_path / "gallery.html").read_text().split("best samples")[0]


def test_escape_and_false_reject_rates_per_defect_type(tmp_path):
    samples = _test_set()  # good x3, dent, paint, dent
    predictions = _oracle(samples, miss={4})  # the paint defect PASSes
    predictions[0] = decide(np.ones(RES, np.float32), 0.5)  # a good part FAILs
    report = evaluate_predictions(samples, predictions, out_dir=tmp_path)
    rates = json.loads((tmp_path / "report.json").read_text())["rates"]
    assert rates == report["rates"]
    assert (rates["escapes"], rates["defective_parts"], rates["false_rejects"], rates["good_parts"]) == (1, 3, 1, 3)
    assert rates["escape_rate"] == pytest.approx(1 / 3) and rates["false_reject_rate"] == pytest.approx(1 / 3)
    assert rates["threshold"] == 0.5 and rates["errors"] == 0
    assert list(rates["per_type"]) == ["good", "dent", "paint"]
    assert rates["per_type"]["good"] == {"parts": 3, "passed": 2, "failed": 1, "errors": 0,
                                         "false_reject_rate": pytest.approx(1 / 3)}
    assert rates["per_type"]["paint"]["escape_rate"] == 1.0 and rates["per_type"]["dent"]["escape_rate"] == 0.0
    table = format_rate_table(rates)
    assert "| good | 3 | 2 | 1 | 0 | false-reject 1/3 (33.3 %) |" in table
    assert "| paint | 1 | 1 | 0 | 0 | escape 1/1 (100.0 %) |" in table and "| all defective | 3 | 1 | 2 | 0 |" in table
    # an ERROR is counted on its own, never as a PASS (nor as caught)
    predictions[5] = InspectionResult.error("no valid points", threshold=0.5)
    labels, defects = [s.label for s in samples], [s.defect for s in samples]
    rates = decision_rates(labels, defects, predictions)
    assert rates["per_type"]["dent"] == {"parts": 2, "passed": 0, "failed": 1, "errors": 1, "escape_rate": 0.0}
    assert rates["escapes"] == 1 and rates["errors"] == 1 and rates["defective_parts"] == 3
    verdicts = verdict_counts(labels, predictions)
    assert (verdicts["true_positives"], verdicts["false_negatives"], verdicts["errors"]) == (1, 1, 1)
    # a defective part without a defect name (defect "good") is of type "defective"
    assert list(decision_rates([1, 0], ["good", "good"], predictions[3:5])["per_type"]) == ["good", "defective"]
    with pytest.raises(ValueError, match="2 labels"):
        decision_rates([1, 0], ["good"], predictions[:2])


def test_bad_inputs_and_table(capsys):
    samples = _test_set()
    with pytest.raises(ValueError, match="6 samples but 5 model predictions"):
        evaluate_predictions(samples, _oracle(samples)[:5])
    unlabelled = generate_sample(0, RES)
    unlabelled.mask, unlabelled.label = None, None  # neither a mask nor a label: nothing to evaluate against
    with pytest.raises(ValueError, match="no ground-truth mask"):
        evaluate_predictions([unlabelled], _oracle(samples)[:1])
    rows = [{"name": "ours", "i_auroc": 0.91234, "p_auroc": float("nan"), "aupro_30": 0.5, "aupro_1": 0.1}]
    table = print_metric_table(rows)
    assert "| ours | 0.912 | n/a | 0.500 | 0.100 |" in table and table in capsys.readouterr().out
    report = evaluate_predictions(samples, _oracle(samples), naive={"i_auroc": 0.6})
    assert [r["name"] for r in report_rows(report)] == ["mentor3ad", "naive baseline"]
    assert "naive baseline | 0.600" in format_metric_table(report_rows(report))


def test_good_only_parts_give_the_false_reject_rate(tmp_path):
    """Good parts without masks (a validation split, a recording of today's good parts): verdicts and the
    false-reject rate are reported, the curve metrics are NaN (one class), and the report files are written."""
    goods = [generate_sample(200 + i, RES, name=f"validation/good/{i:03d}") for i in range(4)]
    for sample in goods:
        sample.mask, sample.label = None, 0
    preds = [decide(np.full(RES, score, np.float32), 0.5) for score in (0.1, 0.2, 0.9, 0.3)]  # one false reject
    report = evaluate_predictions(goods, preds, out_dir=tmp_path)
    assert report["rates"]["false_rejects"] == 1 and report["rates"]["good_parts"] == 4
    assert report["rates"]["false_reject_rate"] == pytest.approx(0.25)
    assert np.isnan(report["metrics"]["i_auroc"]) and np.isnan(report["metrics"]["aupro_30"])
    for name in ("report.json", "roc.png", "pro.png", "gallery.html"):
        assert (tmp_path / name).is_file(), name


TINY = {**LEARNING_CONFIG, "train": dict(mfm_epochs=2, mgm_epochs=3, vm_steps=20, batch_size=2)}


@pytest.mark.slow  # ~17 s alone, more on a loaded machine (trains a tiny model)
def test_evaluate_cli_on_folder_and_bag(tmp_path, capsys):
    pytest.importorskip("torch")
    from mentor3ad.cli import main
    from mentor3ad.config import Mentor3ADConfig
    from mentor3ad.io.bags import write_dataset_bag
    from mentor3ad.io.datasets.mvtec import load_mvtec_split
    from mentor3ad.io.datasets.synthetic import generate_cell_dataset
    from mentor3ad.model.training import train_detector

    data = tmp_path / "cell"
    generate_cell_dataset(data, n_train=4, n_val=2, n_test_good=2, n_test_per_defect=1, resolution=(64, 64),
                          defect_types=["dent", "paint"])
    detector = train_detector(load_mvtec_split(data, "train"), Mentor3ADConfig.from_dict(TINY),
                              val_samples=load_mvtec_split(data, "validation"), progress=False, log=lambda m: None)
    model = detector.save(tmp_path / "m.safetensors")
    out = tmp_path / "report"
    assert main(["evaluate", "--model", str(model), "--data", str(data), "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "| mentor3ad |" in text and "| naive baseline |" in text and "4 images (2 good, 2 anomalous)" in text
    assert "| good + geometry |" in text and "| good + appearance |" in text
    assert "escape rate " in text and "false-reject rate " in text and "| part type | parts | PASS | FAIL |" in text
    assert "| dent | 1 |" in text and "| paint | 1 |" in text and "| good | 2 |" in text
    report = json.loads((out / "report.json").read_text())
    assert report["info"]["model"]["model_id"] == detector.model_id and 0 <= report["metrics"]["i_auroc"] <= 1
    assert set(report["rates"]["per_type"]) == {"good", "dent", "paint"} and report["rates"]["good_parts"] == 2
    assert (out / "gallery.html").is_file() and (out / "pro.png").is_file()
    bag = write_dataset_bag(load_mvtec_split(data, "test"), tmp_path / "test_bag", storage="mcap")
    out_bag = tmp_path / "report_bag"
    assert main(["evaluate", "--model", str(model), "--data", str(bag), "--out", str(out_bag), "--no-progress"]) == 0
    bag_report = json.loads((out_bag / "report.json").read_text())
    # same samples, same model: same metrics whether read from the folder or the bag (clouds keep float32)
    for key in ("i_auroc", "p_auroc", "aupro_30"):
        assert bag_report["metrics"][key] == pytest.approx(report["metrics"][key], abs=1e-6), key
    assert [s["defect"] for s in bag_report["samples"]] == [s["defect"] for s in report["samples"]]
    assert main(["evaluate", "--model", str(tmp_path / "nope.safetensors"), "--data", str(data), "--out", str(out)]) == 1
    assert "mentor3ad evaluate: error: model file not found" in capsys.readouterr().err
