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
    assert detector.training_info["threshold_source"] == "validation"
    # expected errors: one line on stderr naming the problem, non-zero exit, no traceback
    assert cli_main(["train", "--data", str(dataset), "--config", str(config_file), "--set", "train.mgm_epoch=2"]) == 2
    err = capsys.readouterr().err
    assert "mentor3ad train: error:" in err and "train.mgm_epoch" in err and "Traceback" not in err
    assert cli_main(["train", "--data", str(tmp_path), "--config", str(config_file)]) == 1
    assert "not an MVTec" in capsys.readouterr().err


def test_ablate_prints_table_for_all_variants(dataset, config_file, tmp_path, capsys):
    table_json = tmp_path / "ablation.json"
    code = cli_main(["ablate", "--data", str(dataset), "--config", str(config_file), "--cache-dir", str(tmp_path / "cache"),
                        "--json", str(table_json), "--save-dir", str(tmp_path / "models"), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    for name in ablate.VARIANTS:
        assert f"| {name} |" in printed
    assert "I-AUROC" in printed and "AUPRO@1%" in printed and "| naive baseline |" in printed
    result = json.loads(table_json.read_text())
    rows = {row["variant"]: row for row in result["rows"]}
    assert set(rows) == set(ablate.VARIANTS) | {"naive baseline"}
    for row in rows.values():
        for key in ("i_auroc", "p_auroc", "aupro_30", "aupro_1"):
            assert 0.0 <= row[key] <= 1.0 and not math.isnan(row[key])
    identities = result["identities"]
    assert identities["CFM baseline"]["use_mentor"] is False and identities["CFM baseline"]["use_voting"] is False
    assert identities["w/o voting"]["use_mentor"] is True and identities["w/o voting"]["use_voting"] is False
    assert identities["w/o mentor"]["score_maps"] == ["rgb", "xyz"]
    assert len({identity["model_id"] for identity in identities.values()}) == 4
    saved = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert saved == ["cfm_baseline.safetensors", "mentor3ad.safetensors", "wo_mentor.safetensors",
                     "wo_voting.safetensors"]
    assert Detector.load(tmp_path / "models" / "cfm_baseline.safetensors").identity == identities["CFM baseline"]


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
