"""Detector API: predict / batch / samples, checkpoint round trip, refusals, atomic save (tiny backbones)."""
import dataclasses
import json
import os

import numpy as np
import pytest
import torch

from helpers import learning_config as tiny_config
from helpers import synthetic_sample, synthetic_set
from mentor3ad.errors import ModelLoadError
from mentor3ad.model.checkpoint import FORMAT_VERSION, METADATA_KEY
from mentor3ad.model.detector import Detector
from mentor3ad.types import InspectionResult


@pytest.fixture(scope="module")
def extractor():
    from mentor3ad.features.extractor import FeatureExtractor

    return FeatureExtractor(tiny_config().features)


@pytest.fixture(scope="module")
def detector(extractor):
    from mentor3ad.model.training import train_detector

    config = tiny_config(train={"mgm_epochs": 20, "mfm_epochs": 5, "vm_steps": 100})
    return train_detector(synthetic_set(8), config, val_samples=synthetic_set(3, start=30), progress=False,
                          log=lambda msg: None, extractor=extractor)


@pytest.fixture(scope="module")
def saved(detector, tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    detector.save(path)
    return path


def _rewrite_metadata(source, target, change):
    from safetensors.torch import load_file, safe_open, save_file

    with safe_open(str(source), "pt") as handle:
        metadata = json.loads(handle.metadata()[METADATA_KEY])
    change(metadata)
    save_file(load_file(str(source)), str(target), metadata={METADATA_KEY: json.dumps(metadata)})


def test_predict_outputs_prediction_at_input_resolution(detector):
    sample = synthetic_sample(50, defect="stain")
    prediction = detector.predict(sample.rgb, sample.xyz)
    assert isinstance(prediction, InspectionResult)
    assert prediction.anomaly_map.shape == (64, 64) and prediction.anomaly_map.dtype == np.float32
    assert prediction.score == pytest.approx(float(prediction.anomaly_map.max()))
    assert prediction.threshold == detector.threshold
    assert prediction.is_anomalous == (prediction.score > detector.threshold)
    timings = detector.timings()
    assert {"features", "heads", "postprocess", "total"} <= set(timings)
    assert any(key.startswith("features_") for key in timings)  # extractor stages merged in
    # threshold is settable and drives the verdict and the regions
    old = detector.threshold
    try:
        detector.threshold = prediction.score * 0.5
        low = detector.predict(sample.rgb, sample.xyz)
        assert low.is_anomalous and low.regions and low.regions[0].peak_score <= prediction.score + 1e-6
        detector.threshold = prediction.score * 2.0
        high = detector.predict(sample.rgb, sample.xyz)
        assert not high.is_anomalous and high.regions == []
    finally:
        detector.threshold = old


def test_defect_pixels_score_higher_than_the_same_pixels_of_normal_parts(detector):
    # (with random tiny backbones the object border dominates the image max, so compare the defect area)
    for index in range(60, 63):
        normal, stained = synthetic_sample(index), synthetic_sample(index, defect="stain")
        inside = stained.mask > 0
        normal_map = detector.predict(normal.rgb, normal.xyz).anomaly_map
        stained_map = detector.predict(stained.rgb, stained.xyz).anomaly_map
        assert stained_map[inside].mean() > 1.3 * normal_map[inside].mean()


def test_batch_and_samples_match_single_predictions(detector, tmp_path):
    samples = [synthetic_sample(70), synthetic_sample(71, defect="bump")]
    single = [detector.predict(s.rgb, s.xyz) for s in samples]
    batch = detector.predict_batch([(s.rgb, s.xyz) for s in samples])
    cached = detector.predict_samples(samples, cache_dir=tmp_path, progress=False)
    cached_again = detector.predict_samples(samples, cache_dir=tmp_path, progress=False)
    for a, b, c, d in zip(single, batch, cached, cached_again):
        assert np.allclose(a.anomaly_map, b.anomaly_map, rtol=1e-4, atol=1e-6)
        assert np.allclose(a.anomaly_map, c.anomaly_map, rtol=1e-4, atol=1e-6)
        assert np.array_equal(c.anomaly_map, d.anomaly_map)
    assert detector.predict_batch([]) == []


def test_bad_inputs_raise_value_errors(detector):
    sample = synthetic_sample(80)
    with pytest.raises(ValueError, match="uint8"):
        detector.predict(sample.rgb.astype(np.float32), sample.xyz)
    with pytest.raises(ValueError, match="pixel-aligned"):
        detector.predict(sample.rgb, sample.xyz[:32])
    with pytest.raises(ValueError, match="organized"):
        detector.predict(sample.rgb, sample.xyz.reshape(-1, 3))
    with pytest.raises(ValueError, match="NaN"):
        detector.threshold = float("nan")


def test_checkpoint_round_trip_gives_same_predictions(detector, saved, extractor):
    loaded = Detector.load(saved)  # builds its own extractor from the stored config (random init from seed)
    assert loaded.threshold == detector.threshold
    assert loaded.identity["model_id"] == detector.identity["model_id"]
    assert loaded.identity["backbone"] == extractor.identity()
    assert loaded.config.to_dict() == detector.config.to_dict()
    sample = synthetic_sample(90, defect="bump")
    a, b = detector.predict(sample.rgb, sample.xyz), loaded.predict(sample.rgb, sample.xyz)
    assert np.array_equal(a.anomaly_map, b.anomaly_map) and a.is_anomalous == b.is_anomalous
    # loading never needs pickle: the file is plain safetensors with a JSON header
    header_length = int.from_bytes(saved.read_bytes()[:8], "little")
    header = json.loads(saved.read_bytes()[8:8 + header_length])
    metadata = json.loads(header["__metadata__"][METADATA_KEY])
    assert metadata["format_version"] == FORMAT_VERSION and metadata["threshold"] == detector.threshold
    assert "training_info" in metadata and metadata["backbone_identity"] == extractor.identity()


def test_refuses_mismatched_identity_format_and_corrupt_files(saved, extractor, tmp_path):
    other = tmp_path / "other_backbone.safetensors"
    _rewrite_metadata(saved, other, lambda m: m["backbone_identity"]["rgb"].update(weights="sha256:0123"))
    with pytest.raises(ModelLoadError, match="different backbone.*rgb.weights"):
        Detector.load(other, extractor=extractor)
    version = tmp_path / "future.safetensors"
    _rewrite_metadata(saved, version, lambda m: m.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(ModelLoadError, match="format version"):
        Detector.load(version, extractor=extractor)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match="corrupt or truncated"):
        Detector.load(truncated, extractor=extractor)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 3)
    with pytest.raises(ModelLoadError, match="corrupt or truncated"):
        Detector.load(garbage, extractor=extractor)
    with pytest.raises(ModelLoadError, match="not found"):
        Detector.load(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(2)}, str(foreign))
    with pytest.raises(ModelLoadError, match="not a Mentor3AD model"):
        Detector.load(foreign, extractor=extractor)
    # a different live extractor (other point grouping) is refused too
    from mentor3ad.features.extractor import FeatureExtractor

    features = dataclasses.asdict(tiny_config().features)
    features["point_options"] = {**features["point_options"], "group_size": 4}
    different = FeatureExtractor(tiny_config(features=features).features)
    with pytest.raises(ModelLoadError, match="points.options.group_size"):
        Detector.load(saved, extractor=different)


def test_atomic_save_keeps_old_file_on_failure(detector, saved, tmp_path, monkeypatch):
    target = tmp_path / "model.safetensors"
    detector.save(target)
    assert target.stat().st_mode & 0o777 == 0o644  # readable by other users (nodes), unlike mkstemp's 0600
    before = target.read_bytes()
    old_threshold = detector.threshold

    def failing_fsync(fd):
        raise OSError("disk full (simulated)")

    try:
        detector.threshold = old_threshold + 1.0
        monkeypatch.setattr(os, "fsync", failing_fsync)
        with pytest.raises(OSError, match="simulated"):
            detector.save(target)
    finally:
        monkeypatch.undo()
        detector.threshold = old_threshold
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]  # no temp file left behind
    assert Detector.load(target, extractor=detector.extractor).threshold == old_threshold
