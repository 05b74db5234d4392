"""A model file is one model, with a plausible threshold and a record of its inputs (issue 24 item 2, issue 23):
real tiny checkpoints, forged the way an attacker or a careless tool would."""
import json
import logging
import re

import numpy as np
import pytest

pytest.importorskip("torch")

from helpers import train_tiny_model  # noqa: E402
from mentor3ad.config import CalibrationConfig  # noqa: E402
from mentor3ad.errors import ConfigError, ModelLoadError  # noqa: E402
from mentor3ad.model import checkpoint, integrity  # noqa: E402
from mentor3ad.model.checkpoint import METADATA_KEY, TENSOR_PREFIX  # noqa: E402
from mentor3ad.model.detector import Detector  # noqa: E402
from mentor3ad.model.calibration import calibrate_by_config  # noqa: E402
from mentor3ad.model.threshold import ThresholdRecord, significant  # noqa: E402
from mentor3ad.model.threshold_bounds import plausible_range, threshold_problem  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two valid models of the same architecture: (path, detector) each."""
    folder = tmp_path_factory.mktemp("trust")
    first = train_tiny_model(folder / "first.safetensors", n_train=5, n_val=3)
    second = train_tiny_model(folder / "second.safetensors", n_train=4, n_val=3)
    assert first.model_id != second.model_id
    return (folder / "first.safetensors", first), (folder / "second.safetensors", second)


def _parts(path):
    """(metadata dict, {name: tensor}, raw __metadata__) of a model file, unvalidated."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as handle:
        raw = dict(handle.metadata())
    tensors = {k[len(TENSOR_PREFIX):]: v for k, v in load_file(str(path)).items()}
    return json.loads(raw[METADATA_KEY]), tensors, raw


def _write_raw(path, tensors, raw_metadata):
    from safetensors.torch import save_file

    save_file({TENSOR_PREFIX + k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=raw_metadata)
    return path


def test_saved_files_carry_a_digest_that_load_verifies(models):
    (path, detector), _ = models
    metadata, tensors, raw = _parts(path)
    assert raw[integrity.DIGEST_KEY] == integrity.content_digest(tensors, raw[METADATA_KEY])
    assert raw[integrity.DIGEST_KEY].startswith("sha256:") and len(raw[integrity.DIGEST_KEY]) == 71
    assert Detector.load(path).model_id == detector.model_id


def test_voting_module_tensors_of_another_valid_model_are_refused(models, tmp_path):
    (first, _), (second, _) = models
    metadata, tensors, raw = _parts(first)
    _, other, _ = _parts(second)
    voting = [name for name in tensors if name.startswith("voting.")]
    assert voting and any(not (tensors[n] == other[n]).all() for n in voting)
    grafted = _write_raw(tmp_path / "grafted.safetensors", {**tensors, **{n: other[n] for n in voting}}, raw)
    checkpoint.read_checkpoint_header(grafted)  # a valid layout: only the digest can tell
    with pytest.raises(ModelLoadError, match="its content does not match its digest: the tensors or the metadata "
                                             "were changed after it was written, or come from different models"):
        Detector.load(grafted)


@pytest.mark.parametrize("forged", [1e6, 1e25])
def test_an_edited_threshold_is_refused_with_and_without_a_recomputed_digest(models, tmp_path, forged):
    (path, detector), _ = models
    metadata, tensors, raw = _parts(path)
    metadata["threshold"] = forged
    edited = _write_raw(tmp_path / "edited.safetensors", tensors, {**raw, METADATA_KEY: json.dumps(metadata)})
    with pytest.raises(ModelLoadError, match="does not match its digest"):
        Detector.load(edited)
    no_digest = _write_raw(tmp_path / "nodigest.safetensors", tensors, {METADATA_KEY: json.dumps(metadata)})
    with pytest.raises(ModelLoadError, match=re.escape(f"the threshold {forged:.6g} is not the one its threshold record names")):
        Detector.load(no_digest)
    # a self-consistent forgery: record and digest rewritten too; the calibration scores still tell
    metadata["training_info"]["threshold"]["value"] = forged
    consistent = checkpoint.write_checkpoint(tmp_path / "forged.safetensors", tensors, metadata)
    low, high = plausible_range(detector.threshold_record)
    assert low == 0.0 < detector.threshold <= high < 100 * max(detector.threshold_record.calibration_scores)
    with pytest.raises(ModelLoadError, match=re.escape(f"the model's threshold {forged:.6g} is above the plausible range "
                                                       f"(0, {high:.4g}] of this model (from its 3 good "
                                                       "calibration scores, ") + r".*\): every defect scoring below it "
                                                                                 r"would PASS; refusing"):
        Detector.load(consistent)


def test_files_without_a_digest_or_calibration_scores_load_with_a_warning(models, tmp_path, caplog):
    (path, detector), _ = models
    metadata, tensors, _ = _parts(path)
    old = _write_raw(tmp_path / "old.safetensors", tensors, {METADATA_KEY: json.dumps(metadata)})
    with caplog.at_level(logging.WARNING, logger="mentor3ad"):
        assert Detector.load(old).model_id == detector.model_id
    assert "has no content digest" in caplog.text and "pin the file's sha256" in caplog.text
    caplog.clear()
    del metadata["training_info"]["threshold"]  # a file from before threshold records: a legacy one, no scores
    legacy = checkpoint.write_checkpoint(tmp_path / "legacy.safetensors", tensors, metadata)
    with caplog.at_level(logging.WARNING, logger="mentor3ad"):
        loaded = Detector.load(legacy)
    assert loaded.threshold_record.set_by == "legacy" and plausible_range(loaded.threshold_record) is None
    assert "cannot be checked against calibration scores" in caplog.text and "has no content digest" not in caplog.text


def test_every_calibrated_threshold_lies_in_its_plausible_range():
    rng = np.random.default_rng(7)
    for _ in range(400):
        count = int(rng.integers(1, 80))
        scores = list(np.exp(rng.normal(rng.uniform(-2, 3), rng.uniform(0.01, 1.0), count)))
        calibration = CalibrationConfig(target_false_reject_rate=float(rng.choice([0.001, 0.01, 0.05])),
                                        rule=str(rng.choice(["tail", "quantile"])), margin=float(rng.choice([0, 0.5, 1])))
        record = ThresholdRecord(calibrate_by_config(scores, calibration), calibration.rule,  # as from_good_scores
                                 target_false_reject_rate=calibration.target_false_reject_rate, margin=calibration.margin,
                                 calibration_scores=tuple(sorted(significant(s) for s in scores)))
        assert threshold_problem(record.value, record) is None, (count, calibration, record.value)
        low, high = plausible_range(record)
        assert "every defect scoring below it would PASS" in threshold_problem(high * 1.01, record)
        assert threshold_problem(1e-9, record) is None and "every part would FAIL" in threshold_problem(0.0, record)


def test_a_pin_admits_only_the_expected_file(models, tmp_path):
    (first, _), (second, _) = models
    digest = integrity.file_sha256(first)
    assert integrity.check_pin(first, [digest]) == digest and integrity.check_pin(second, []) == integrity.file_sha256(second)
    with pytest.raises(ModelLoadError, match=f"has sha256 {integrity.file_sha256(second)}, which is not the pinned "
                                             f"model_sha256 \\({digest[:12]}\\.\\.\\.\\)"):
        integrity.check_pin(second, [digest])
    assert integrity.parse_pins(f" {digest.upper()}, {'a' * 64}") == [digest, "a" * 64] and integrity.parse_pins("") == []
    with pytest.raises(ConfigError, match="64 hex digits"):
        integrity.parse_pins("abc")


@pytest.mark.parametrize("features, message", [
    ({"point_backbone": "fpfh", "point_weights": "none", "point_options": {"feature_max_nn": 5000}},
     "FPFH radii must be in (0, 1000] mm and max_nn in [3, 256], got radii (100.0, 250.0) and max_nn (30, 5000)"),
    ({"image_size": 4480, "feature_resolution": 8, "point_image_size": 224}, "features.image_size must be in [8, 1024], got 4480"),
    ({"point_options": {"num_groups": 100000}}, "num_groups must be in [3, 4096]"),
    ({"rgb_options": {"model_kwargs": {"img_size": 4480}}}, "model_kwargs.img_size must be in [8, 1024]"),
    ({"plane_iterations": 10 ** 7}, "features.plane_iterations must be in [1, 4096], got 10000000"),
])
def test_options_that_would_take_minutes_or_gigabytes_are_refused_before_anything_is_built(models, tmp_path,
                                                                                           features, message):
    import time

    (path, _), _ = models
    metadata, tensors, _ = _parts(path)
    stored = metadata["config"]["features"]
    for key, value in features.items():  # options merged into the stored ones, unless the backbone changes
        merge = isinstance(value, dict) and "point_backbone" not in features
        stored[key] = {**stored[key], **value} if merge else value
    forged = checkpoint.write_checkpoint(tmp_path / "options.safetensors", tensors, metadata)
    started = time.perf_counter()
    with pytest.raises(ModelLoadError, match=re.escape(message)):
        Detector.load(forged)
    assert time.perf_counter() - started < 5.0  # refused from the header: nothing was built or run
