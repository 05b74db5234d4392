"""`mentor3ad train --bag`: training from rosbag2 recordings of good parts, as trainer_node does."""
import json

import numpy as np
import pytest
import yaml
from helpers import run_mentor3ad

pytest.importorskip("torch")
pytest.importorskip("rosbags")

from mentor3ad.io.bags import write_dataset_bag  # noqa: E402
from mentor3ad.io.datasets.synthetic import camera_matrix, generate_sample  # noqa: E402
from mentor3ad.model.detector import Detector  # noqa: E402
from helpers import TINY_MODEL_CONFIG  # noqa: E402

SIZE = (64, 64)


def _train(*args):
    return run_mentor3ad("train", "--no-progress", *args)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_bags")
    good = [generate_sample(i, SIZE, name=f"good/{i}") for i in range(8)]
    bag = write_dataset_bag(good, root / "good_depth", storage="mcap", input_mode="depth", camera_info=camera_matrix(SIZE))
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(json.loads(json.dumps(TINY_MODEL_CONFIG))))
    return root, bag, config


def test_train_from_a_depth_bag_holds_out_pairs_and_writes_a_model(setup):
    root, bag, config = setup
    out = root / "model.safetensors"
    code, stdout, output = _train("--bag", str(bag), "--input-mode", "depth", "--val-fraction", "0.25",
                                  "--config", str(config), "--out", str(out))
    assert code == 0, output
    assert "training on 6 pairs, calibrating on 2 held-out pairs" in output, output  # the trainer node's job
    said = [line for line in output.splitlines() if "at threshold" in line]  # both rates: 2 parts x 6 pseudo-defects
    assert len(said) == 1 and "expected false-reject rate" in said[0] and "% of 12 (dent" in said[0], output
    detector = Detector.load(out)
    assert np.isfinite(detector.threshold)
    assert json.loads(stdout.strip().splitlines()[-1])["model_id"] == detector.model_id


def test_train_from_a_bag_without_the_topics_lists_the_topics_it_has(setup):
    root, bag, config = setup
    code, _, output = _train("--bag", str(bag), "--config", str(config), "--out", str(root / "x.safetensors"))
    assert code != 0
    assert "/camera/points" in output and "/camera/depth" in output, output  # wanted vs. present
    assert not (root / "x.safetensors").exists()


def test_train_needs_exactly_one_source(setup):
    root, bag, config = setup
    code, _, output = _train("--config", str(config))
    assert code != 0 and "either --data" in output
