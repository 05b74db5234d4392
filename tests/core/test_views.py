"""Quarter-turn training views (train.view_augmentation): what a view is, when "auto" adds them, and a real
training run with them (tiny backbones): the record says so, the input checks keep the camera's shape, and
cross-validation holds a part's views out together."""
import numpy as np
import pytest

from mentor3ad.config import Mentor3ADConfig
from mentor3ad.errors import ConfigError, InputError
from mentor3ad.io.datasets.views import augmentation_for, quarter_turns, training_views
from mentor3ad.types import Sample


def part(h=4, w=6, seed=0):
    rng = np.random.default_rng(seed)
    return Sample(rgb=rng.integers(0, 255, (h, w, 3), dtype=np.uint8),
                  xyz=rng.normal(size=(h, w, 3)).astype(np.float32), mask=np.zeros((h, w), np.uint8), label=0,
                  name="train/good/000", source="/data/000.tiff")


def test_a_quarter_turn_moves_pixels_not_points_and_names_the_view():
    sample = part()
    views = quarter_turns(sample)
    assert [v.name for v in views] == ["train/good/000", "train/good/000@rot90", "train/good/000@rot180",
                                       "train/good/000@rot270"]
    assert views[0] is sample and all(v.source is None for v in views[1:])  # no cache key of the original
    turned = views[1]
    assert turned.rgb.shape == (6, 4, 3) and turned.xyz.shape == (6, 4, 3) and turned.mask.shape == (6, 4)
    # the top-right pixel comes to the top-left (counter-clockwise); the 3D point itself is unchanged
    assert np.array_equal(turned.xyz[0, 0], sample.xyz[0, -1]) and np.array_equal(turned.rgb[0, 0], sample.rgb[0, -1])
    assert sorted(map(tuple, turned.xyz.reshape(-1, 3))) == sorted(map(tuple, sample.xyz.reshape(-1, 3)))
    assert np.array_equal(np.rot90(views[3].rgb, 1), sample.rgb)  # four turns are the part again


@pytest.mark.parametrize("mode, parts, expected", [("auto", 10, "rot90"), ("auto", 19, "rot90"), ("auto", 20, "none"),
                                                   ("none", 5, "none"), ("rot90", 100, "rot90")])
def test_auto_turns_only_few_parts(mode, parts, expected):
    assert augmentation_for(mode, parts, augment_below=20) == expected
    assert len(training_views([part(seed=i) for i in range(3)], expected)) == (12 if expected == "rot90" else 3)


def test_a_wrong_mode_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match="view_augmentation must be 'auto', 'none' or 'rot90', got 'd8'"):
        Mentor3ADConfig.from_dict({"train": {"view_augmentation": "d8"}})
    with pytest.raises(InputError, match="one of auto, none, rot90"):
        augmentation_for("mirror", 3, 20)


def test_training_on_few_parts_adds_their_turns_and_records_it(tmp_path):
    pytest.importorskip("torch")
    from helpers import TINY_MODEL_CONFIG
    from mentor3ad.io.datasets.synthetic import generate_sample
    from mentor3ad.model.training import train_detector

    config = Mentor3ADConfig.from_dict({**TINY_MODEL_CONFIG, "calibration": {"cv_folds": 2, "pseudo_defects_per_kind": 0},
                                        "train": {**TINY_MODEL_CONFIG["train"], "view_augmentation": "auto"}})
    train = [generate_sample(seed=i) for i in range(4)]
    val = [generate_sample(seed=100 + i) for i in range(2)]
    lines = []
    detector = train_detector(train, config, val, progress=False, log=lines.append)
    info = detector.training_info
    assert info["view_augmentation"] == {"mode": "rot90", "parts": 4, "views": 16}
    assert info["num_train_samples"] == 4
    assert any("training on each and its 3 quarter turns (16 views" in line for line in lines), lines
    # cross-validation: 2 folds of 2 parts, each trained on the other 2 parts' 8 views, scoring the 2 parts
    assert [line for line in lines if "cross-validation fold" in line] == [
        "calibration: cross-validation fold 1/2 (8 training, 2 scored)",
        "calibration: cross-validation fold 2/2 (8 training, 2 scored)"]
    sources = {s.kind: s.n for s in detector.threshold_record.sources}
    assert sources == {"validation": 2, "cv": 4}
    off = train_detector(train, Mentor3ADConfig.from_dict({**TINY_MODEL_CONFIG, "train": {
        **TINY_MODEL_CONFIG["train"], "view_augmentation": "none"}}), val, progress=False, log=lambda m: None)
    assert off.training_info["view_augmentation"]["views"] == 4
