"""Mixed precision: the backbones' (``features.precision``: fp32 by default, auto = bf16 where the CPU computes it
natively; a model may run in another arithmetic, with a warning when its threshold was calibrated in a different one) and the heads'
(``model.head_precision``, part of the model: training, the threshold's calibration and scoring use the same
arithmetic; a fallback to fp32 is a warning at load)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mentor3ad.io.datasets.synthetic import DEFECT_TYPES, generate_sample  # noqa: E402
from mentor3ad.features.extractor import stack_features  # noqa: E402
from mentor3ad.model.detector import Detector  # noqa: E402
from helpers import train_tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("amp") / "model.safetensors"
    train_tiny_model(path)
    return path


def test_a_fp32_model_runs_its_backbones_in_bf16(model):
    """The run-time override takes effect (different arithmetic, same shapes, finite maps).

    Agreement with fp32 is NOT asserted: with random-init backbones (all this machine has) the features
    are nearly constant across patches and the heads' standardisation amplifies bf16 rounding (measured on
    the demo model: map correlation 0.91, 31 of 34 verdicts differ). It must be re-measured with
    pretrained weights (README, "Speed and memory")."""
    fp32 = Detector.load(model)
    bf16 = Detector.load(model, precision="bf16")
    assert bf16.extractor.config.precision == "bf16" and fp32.extractor.config.precision == "fp32"
    sample = generate_sample(900, (64, 64), defect=DEFECT_TYPES[0])
    a, b = fp32.predict(sample.rgb, sample.xyz), bf16.predict(sample.rgb, sample.xyz)
    assert a.anomaly_map.shape == b.anomaly_map.shape and np.isfinite(b.anomaly_map).all()
    assert not np.array_equal(a.anomaly_map, b.anomaly_map)  # bf16 arithmetic really ran


def test_precision_is_validated_and_cache_keys_differ(model):
    with pytest.raises(ValueError, match="precision"):
        Detector.load(model, precision="int8")
    fp32, bf16 = Detector.load(model), Detector.load(model, precision="bf16")
    assert fp32.extractor.identity() == bf16.extractor.identity()  # same model identity ...
    assert fp32.extractor.identity_hash() != bf16.extractor.identity_hash()  # ... separate feature caches


# ---------------------------------------------------------------- the heads' arithmetic (model.head_precision)
def _probe(monkeypatch, native: bool) -> None:
    """Pretend this CPU has (or lacks) native bf16: only the capability probes are replaced."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: native)


def _train(path, head_precision):
    from mentor3ad.config import Mentor3ADConfig
    from mentor3ad.io.datasets.synthetic import generate_sample
    from mentor3ad.model.training import train_detector
    from helpers import TINY_MODEL_CONFIG

    config = Mentor3ADConfig.from_dict({**TINY_MODEL_CONFIG,
                                        "model": {**TINY_MODEL_CONFIG["model"], "head_precision": head_precision}})
    train = [generate_sample(i, (64, 64), name=f"train/{i}") for i in range(6)]
    val = [generate_sample(100 + i, (64, 64), name=f"val/{i}") for i in range(3)]
    detector = train_detector(train, config, val, progress=False)
    detector.save(path)
    return detector


@pytest.fixture(scope="module")
def head_models(tmp_path_factory):
    """{"auto": a model trained with head_precision auto on a CPU that has bf16 (-> bf16), "fp32": one in fp32}."""
    folder = tmp_path_factory.mktemp("heads_precision")
    with pytest.MonkeyPatch.context() as patch:
        _probe(patch, True)
        return {name: _train(folder / f"{name}.safetensors", name) for name in ("auto", "fp32")}, folder


def test_auto_resolves_to_bf16_only_where_the_cpu_computes_it_natively(monkeypatch):
    from mentor3ad.backbones import resolve_precision

    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert resolve_precision("auto", torch.device("cpu")) == ("bf16" if native else "fp32")
    _probe(monkeypatch, True)
    assert resolve_precision("auto", torch.device("cpu")) == "bf16"
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    _probe(monkeypatch, False)
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"  # an explicit choice is kept (emulated: slower, same maps)


def test_head_precision_is_validated():
    from mentor3ad.config import Mentor3ADConfig
    from mentor3ad.errors import ConfigError

    assert Mentor3ADConfig().model.head_precision == "auto"
    with pytest.raises(ConfigError, match="model.head_precision"):
        Mentor3ADConfig().replace(model={"head_precision": "fp16"})


def test_heads_trained_and_scored_in_bf16_and_fp32_both_give_finite_maps(head_models, monkeypatch, caplog):
    models, folder = head_models
    assert models["auto"].heads.precision == "bf16" and models["auto"].training_info["head_precision"] == "bf16"
    assert models["fp32"].heads.precision == "fp32" and models["fp32"].training_info["head_precision"] == "fp32"
    _probe(monkeypatch, True)
    sample = generate_sample(900, (64, 64), defect=DEFECT_TYPES[0])
    with caplog.at_level("WARNING", logger="mentor3ad"):
        loaded = {name: Detector.load(folder / f"{name}.safetensors") for name in models}
    assert "calibrated with the heads" not in caplog.text  # served as calibrated: no warning
    assert loaded["auto"].heads.precision == "bf16" and loaded["fp32"].heads.precision == "fp32"
    results = {name: detector.predict(sample.rgb, sample.xyz) for name, detector in loaded.items()}
    for name, result in results.items():
        assert result.anomaly_map.dtype == np.float32 and np.isfinite(result.anomaly_map).all(), name
        assert result.verdict.name in ("PASS", "FAIL"), name
    # the same bf16-trained heads scored in fp32: the bf16 arithmetic really ran in scoring
    heads = loaded["auto"].heads
    features = stack_features(loaded["auto"].extractor.extract_batch([sample.rgb], [sample.xyz]))
    bf16_map = heads.final_maps(features.rgb, features.xyz, features.valid)
    heads.precision = "fp32"
    fp32_map = heads.final_maps(features.rgb, features.xyz, features.valid)
    assert bf16_map.dtype == fp32_map.dtype == torch.float32
    assert not torch.equal(bf16_map, fp32_map)


def test_serving_in_fp32_a_threshold_calibrated_in_bf16_warns_once(head_models, monkeypatch, caplog):
    _, folder = head_models
    _probe(monkeypatch, False)  # a CPU without native bf16: "auto" falls back to fp32
    with caplog.at_level("WARNING", logger="mentor3ad"):
        detector = Detector.load(folder / "auto.safetensors")
    assert detector.heads.precision == "fp32"
    warnings = [r.getMessage() for r in caplog.records if "calibrated with the heads" in r.getMessage()]
    assert len(warnings) == 1 and "in bf16" in warnings[0] and "score in fp32" in warnings[0], warnings
    sample = generate_sample(901, (64, 64))
    assert np.isfinite(detector.predict(sample.rgb, sample.xyz).anomaly_map).all()


def test_a_model_file_from_before_the_setting_scores_in_fp32(head_models, monkeypatch, tmp_path, caplog):
    import json

    from safetensors import safe_open
    from mentor3ad.model import checkpoint

    _, folder = head_models
    source = folder / "fp32.safetensors"
    with safe_open(str(source), "pt") as handle:
        metadata = json.loads(handle.metadata()[checkpoint.METADATA_KEY])
    metadata["config"]["model"].pop("head_precision")
    metadata["training_info"].pop("head_precision")
    old = checkpoint.write_checkpoint(tmp_path / "old.safetensors", checkpoint.read_checkpoint(source)[1], metadata)
    _probe(monkeypatch, True)  # even where bf16 would be chosen for "auto"
    with caplog.at_level("WARNING", logger="mentor3ad"):
        detector = Detector.load(old)
    assert "calibrated with the heads" not in caplog.text
    assert detector.config.model.head_precision == "fp32" and detector.heads.precision == "fp32"
    sample = generate_sample(902, (64, 64), defect=DEFECT_TYPES[0])
    same = Detector.load(source).predict(sample.rgb, sample.xyz)
    assert np.array_equal(detector.predict(sample.rgb, sample.xyz).anomaly_map, same.anomaly_map)


def test_bf16_scoring_pads_the_patch_count_without_changing_the_scores(monkeypatch):
    """bf16 heads run P valid patches as padded_count(P) rows (a few kernel shapes instead of one per part);
    the padding changes no score and invalid patches stay 0."""
    from mentor3ad.config import ModelConfig
    from mentor3ad.model import heads as heads_module

    torch.manual_seed(0)
    heads = heads_module.Mentor3ADHeads(8, 5, ModelConfig(mentor_dim=8, mfm_hidden_dim=16, mgm_hidden_dim=16,
                                                          mgm_mentor_dim=8, score_maps=["rgb", "xyz", "mtr"]))
    heads.eval().precision = "bf16"
    rgb, xyz = torch.randn(2, 8, 12, 12), torch.randn(2, 5, 12, 12)
    valid = torch.rand(2, 12, 12) < 0.6
    assert heads_module.padded_count(int(valid.sum()), "bf16") % heads_module.PATCH_BUCKET == 0
    assert heads_module.padded_count(171, "fp32") == 171
    with torch.no_grad():
        padded = heads.score_maps(rgb, xyz, valid)
        monkeypatch.setattr(heads_module, "PATCH_BUCKET", 1)
        exact = heads.score_maps(rgb, xyz, valid)
    for name in ("rgb", "xyz", "mtr"):
        assert padded[name].dtype == torch.float32 and bool((padded[name][~valid] == 0).all())
        assert torch.allclose(padded[name], exact[name], atol=1e-6), name


# ---------------------------------------------------------------- the backbones' arithmetic (features.precision)
def test_feature_precision_auto_resolves_in_the_extractor_and_keys_its_cache(monkeypatch):
    from mentor3ad.config import FeatureConfig
    from mentor3ad.features.extractor import FeatureExtractor
    from helpers import TINY_FEATURES

    assert FeatureConfig().precision == "fp32"  # auto is an opt-in (README "Backbones in bf16")
    _probe(monkeypatch, True)
    auto = FeatureExtractor(FeatureConfig(**{**TINY_FEATURES, "precision": "auto"}))
    explicit = FeatureExtractor(FeatureConfig(**{**TINY_FEATURES, "precision": "bf16"}))
    assert auto.precision == "bf16" and auto.identity_hash() == explicit.identity_hash()  # one cache per arithmetic
    _probe(monkeypatch, False)
    fallback = FeatureExtractor(FeatureConfig(**{**TINY_FEATURES, "precision": "auto"}))
    assert fallback.precision == "fp32"
    assert fallback.identity() == auto.identity() and fallback.identity_hash() != auto.identity_hash()
    sample = generate_sample(903, (64, 64))
    a, b = auto.extract(sample.rgb, sample.xyz), fallback.extract(sample.rgb, sample.xyz)
    assert not torch.equal(a.rgb, b.rgb)  # the bf16 arithmetic really ran where auto chose it


@pytest.fixture(scope="module")
def auto_feature_model(tmp_path_factory):
    """A model trained with features.precision auto on a CPU that has bf16 (backbones in bf16)."""
    from mentor3ad.config import Mentor3ADConfig
    from mentor3ad.model.training import train_detector
    from helpers import TINY_MODEL_CONFIG

    path = tmp_path_factory.mktemp("feature_precision") / "auto.safetensors"
    config = Mentor3ADConfig.from_dict({**TINY_MODEL_CONFIG,
                                        "features": {**TINY_MODEL_CONFIG["features"], "precision": "auto"}})
    with pytest.MonkeyPatch.context() as patch:
        _probe(patch, True)
        train = [generate_sample(i, (64, 64), name=f"train/{i}") for i in range(6)]
        val = [generate_sample(100 + i, (64, 64), name=f"val/{i}") for i in range(3)]
        detector = train_detector(train, config, val, progress=False)
        detector.save(path)
    return detector, path


def test_the_threshold_records_its_backbone_arithmetic_and_another_one_warns(auto_feature_model, monkeypatch, caplog):
    trained, path = auto_feature_model
    assert trained.feature_precision == "bf16" and trained.training_info["feature_precision"] == "bf16"
    _probe(monkeypatch, True)
    with caplog.at_level("WARNING", logger="mentor3ad"):
        same = Detector.load(path)
    assert same.feature_precision == "bf16" and "calibrated with the backbones" not in caplog.text
    _probe(monkeypatch, False)  # a CPU without native bf16: auto runs the backbones in fp32
    caplog.clear()
    with caplog.at_level("WARNING", logger="mentor3ad"):
        other = Detector.load(path)
    warnings = [r.getMessage() for r in caplog.records if "calibrated with the backbones" in r.getMessage()]
    assert other.feature_precision == "fp32"
    assert len(warnings) == 1 and "in bf16" in warnings[0] and "run in fp32" in warnings[0], warnings
    # re-calibrating here records the arithmetic it scored with
    from mentor3ad.model import threshold as records

    other.set_threshold(records.manual(other.threshold * 1.01, replaced=other.threshold))
    assert other.training_info["feature_precision"] == "fp32"


def test_a_model_file_from_before_the_record_keeps_its_stored_arithmetic(auto_feature_model, monkeypatch, tmp_path,
                                                                         caplog):
    """Files without ``feature_precision`` were calibrated in their stored ``features.precision`` (fp32 then)."""
    import json

    from safetensors import safe_open
    from mentor3ad.model import checkpoint

    _, path = auto_feature_model
    with safe_open(str(path), "pt") as handle:
        metadata = json.loads(handle.metadata()[checkpoint.METADATA_KEY])
    metadata["training_info"].pop("feature_precision")
    metadata["config"]["features"]["precision"] = "fp32"
    old = checkpoint.write_checkpoint(tmp_path / "old.safetensors", checkpoint.read_checkpoint(path)[1], metadata)
    _probe(monkeypatch, True)
    with caplog.at_level("WARNING", logger="mentor3ad"):
        detector = Detector.load(old)
    assert detector.feature_precision == "fp32" and "calibrated with the backbones" not in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="mentor3ad"):
        Detector.load(old, precision="bf16")  # the run-time override of an old fp32 file: warned
    assert "calibrated with the backbones in fp32" in caplog.text
