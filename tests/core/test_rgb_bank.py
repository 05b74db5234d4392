"""The RGB bank beside the heads (model/rgb_bank.py): its rows and map, the fused map, the per-cell choice at
calibration (calibration.rgb_bank), and model files that carry a bank (round trip, forged files refused)."""
import math

import numpy as np
import pytest
import torch

from helpers import TINY_MODEL_CONFIG
from mentor3ad.config import Mentor3ADConfig
from mentor3ad.errors import ConfigError, ModelLoadError
from mentor3ad.features.extractor import FeatureSet
from mentor3ad.io.datasets.synthetic import generate_sample
from mentor3ad.model.rgb_bank import RgbBank, build_rgb_bank


def _features(count, channels=6, side=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return FeatureSet(rgb=torch.randn(count, channels, side, side, generator=generator),
                      xyz=torch.randn(count, 3, side, side, generator=generator),
                      valid=torch.ones(count, side, side, dtype=torch.bool))


def _config(**calibration):
    return Mentor3ADConfig.from_dict({**TINY_MODEL_CONFIG, "calibration": calibration})


def _parts(n_train=6, n_val=3):
    return ([generate_sample(i, (64, 64), name=f"train/{i}") for i in range(n_train)],
            [generate_sample(100 + i, (64, 64), name=f"val/{i}") for i in range(n_val)])


def test_the_bank_map_is_the_distance_to_the_nearest_row_of_every_cell():
    train = _features(3)
    bank = build_rgb_bank(train, patches=10, seed=0)
    assert tuple(bank.patches.shape) == (10, 6)
    rows = train.rgb.permute(0, 2, 3, 1).reshape(-1, 6)
    assert all(bool((rows == row).all(1).any()) for row in bank.patches)  # rows of the training cells
    test = _features(2, seed=1)
    maps = bank.grid_maps(test)
    queries = test.rgb.permute(0, 2, 3, 1).reshape(-1, 6)
    brute = torch.cdist(queries, bank.patches).min(1).values.reshape(2, 4, 4)
    assert maps.shape == (2, 4, 4) and torch.allclose(maps, brute, atol=1e-5)
    every = build_rgb_bank(train, patches=1000, seed=0)  # more asked than there are cells: all of them
    assert every.patches.shape[0] == rows.shape[0] and float(every.grid_maps(train).abs().max()) < 1e-5
    few = build_rgb_bank(train, patches=5, seed=0, candidates=20)  # chosen among 20 random cells
    assert few.patches.shape[0] == 5


def test_the_fused_map_is_each_map_over_its_good_parts_median():
    from mentor3ad.model.scoring import ScoredParts

    bank = RgbBank(4, 6)
    bank.scales.copy_(torch.tensor([2.0, 8.0]))
    heads = ScoredParts([np.full((3, 3), 4.0, np.float32)], [None], [0.5])
    other = ScoredParts([np.arange(9, dtype=np.float32).reshape(3, 3)], [None], [0.0])
    fused = bank.fuse(heads, other)
    assert np.allclose(fused.maps[0], 2.0 + np.arange(9).reshape(3, 3) / 8.0) and fused.levels == [0.5]


@pytest.fixture(scope="module")
def banked(tmp_path_factory):
    """A tiny model that keeps its bank (calibration.rgb_bank always), saved and loaded again."""
    from mentor3ad.model.detector import Detector
    from mentor3ad.model.training import train_detector

    train, val = _parts()
    lines = []
    detector = train_detector(train, _config(rgb_bank="always"), val, progress=False, log=lines.append)
    path = tmp_path_factory.mktemp("bank") / "banked.safetensors"
    detector.save(path)
    return detector, Detector.load(path), path, val, lines


def test_a_model_with_a_bank_scores_heads_plus_bank_and_survives_its_file(banked):
    from mentor3ad.features.cache import extract_features
    from mentor3ad.features.extractor import stack_features
    from mentor3ad.model.scoring import score_feature_set

    detector, loaded, _, val, lines = banked
    bank = detector.heads.rgb_bank
    assert bank is not None and detector.config.model.rgb_bank_patches == bank.patches.shape[0] > 0
    assert any(line.startswith("RGB bank: ") and "rows from 6 training views" in line for line in lines)
    assert loaded.model_id == detector.model_id and loaded.identity["rgb_bank_patches"] == bank.patches.shape[0]
    assert torch.equal(loaded.heads.rgb_bank.patches, bank.patches)
    features = stack_features(extract_features(val, detector.extractor))
    sizes = [s.rgb.shape[:2] for s in val]
    fused = detector.score_features(features, sizes)
    heads = score_feature_set(detector.grid_maps, features, sizes, detector.post)
    alone = score_feature_set(bank.grid_maps, features, sizes, bank.post(detector.config))
    s_heads, s_bank = (float(v) for v in bank.scales)
    for got, h, b in zip(fused.maps, heads.maps, alone.maps):
        assert np.allclose(got, h / s_heads + b / s_bank, atol=1e-5)
    # the threshold was calibrated on the fused scores of the held-out parts, and they are what inference gives
    assert sorted(round(s, 4) for s in fused.image_scores) == pytest.approx(
        sorted(round(s, 4) for s in detector.threshold_record.calibration_scores), abs=2e-4)
    s_heads_expected = float(np.median(heads.image_scores))
    assert s_heads == pytest.approx(s_heads_expected, rel=1e-5) and float(bank.level_cap) > 0
    results = loaded.predict_batch([(s.rgb, s.xyz) for s in val])
    assert [r.score for r in results] == pytest.approx(fused.image_scores, rel=1e-4, abs=1e-5)
    assert all(r.verdict.value == "PASS" for r in results)
    assert "rgb_bank" in loaded.timings()


def test_auto_keeps_the_bank_only_when_clearly_fewer_pseudo_defects_pass_and_records_why():
    from mentor3ad.model.training import train_detector

    train, val = _parts()
    lines = []
    detector = train_detector(train, _config(), val, progress=False, log=lines.append)  # rgb_bank: auto (default)
    choice = detector.training_info["rgb_bank"]
    rates = {name: c["pseudo_defect_escape_rate"] for name, c in choice["candidates"].items()}
    assert set(rates) == {"heads", "heads+bank"} and choice["n"] == 6 * len(val)
    test = choice["paired_test"]  # the same pseudo-defects judged under each: a sign test on those that differ
    assert test["caught"] - test["missed"] == round((rates["heads"] - rates["heads+bank"]) * choice["n"])
    assert choice["chosen"] == test["clearly"] and (not test["clearly"] or rates["heads+bank"] < rates["heads"])
    assert (detector.heads.rgb_bank is not None) == choice["chosen"]
    assert detector.config.model.rgb_bank_patches == (detector.heads.rgb_bank.patches.shape[0] if choice["chosen"] else 0)
    assert any(line.startswith("RGB bank: heads: threshold") for line in lines)
    # the threshold record's escape rate is the kept score's
    kept = choice["candidates"]["heads+bank" if choice["chosen"] else "heads"]
    assert detector.threshold == pytest.approx(kept["threshold"], rel=1e-6)
    assert detector.threshold_record.expected_escape_rate["rate"] == pytest.approx(kept["pseudo_defect_escape_rate"])


def test_off_and_cross_validation_leave_the_heads_alone():
    from mentor3ad.model.training import train_detector

    train, val = _parts(4, 2)
    lines = []
    off = train_detector(train, _config(rgb_bank="never"), val, progress=False, log=lines.append)
    assert off.heads.rgb_bank is None and "rgb_bank" not in off.training_info and off.config.model.rgb_bank_patches == 0
    assert not any(line.startswith("RGB bank") for line in lines)
    lines = []
    cv = train_detector(train, _config(cv_folds=2, pseudo_defects_per_kind=0), val, progress=False, log=lines.append)
    assert cv.heads.rgb_bank is None
    assert "RGB bank: none (calibration.rgb_bank needs held-out good parts and no cross-validated scores)" in lines


def test_bank_settings_are_checked():
    with pytest.raises(ConfigError, match="calibration.rgb_bank must be one of auto, always, never, got 'off'"):
        _config(rgb_bank="off")
    from mentor3ad.config import load_config

    assert load_config(overrides=["calibration.rgb_bank=never"]).calibration.rgb_bank == "never"  # YAML: a string
    with pytest.raises(ConfigError, match="calibration.rgb_bank must be a string"):  # YAML 1.1 reads off as false
        load_config(overrides=["calibration.rgb_bank=off"])
    with pytest.raises(ConfigError, match="model.rgb_bank_patches must be >= 0, got -1"):
        Mentor3ADConfig.from_dict({"model": {"rgb_bank_patches": -1}})


def test_forged_bank_files_are_refused(banked, tmp_path):
    from mentor3ad.model import checkpoint
    from mentor3ad.model.detector import Detector

    detector, _, path, _, _ = banked
    tensors, metadata = detector.state_tensors(), detector.metadata()
    size = detector.config.model.rgb_bank_patches
    without = {k: v for k, v in tensors.items() if not k.startswith("rgb_bank.")}  # config names a bank, no rows
    forged = checkpoint.write_checkpoint(tmp_path / "no_rows.safetensors", without, metadata)
    with pytest.raises(ModelLoadError, match="rgb_bank.patches"):
        Detector.load(forged)
    metadata["config"]["model"]["rgb_bank_patches"] = 1 << 20  # a bank too large to be a model
    forged = checkpoint.write_checkpoint(tmp_path / "huge.safetensors", tensors, metadata)
    with pytest.raises(ModelLoadError, match="rgb_bank_patches = 1048576 exceeds the plausible maximum"):
        Detector.load(forged)
    metadata["config"]["model"]["rgb_bank_patches"] = size
    tensors = dict(tensors)
    tensors["rgb_bank.scales"] = torch.tensor([1.0, math.nan])
    with pytest.raises(Exception, match="finite|NaN|nan"):
        checkpoint.write_checkpoint(tmp_path / "nan.safetensors", tensors, metadata)
    tensors["rgb_bank.scales"] = torch.tensor([1.0, -1.0])  # an anomaly would lower the score: never served
    forged = checkpoint.write_checkpoint(tmp_path / "negative.safetensors", tensors, metadata)
    with pytest.raises(ModelLoadError, match=r"RGB bank is unusable: its scales \[1.0, -1.0\] are not finite numbers > 0"):
        Detector.load(forged)
    assert Detector.load(path).heads.rgb_bank.problem() is None
