"""The pseudo-defect escape rate at calibration (model/escape.py): training scores seeded pseudo-defects of
the held-out good parts as inference scores parts, stores the rate and the alternatives table in the threshold
record (and the model file), and logs both expected rates; model files without them load unchanged."""
import json

import numpy as np
import pytest

from helpers import TINY_MODEL_CONFIG
from mentor3ad.config import CalibrationConfig, Mentor3ADConfig
from mentor3ad.io.datasets.pseudo_defects import KINDS, pseudo_defects
from mentor3ad.io.datasets.synthetic import generate_sample
from mentor3ad.model import escape
from mentor3ad.model.calibration import calibrate_by_config

pytest.importorskip("torch")


def _parts(n_train=6, n_val=3):
    return ([generate_sample(i, (64, 64), name=f"train/{i}") for i in range(n_train)],
            [generate_sample(100 + i, (64, 64), name=f"val/{i}") for i in range(n_val)])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from mentor3ad.model.training import train_detector

    train, val = _parts()
    lines = []
    detector = train_detector(train, Mentor3ADConfig.from_dict(TINY_MODEL_CONFIG), val, progress=False,
                              log=lines.append)
    path = tmp_path_factory.mktemp("escape") / "tiny.safetensors"
    detector.save(path)
    return detector, val, lines, path


def test_training_stores_the_pseudo_defect_escape_rate_of_inference_scores(trained):
    detector, val, _, _ = trained
    record = detector.threshold_record
    escape_rate = record.expected_escape_rate
    assert (escape_rate["source"], escape_rate["n"], escape_rate["per_part_and_kind"]) == ("pseudo-defects", 18, 1)
    assert list(escape_rate["per_kind"]) == list(KINDS) == list(escape_rate["scores"])
    # the stored scores are what predict_samples gives the same seeded pseudo-defects
    defects = pseudo_defects(val, KINDS, 1, seed=detector.config.train.seed)
    predicted = [p.score for p in detector.predict_samples(defects)]
    stored = np.concatenate([escape_rate["scores"][k] for k in KINDS])
    expected = np.concatenate([sorted(s for d, s in zip(defects, predicted) if d.defect == k) for k in KINDS])
    assert stored == pytest.approx(expected, rel=1e-5)
    assert escape_rate["rate"] == pytest.approx(np.mean(np.asarray(predicted) <= record.value))
    for kind in KINDS:
        kind_scores = [s for d, s in zip(defects, predicted) if d.defect == kind]
        assert escape_rate["per_kind"][kind] == pytest.approx(np.mean(np.asarray(kind_scores) <= record.value))


def test_the_alternatives_table_and_the_chosen_row(trained):
    detector, _, _, _ = trained
    record = detector.threshold_record
    rows = record.alternatives
    assert [r["target_false_reject_rate"] for r in rows] == [0.005, 0.01, 0.02, 0.05, None]
    assert rows[-1]["at"] == "max"
    assert [r["chosen"] for r in rows] == [False, False, True, False, False] and rows[2]["threshold"] == record.value
    scores = list(record.calibration_scores)
    assert rows[3]["threshold"] == pytest.approx(calibrate_by_config(scores, detector.config.calibration, 0.05))
    assert rows[-1]["threshold"] == max(scores)
    by_threshold = sorted(rows, key=lambda r: r["threshold"])  # a lower threshold: more false rejects, fewer escapes
    assert [r["pseudo_defect_escape_rate"] for r in by_threshold] == sorted(r["pseudo_defect_escape_rate"] for r in rows)
    assert [r["expected_false_reject_rate"] for r in by_threshold] == \
        sorted((r["expected_false_reject_rate"] for r in rows), reverse=True)
    # the rows' estimates come from the stored (6 significant digits) scores, the record's from the exact ones: far
    # out in the tail (here ~1e-8) the rounding shows in the 4th digit
    assert rows[2]["expected_false_reject_rate"] == pytest.approx(record.expected_false_reject_rate["expected"],
                                                                  rel=1e-3)
    assert rows[2]["pseudo_defect_escape_rate"] == record.expected_escape_rate["rate"]


def test_the_training_log_says_both_rates_and_the_table(trained):
    _, _, lines, _ = trained
    text = "\n".join(lines)
    assert "pseudo-defect escape rate: 18 pseudo-defects of 3 calibration parts scored in" in text
    summary = [line for line in lines if line.startswith("at threshold ")]
    assert len(summary) == 1 and "expected false-reject rate" in summary[0]
    assert "pseudo-defect escape rate" in summary[0] and "not real defects" in summary[0]
    table = [line for line in lines
             if line.startswith("  ") and ("target false-reject" in line or "max calibration" in line)]
    assert len(table) == 5 and sum(line.lstrip().startswith("*") for line in table) == 1


def test_the_record_travels_with_the_model_file_and_old_files_load_unchanged(trained, tmp_path):
    from safetensors.torch import load_file, safe_open, save_file

    from mentor3ad.model.checkpoint import METADATA_KEY
    from mentor3ad.model.detector import Detector

    detector, _, _, path = trained
    loaded = Detector.load(path)
    assert loaded.threshold_record == detector.threshold_record and loaded.threshold_record.alternatives
    with safe_open(str(path), "pt") as handle:
        metadata = json.loads(handle.metadata()[METADATA_KEY])
    for key in ("expected_escape_rate", "alternatives"):  # a model file from before them
        del metadata["training_info"]["threshold"][key]
    old = tmp_path / "old.safetensors"
    save_file(load_file(str(path)), str(old), metadata={METADATA_KEY: json.dumps(metadata)})
    record = Detector.load(old).threshold_record
    assert record.value == detector.threshold
    assert record.calibration_scores == detector.threshold_record.calibration_scores
    assert record.expected_escape_rate == {} and record.alternatives == ()
    assert escape.summary(record).endswith("pseudo-defect escape rate not estimated") and escape.table(record) == []


def test_skipped_when_switched_off_or_without_held_out_parts(trained):
    from mentor3ad.model.training import train_detector

    detector, val, _, _ = trained
    lines = []
    record = detector.threshold_record
    off = escape.estimate(record, detector, val, CalibrationConfig(pseudo_defects_per_kind=0), log=lines.append)
    assert off is record and lines == ["pseudo-defect escape rate: skipped (calibration.pseudo_defects_per_kind is 0)"]
    train, _ = _parts(n_train=4)
    lines = []
    alone = train_detector(train, Mentor3ADConfig.from_dict(TINY_MODEL_CONFIG), None, progress=False, log=lines.append)
    assert alone.threshold_record.expected_escape_rate == {}
    assert any(line.startswith("pseudo-defect escape rate: skipped (no held-out good parts") for line in lines)


def test_auto_keeps_the_maximum_only_when_it_lets_clearly_fewer_pseudo_defects_pass(trained):
    """calibration.image_score auto (default): the peak above the part level and the map's maximum are compared on
    one scoring of the held-out parts' pseudo-defects, each at its own threshold by the configured rule; the
    model keeps the maximum only when a sign test on the pseudo-defects they judge differently says it lets
    clearly fewer pass (else the level), and the record's rates are those of the one kept."""
    from mentor3ad.model.detector import Detector

    detector, _, lines, path = trained
    info = detector.training_info["image_score"]
    rates = {name: c["pseudo_defect_escape_rate"] for name, c in info["candidates"].items()}
    assert set(rates) == {"level", "max"} and info["n"] == 18
    test = info["paired_test"]
    assert test["caught"] - test["missed"] == round((rates["level"] - rates["max"]) * info["n"])
    assert info["chosen"] == ("max" if test["clearly"] else "level")
    assert detector.config.model.level_percentile == (0.0 if info["chosen"] == "max" else 90.0)
    assert detector.threshold == pytest.approx(info["candidates"][info["chosen"]]["threshold"])
    assert detector.threshold_record.expected_escape_rate["rate"] == pytest.approx(rates[info["chosen"]])
    assert any(line.startswith("image score: level: threshold") for line in lines), lines
    loaded = Detector.load(path)
    assert loaded.config.model.level_percentile == detector.config.model.level_percentile
    assert loaded.level_cap == detector.level_cap and loaded.model_id == detector.model_id


@pytest.mark.parametrize("choice", ["level", "max"])
def test_image_score_level_or_max_is_kept_as_configured(choice):
    import math

    from mentor3ad.model.training import train_detector

    train, val = _parts(4, 2)
    config = Mentor3ADConfig.from_dict({**TINY_MODEL_CONFIG, "calibration": {"image_score": choice, "rgb_bank": "never"}})
    detector = train_detector(train, config, val, progress=False, log=lambda message: None)
    if choice == "max":  # stored as the raw map: level_percentile 0, no cap
        assert detector.config.model.level_percentile == 0.0 and math.isinf(detector.level_cap)
    else:
        assert detector.config.model.level_percentile == 90.0 and math.isfinite(detector.level_cap)
    assert "image_score" not in detector.training_info  # nothing compared
    assert detector.threshold_record.expected_escape_rate["n"] == 12  # the estimate of the kept score


def test_image_score_must_be_known():
    from mentor3ad.errors import ConfigError

    with pytest.raises(ConfigError, match="calibration.image_score must be one of auto, level, max"):
        CalibrationConfig(image_score="mean")


def test_auto_without_scorable_pseudo_defects_keeps_the_level_and_trains(monkeypatch):
    """A pseudo-defect that cannot be scored (InputError) leaves the choice to the level, as it leaves the
    threshold without the escape estimate: training goes on."""
    from mentor3ad.errors import InputError
    from mentor3ad.model.training import train_detector

    def unscorable(*args, **kwargs):
        raise InputError("no valid 3D points")

    monkeypatch.setattr(escape, "score_pseudo_defect_parts", unscorable)
    monkeypatch.setattr(escape, "score_pseudo_defects", unscorable)
    train, val = _parts(4, 2)
    lines = []
    detector = train_detector(train, Mentor3ADConfig.from_dict(TINY_MODEL_CONFIG), val, progress=False, log=lines.append)
    assert detector.config.model.level_percentile == 90.0 and "image_score" not in detector.training_info
    assert "image score: the peak above the part level (a pseudo-defect could not be scored: no valid 3D points)" in lines
    assert detector.threshold_record.expected_escape_rate == {}


def test_a_choice_leaves_its_default_only_on_a_clear_paired_difference():
    """Calibration's choices (image score, RGB bank) compare two operating points on the same pseudo-defects:
    a lower escape rate by a few parts that could be chance keeps the default."""
    default = [1.0] * 20  # every pseudo-defect passes the default's threshold 2
    seven = escape.clearly_fewer_escapes(default, 2.0, [3.0] * 7 + [1.0] * 13, 2.0)
    assert seven == {"caught": 7, "missed": 0, "p_value": pytest.approx(0.5 ** 7), "alpha": 0.05, "clearly": True}
    # 10 more caught, 6 more missed: 4 fewer pass, as often by chance as not (p 0.23)
    mixed = escape.clearly_fewer_escapes([1.0] * 10 + [3.0] * 6 + [1.0] * 4, 2.0, [3.0] * 10 + [1.0] * 10, 2.0)
    assert (mixed["caught"], mixed["missed"], mixed["clearly"]) == (10, 6, False)
    assert mixed["p_value"] == pytest.approx(0.2272, abs=1e-4)
    assert "not clearly better" in escape.describe_choice(mixed) and "not" not in escape.describe_choice(seven)
    # each at its own threshold; kind -> scores dicts pair in their order; a tie or nothing different: the default
    assert escape.clearly_fewer_escapes({"dent": [1.0, 5.0], "hole": [2.5]}, 3.0, {"dent": [1.0, 5.0], "hole": [2.5]},
                                        2.0)["caught"] == 1
    assert not escape.clearly_fewer_escapes(default, 2.0, default, 2.0)["clearly"]
    with pytest.raises(ValueError, match="paired comparison of 20 and 19"):
        escape.clearly_fewer_escapes(default, 2.0, default[1:], 2.0)
