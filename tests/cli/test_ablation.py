"""`mentor3ad train` and `mentor3ad ablate` end to end on a tiny synthetic MVTec-layout folder."""
import json
import math

import pytest
import yaml

from mentor3ad.cli import main as cli_main
from mentor3ad.cli.commands import ablate, train
from mentor3ad.model.detector import Detector
from helpers import LEARNING_FEATURES as TINY_FEATURES
from helpers import LEARNING_MODEL as TINY_MODEL
from helpers import LEARNING_TRAIN as TINY_TRAIN
from helpers import synthetic_sample


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from mentor3ad.io.datasets.mvtec import write_mvtec_sample

    root = tmp_path_factory.mktemp("synthetic_category")
    for i in range(5):
        write_mvtec_sample(root, "train", "good", i, synthetic_sample(i))
    for i in range(2):
        write_mvtec_sample(root, "validation", "good", i, synthetic_sample(20 + i))
    for i in range(3):
        write_mvtec_sample(root, "test", "good", i, synthetic_sample(40 + i))
        write_mvtec_sample(root, "test", "stain", i, synthetic_sample(50 + i, defect="stain"))
    return root


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(yaml.safe_dump({"features": TINY_FEATURES,
                                    "model": TINY_MODEL, "train": TINY_TRAIN}))
    return path


def test_train_command_writes_a_loadable_model(dataset, config_file, tmp_path, capsys):
    out = tmp_path / "models" / "tiny.safetensors"
    code = run_cli(["train", "--data", str(dataset), "--config", str(config_file), "--out", str(out),
                       "--cache-dir", str(tmp_path / "cache"), "--shots", "4", "--set", "train.mgm_epochs=2",
                       "--no-progress"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    detector = Detector.load(out)
    assert summary["model_id"] == detector.model_id
    assert detector.training_info["num_train_samples"] == 4 and detector.training_info["shots"] == 4
    assert detector.config.train.mgm_epochs == 2
    assert detector.threshold_record.source == "validation"
    # expected errors: one line on stderr naming the problem, non-zero exit, no traceback
    assert cli_main(["train", "--data", str(dataset), "--config", str(config_file), "--set", "train.mgm_epoch=2"]) == 2
    err = capsys.readouterr().err
    assert "mentor3ad train: error:" in err and "train.mgm_epoch" in err and "Traceback" not in err
    assert cli_main(["train", "--data", str(tmp_path), "--config", str(config_file)]) == 1
    assert "not an MVTec" in capsys.readouterr().err


@pytest.fixture(scope="module")
def ablation(dataset, config_file, tmp_path_factory):
    """One full `mentor3ad ablate` run (every row, JSON, saved models) shared by the tests below."""
    import contextlib
    import io

    root = tmp_path_factory.mktemp("ablation")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = cli_main(["ablate", "--data", str(dataset), "--config", str(config_file), "--cache-dir",
                         str(root / "cache"), "--json", str(root / "ablation.json"), "--save-dir", str(root / "models"),
                         "--no-progress"])
    assert code == 0
    return printed.getvalue(), json.loads((root / "ablation.json").read_text()), root / "models"


def test_ablate_prints_table_for_all_variants(ablation, config_file):
    from mentor3ad.config import load_config

    printed, result, models = ablation
    for name in ablate.ROWS + ["naive baseline"]:
        assert printed.count(f"| {name} |") == 2, name  # the metric table and the verdict table
    assert "I-AUROC" in printed and "AUPRO@1%" in printed and "escape rate" in printed and "false-reject rate" in printed
    rows = {row["variant"]: row for row in result["rows"]}
    assert list(rows) == ablate.ROWS + ["naive baseline"]
    for name, row in rows.items():
        for key in ("i_auroc", "p_auroc", "aupro_30", "aupro_1"):
            assert 0.0 <= row[key] <= 1.0 and not math.isnan(row[key]), (name, key)
        verdicts, rates = row["verdicts"], row["rates"]  # verdict counts at the row's own threshold
        assert verdicts["threshold"] == pytest.approx(row["threshold"]) and verdicts["errors"] == 0
        assert verdicts["true_positives"] + verdicts["false_negatives"] == rates["defective_parts"] == 3
        assert verdicts["false_positives"] + verdicts["true_negatives"] == rates["good_parts"] == 3
        assert rates["escapes"] == verdicts["false_negatives"] and rates["false_rejects"] == verdicts["false_positives"]
        assert rates["per_type"]["stain"]["escape_rate"] == pytest.approx(rates["escape_rate"])
    # the stain is a colour defect: Mentor3AD and the RGB peers catch it, the 3D-only bank is blind to it
    for name in ("Mentor3AD", "PatchCore RGB", "PatchCore RGB+3D (BTF)"):
        assert rows[name]["i_auroc"] > 0.9, name
    identities = result["identities"]
    assert identities["CFM baseline"]["use_mentor"] is False and identities["CFM baseline"]["use_voting"] is False
    assert identities["w/o voting"]["use_mentor"] is True and identities["w/o voting"]["use_voting"] is False
    assert identities["w/o mentor"]["score_maps"] == ["rgb", "xyz"]
    base_maps = list(load_config(config_file).model.score_maps)  # the full rows keep the config's score maps
    assert identities["Mentor3AD"]["score_maps"] == identities["w/o voting"]["score_maps"] == base_maps
    assert len({identity["model_id"] for identity in identities.values()}) == 7
    assert {identities[n]["modality"] for n in ablate.PATCHCORE_ROWS} == {"rgb", "xyz", "rgb+xyz"}
    for name in ablate.PATCHCORE_ROWS:  # 10 % coreset of 5 parts x 8 x 8 cells, calibrated on the validation parts
        assert identities[name]["bank_patches"] == 32 and identities[name]["train_patches"] == 320
        assert [s["kind"] for s in identities[name]["threshold_record"]["sources"]] == ["validation"]
    saved = sorted(p.name for p in models.iterdir())
    assert saved == ["cfm_baseline.safetensors", "mentor3ad.safetensors", "wo_mentor.safetensors",
                     "wo_voting.safetensors"]
    assert Detector.load(models / "cfm_baseline.safetensors").identity == identities["CFM baseline"]


def test_derived_variants_get_their_own_threshold(ablation, dataset):
    """w/o voting and CFM are cut from voting models: their thresholds are re-calibrated on the validation
    split by the training rule (the parent's, on another scale, would PASS every part)."""
    from mentor3ad.model.calibration import calibrate_by_config
    from mentor3ad.io.datasets.mvtec import load_mvtec_split

    _, result, models = ablation
    rows = {row["variant"]: row for row in result["rows"]}
    validation = load_mvtec_split(dataset, "validation")
    for name, parent, slug in (("w/o voting", "Mentor3AD", "wo_voting"), ("CFM baseline", "w/o mentor", "cfm_baseline")):
        detector = Detector.load(models / f"{slug}.safetensors")
        assert detector.threshold == pytest.approx(rows[name]["threshold"])
        assert detector.threshold_record.replaced == pytest.approx(rows[parent]["threshold"])
        assert not math.isclose(rows[name]["threshold"], rows[parent]["threshold"], rel_tol=1e-3)
        scores = [r.score for r in detector.predict_samples(validation, progress=False)]
        assert detector.threshold == pytest.approx(calibrate_by_config(scores, detector.config.calibration))
        frr = rows[name]["validation_false_reject_rate"]
        assert math.isfinite(frr) and frr == pytest.approx(sum(s > detector.threshold for s in scores) / len(scores))
        assert detector.threshold_record.source == "validation"
        # with the parent's threshold this model would call every part good
        assert all(s < rows[parent]["threshold"] for s in scores)


def test_ablate_reuses_a_model_from_train(dataset, config_file, ablation, tmp_path, caplog, capsys):
    import logging

    model = tmp_path / "full.safetensors"
    assert run_cli(["train", "--data", str(dataset), "--config", str(config_file), "--out", str(model),
                    "--cache-dir", str(tmp_path / "cache"), "--no-progress"]) == 0
    given = Detector.load(model)
    caplog.set_level(logging.INFO, logger="mentor3ad.ablate")
    out = tmp_path / "reuse.json"
    assert cli_main(["ablate", "--data", str(dataset), "--model", str(model), "--cache-dir", str(tmp_path / "cache"),
                     "--variants", "Mentor3AD", "w/o voting", "PatchCore RGB", "--json", str(out), "--no-progress"]) == 0
    messages = [r.getMessage() for r in caplog.records if r.name == "mentor3ad.ablate"]
    assert any(f"reusing model {given.model_id}" in m for m in messages)
    assert not any(m.startswith("training ") for m in messages)  # nothing retrained
    result = json.loads(out.read_text())
    rows = {row["variant"]: row for row in result["rows"]}
    assert list(rows) == ["Mentor3AD", "w/o voting", "PatchCore RGB", "naive baseline"]
    assert rows["Mentor3AD"]["model_id"] == given.model_id and result["identities"]["Mentor3AD"] == given.identity
    assert rows["Mentor3AD"]["threshold"] == given.threshold
    # the same training on the same data (deterministic): the rows equal the full ablation's
    full = {row["variant"]: row for row in ablation[1]["rows"]}
    for name in ("Mentor3AD", "w/o voting", "PatchCore RGB"):
        assert rows[name]["i_auroc"] == pytest.approx(full[name]["i_auroc"])
        assert rows[name]["threshold"] == pytest.approx(full[name]["threshold"])
    # the model brings its config: --config / --set are refused, and so is a model without voting
    capsys.readouterr()
    assert cli_main(["ablate", "--data", str(dataset), "--model", str(model), "--set", "train.mgm_epochs=1"]) == 2
    assert "mentor3ad ablate: error: ablate --model: the model's config" in capsys.readouterr().err
    assert cli_main(["ablate", "--data", str(dataset), "--model", str(ablation[2] / "wo_voting.safetensors")]) == 2
    assert "is not a full Mentor3AD model" in capsys.readouterr().err


def test_without_voting_matches_a_separately_trained_model(dataset):
    """The shortcut used by `ablate` (drop the VM of the full model) equals training with voting off."""
    import numpy as np

    from mentor3ad.config import Mentor3ADConfig
    from mentor3ad.io.datasets.mvtec import load_mvtec_split
    from mentor3ad.features.extractor import FeatureExtractor
    from mentor3ad.model.training import train_detector

    base = {"features": TINY_FEATURES, "model": TINY_MODEL, "train": TINY_TRAIN}
    config = Mentor3ADConfig.from_dict(base)
    samples = load_mvtec_split(dataset, "train")
    extractor = FeatureExtractor(config.features)
    full = train_detector(samples, config, progress=False, log=lambda m: None, extractor=extractor)
    no_vote_config = Mentor3ADConfig.from_dict({**base, "model": {**TINY_MODEL, "use_voting": False}})
    separate = train_detector(samples, no_vote_config, progress=False, log=lambda m: None, extractor=extractor)
    derived = ablate.without_voting(full)
    derived.set_level_cap(separate.level_cap)  # calibration's, as the threshold: the parent's until re-calibrated
    test = load_mvtec_split(dataset, "test")[-1]
    assert np.array_equal(derived.predict(test.rgb, test.xyz).anomaly_map,
                          separate.predict(test.rgb, test.xyz).anomaly_map)


def run_cli(argv):
    """Run a sub-command through the real parser (train is listed in mentor3ad.cli)."""
    import argparse

    parser = argparse.ArgumentParser(prog="mentor3ad")
    sub = parser.add_subparsers(dest="command")
    train.register(sub)
    ablate.register(sub)
    args = parser.parse_args(argv)
    return args.func(args)
