"""Mentor3AD heads: shapes, losses, ablation wiring, OC-SVM (random tensors, no backbones)."""
import pytest
import torch
import torch.nn.functional as F

from mentor3ad.config import ModelConfig
from mentor3ad.errors import ModelError
from mentor3ad.model.heads import Mentor3ADHeads, cosine_distance_map, cosine_loss, info_nce
from mentor3ad.model.voting import OneClassSVM, RefinementConv, VotingModule

RGB_DIM, XYZ_DIM, RES = 24, 20, 8


def tiny_config(**overrides) -> ModelConfig:
    values = dict(mentor_dim=16, mfm_hidden_dim=32, mgm_hidden_dim=32, mgm_mentor_dim=8, vote_levels=4,
                  score_maps=["rgb", "xyz", "mtr"])  # the paper's three maps
    values.update(overrides)
    return ModelConfig(**values)


def random_features(batch=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    rgb = torch.randn(batch, RGB_DIM, RES, RES, generator=generator)
    xyz = torch.randn(batch, XYZ_DIM, RES, RES, generator=generator)
    valid = torch.rand(batch, RES, RES, generator=generator) > 0.3
    return rgb, xyz, valid


def test_full_model_shapes_and_invalid_patches_zero():
    torch.manual_seed(0)
    heads = Mentor3ADHeads(RGB_DIM, XYZ_DIM, tiny_config())
    rgb, xyz, valid = random_features()
    out = heads(rgb, xyz, valid)
    assert set(out) == {"rgb", "xyz", "mtr", "final"}
    for name, value in out.items():
        assert value.shape == (2, RES, RES), name
        assert torch.all(value[~valid] == 0), name
        assert torch.all(value >= 0), name
    assert heads.mfm(rgb, xyz).shape == (2, 16, RES, RES)
    rgb_rec, xyz_rec = heads.mgm(rgb, xyz, heads.mfm(rgb, xyz))
    assert rgb_rec.shape == rgb.shape and xyz_rec.shape == xyz.shape


def test_info_nce_is_the_symmetric_cross_entropy():
    generator = torch.Generator().manual_seed(1)
    query, key = torch.randn(40, 8, generator=generator), torch.randn(40, 8, generator=generator)
    logits = F.normalize(query, dim=1) @ F.normalize(key, dim=1).t() / 0.07
    targets = torch.arange(40)
    expected = 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets))
    assert torch.allclose(info_nce(query, key, 0.07), expected, rtol=1e-5)


@pytest.mark.parametrize("temperature", [0.1, 1.0, 0.02])  # 0.02: logits span 100, the log-sum-exps' own path
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_info_nce_value_and_gradients_are_the_symmetric_cross_entropys(temperature, dtype):
    """The one-exp InfoNCE (forward and backward) against torch's cross entropy, on float32 and bf16 inputs."""
    generator = torch.Generator().manual_seed(2)
    query = torch.randn(96, 16, generator=generator)
    key = query + torch.randn(96, 16, generator=generator)
    query, key = query.to(dtype).requires_grad_(), key.to(dtype).requires_grad_()
    loss = info_nce(query, key, temperature)
    gradients = torch.autograd.grad(loss, (query, key))
    logits = (F.normalize(query, dim=1) @ F.normalize(key, dim=1).t()).float() / temperature
    targets = torch.arange(96)
    expected = 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets))
    expected_gradients = torch.autograd.grad(expected, (query, key))
    assert loss.dtype == torch.float32 and torch.allclose(loss, expected, rtol=1e-5)
    for gradient, reference in zip(gradients, expected_gradients):
        assert gradient.dtype == dtype
        scale = float(reference.float().abs().max())
        assert float((gradient.float() - reference.float()).abs().max()) <= 1e-4 * scale


def test_info_nce_lower_for_aligned_than_shuffled_pairs():
    generator = torch.Generator().manual_seed(1)
    query = torch.randn(64, 16, generator=generator)
    aligned = query + 0.1 * torch.randn(64, 16, generator=generator)
    shuffled = aligned[torch.randperm(64, generator=generator)]
    assert info_nce(query, aligned, 0.1) < info_nce(query, shuffled, 0.1) - 1.0
    with pytest.raises(ValueError, match="equal shape"):
        info_nce(query, aligned[:10], 0.1)


def test_cosine_loss_zero_on_identical_inputs_and_positive_otherwise():
    rgb, _, valid = random_features()
    assert float(cosine_loss(rgb, rgb, valid)) == pytest.approx(0.0, abs=1e-6)
    assert float(cosine_loss(-rgb, rgb, valid)) == pytest.approx(2.0, abs=1e-5)
    distance = cosine_distance_map(rgb.flip(1), rgb, valid)
    assert distance.shape == valid.shape and torch.all(distance[~valid] == 0) and distance[valid].mean() > 0.1


def test_ablation_switch_wiring():
    rgb, xyz, valid = random_features()
    # CFM baseline: no MFM at all, no voting, final = product of RGB and XYZ maps
    cfm = Mentor3ADHeads(RGB_DIM, XYZ_DIM, tiny_config(use_mentor=False, use_voting=False, score_maps=["rgb", "xyz"]))
    assert cfm.mfm is None and cfm.voting is None
    assert not hasattr(cfm.mgm.rgb_to_xyz, "mentor_mlp")
    out = cfm(rgb, xyz, valid)
    assert set(out) == {"rgb", "xyz", "final"}
    assert torch.allclose(out["final"], out["rgb"] * out["xyz"])
    # w/o voting: product of the three maps
    no_vote = Mentor3ADHeads(RGB_DIM, XYZ_DIM, tiny_config(use_voting=False))
    out = no_vote(rgb, xyz, valid)
    assert torch.allclose(out["final"], out["rgb"] * out["xyz"] * out["mtr"])
    # the mentor actually changes the MGM output
    with_mentor = Mentor3ADHeads(RGB_DIM, XYZ_DIM, tiny_config())
    mentor = with_mentor.mfm(rgb, xyz)
    a = with_mentor.mgm.rgb_to_xyz(rgb, mentor)
    b = with_mentor.mgm.rgb_to_xyz(rgb, mentor + 1.0)
    assert not torch.allclose(a, b)
    with pytest.raises(ModelError, match="needs the mentor"):
        with_mentor.mgm.rgb_to_xyz(rgb, None)
    # one map only, mentor score map without mentor guidance keeps an MFM
    only_mtr = Mentor3ADHeads(RGB_DIM, XYZ_DIM, tiny_config(use_mentor=False, score_maps=["mtr"]))
    assert only_mtr.mfm is not None and only_mtr.voting.num_maps == 1
    assert set(only_mtr(rgb, xyz, valid)) == {"mtr", "final"}
    # sum fusion variants build and run
    summed = Mentor3ADHeads(RGB_DIM, XYZ_DIM, tiny_config(mfm_fusion="sum", mgm_fusion="sum"))
    assert summed(rgb, xyz, valid)["final"].shape == (2, RES, RES)


def test_bad_inputs_and_config_raise_clear_errors():
    heads = Mentor3ADHeads(RGB_DIM, XYZ_DIM, tiny_config())
    rgb, xyz, valid = random_features()
    with pytest.raises(ModelError, match="channels"):
        heads(rgb[:, :5], xyz, valid)
    with pytest.raises(ModelError, match="disagree"):
        heads(rgb, xyz[:, :, :4, :4], valid)
    with pytest.raises(ValueError, match="score_maps"):
        tiny_config(score_maps=["depth"]).validate()
    with pytest.raises(ValueError, match="ocsvm_kernel"):
        tiny_config(ocsvm_kernel="poly").validate()


def test_voting_initialisation_is_plain_product_at_level_one():
    config = tiny_config(vote_levels=4)
    voting = VotingModule(3, config)
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(2, 3, RES, RES, generator=generator) * 0.5 + 0.01
    levels = voting.levels(scores)
    assert levels.shape == (2, 4, RES, RES)
    assert torch.allclose(voting.exponents[0], torch.ones(3))  # level 1: exactly the plain product's exponents
    assert torch.allclose(voting.exponents[1:], torch.eye(3), atol=1e-3)
    # the refinement kernels start at 1 - 4e-4 on the centre tap
    assert torch.allclose(levels[:, 0], scores.prod(dim=1), rtol=0, atol=2e-3 * float(scores.prod(dim=1).max()))
    for level in range(1, 4):
        assert torch.allclose(levels[:, level], scores[:, level - 1], rtol=0, atol=2e-3)
    refine = RefinementConv(4, 3)
    smooth = torch.linspace(0.1, 0.5, RES * RES).view(1, 1, RES, RES)
    assert torch.allclose(refine(smooth), smooth, rtol=2e-3)
    lower, upper = refine.kernels()
    assert torch.allclose(lower.sum(dim=(1, 2, 3)), torch.ones(4)) and torch.isclose(upper.sum(), torch.tensor(1.0))


def test_voting_levels_are_each_levels_own_refinement():
    """levels() runs the N refinements as grouped convolutions: the same values (and gradients) as each
    RefinementConv on its own level's product, also with trained (non-identity) kernels."""
    config = tiny_config(vote_levels=4)
    voting = VotingModule(2, config)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for refine in voting.refinements:
            refine.lower_logits.copy_(torch.randn(refine.lower_logits.shape, generator=generator))
            refine.upper_logits.copy_(torch.randn(refine.upper_logits.shape, generator=generator))
        voting.exponent_logits.copy_(torch.randn(voting.exponent_logits.shape, generator=generator))
    scores = torch.rand(3, 2, RES, RES, generator=generator) * 0.5 + 0.01
    products = torch.exp(torch.einsum("nm,bmhw->bnhw", voting.exponents, torch.log(scores)))
    expected = torch.cat([refine(products[:, n:n + 1]) for n, refine in enumerate(voting.refinements)], dim=1)
    levels = voting.levels(scores)
    assert levels.is_contiguous()
    assert torch.allclose(levels, expected.clamp_min(config.score_eps), rtol=1e-6, atol=1e-7)
    assert not torch.allclose(levels, products, atol=1e-3)  # the kernels do work: not the identity
    levels.log().sum().backward()
    grouped_grads = [refine.lower_logits.grad.clone() for refine in voting.refinements]
    voting.zero_grad()
    expected.clamp_min(config.score_eps).log().sum().backward()
    for grouped, single in zip(grouped_grads, (refine.lower_logits.grad for refine in voting.refinements)):
        assert torch.allclose(grouped, single, rtol=1e-4, atol=1e-4 * float(single.abs().max()))  # summation order


def test_trained_voting_keeps_level_maps_informative():
    """The OC-SVM objective prefers constant features; the constrained VM must not collapse to them."""
    from mentor3ad.model.voting import fit_voting

    torch.manual_seed(0)
    heads = Mentor3ADHeads(RGB_DIM, XYZ_DIM, tiny_config(vote_levels=4))
    generator = torch.Generator().manual_seed(5)
    maps = torch.rand(6, 3, RES, RES, generator=generator) * 0.5 + 0.05
    valid = torch.ones(6, RES, RES, dtype=torch.bool)
    before = heads.voting.levels(maps).detach()
    history = fit_voting(heads.voting, maps, valid, steps=300, lr=0.05, anchor_weight=0.0)
    after = heads.voting.levels(maps).detach()
    assert history[-1] < history[0]
    assert torch.allclose(heads.voting.exponents.sum(dim=1), torch.tensor([3.0, 1.0, 1.0, 1.0]), atol=1e-5)
    for level in range(4):
        spread_before = torch.log(before[:, level]).std()
        spread_after = torch.log(after[:, level]).std()
        assert spread_after > 0.2 * spread_before, level
        assert after[:, level].min() > 10 * heads.config.score_eps


@pytest.mark.parametrize("kernel", ["linear", "rff"])
def test_ocsvm_objective_decreases_and_scores_outliers_higher(kernel):
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    # normal data: positive features around 2 (like -log of small score maps)
    normal = 2.0 + 0.2 * torch.randn(500, 3, generator=generator)
    svm = OneClassSVM(3, kernel=kernel, nu=0.1, rff_dim=128, rff_gamma=0.5)
    svm.set_standardisation(normal)
    optimiser = torch.optim.Adam(svm.parameters(), lr=0.02)
    first = float(svm.objective(normal).detach())
    for _ in range(400):
        loss = svm.objective(normal)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    final = float(svm.objective(normal).detach())
    # RFF features have norm <= 1, so its objective values are small
    assert final < first - (0.1 if kernel == "linear" else 0.005)
    with torch.no_grad():
        inlier_scores = svm(normal)
        outliers = 2.0 - 1.5 + 0.2 * torch.randn(100, 3, generator=generator)  # larger scores -> smaller -log
        outlier_scores = svm(outliers)
    assert outlier_scores.mean() > inlier_scores.mean()
    # about nu of the training points lie outside the learned support
    assert 0.02 < float((inlier_scores > 0).float().mean()) < 0.3
    assert float((outlier_scores > 0).float().mean()) > 0.9


def test_feature_standardisation_removes_common_offset_and_scale():
    rgb, xyz, valid = random_features()
    torch.manual_seed(0)
    plain = Mentor3ADHeads(RGB_DIM, XYZ_DIM, tiny_config(standardize_features=False))
    torch.manual_seed(0)
    standardised = Mentor3ADHeads(RGB_DIM, XYZ_DIM, tiny_config(standardize_features=True))
    rgb_offset, xyz_offset = torch.linspace(5, 50, RGB_DIM), torch.linspace(-30, 30, XYZ_DIM)
    rgb_scale, xyz_scale = torch.linspace(0.5, 3, RGB_DIM), torch.linspace(2, 0.1, XYZ_DIM)
    with torch.no_grad():
        standardised.rgb_mean.copy_(rgb_offset)
        standardised.rgb_scale.copy_(rgb_scale)
        standardised.xyz_mean.copy_(xyz_offset)
        standardised.xyz_scale.copy_(xyz_scale)
    shifted_rgb = rgb * rgb_scale[None, :, None, None] + rgb_offset[None, :, None, None]
    shifted_xyz = xyz * xyz_scale[None, :, None, None] + xyz_offset[None, :, None, None]
    expected = plain(rgb, xyz, valid)
    got = standardised(shifted_rgb, shifted_xyz, valid)
    for name in expected:
        assert torch.allclose(expected[name], got[name], atol=1e-4), name
    # statistics from patches
    patches = torch.randn(100, RGB_DIM) * 3 + 7
    standardised.set_feature_statistics(patches, torch.randn(100, XYZ_DIM))
    assert torch.allclose(standardised.normalize_patches("rgb", patches).mean(0), torch.zeros(RGB_DIM), atol=1e-4)
    with pytest.raises(ValueError, match="at least two"):
        standardised.set_feature_statistics(patches[:1], torch.randn(1, XYZ_DIM))


@pytest.mark.parametrize("kernel", ["linear", "rff"])
def test_ocsvm_batch_statistics_make_objective_scale_invariant(kernel):
    """The VM is trained with batch statistics so that shrinking every level map cannot lower the loss."""
    generator = torch.Generator().manual_seed(3)
    features = 2.0 + 0.3 * torch.randn(200, 4, generator=generator)
    svm = OneClassSVM(4, kernel=kernel, nu=0.2, rff_dim=32)
    with torch.no_grad():
        svm.weight_raw.normal_(generator=generator)
        svm.rho.fill_(3.0 if kernel == "linear" else 0.5)  # hinge active for part of the points
    base = svm.objective(features, batch_statistics=True)
    scaled = svm.objective(3.0 * features, batch_statistics=True)
    assert torch.allclose(base, scaled, atol=1e-5)
    svm.set_standardisation(features)
    assert torch.allclose(svm.objective(features), base, atol=1e-5)  # frozen stats = the batch's
    assert not torch.allclose(svm.objective(3.0 * features), base, atol=1e-3)


def test_valid_patch_path_equals_the_dense_grid_computation():
    """On CPU the heads run on the valid patches only; the maps must equal the dense computation."""
    torch.manual_seed(0)
    heads = Mentor3ADHeads(RGB_DIM, XYZ_DIM, tiny_config()).eval()
    rgb, xyz, valid = random_features(seed=3)
    assert 0 < valid.sum() < valid.numel()
    with torch.no_grad():
        sparse = heads.score_maps(rgb, xyz, valid)
        dense = heads.score_maps(rgb, xyz, torch.ones_like(valid))  # every patch valid: the dense path
        empty = heads.score_maps(rgb, xyz, torch.zeros_like(valid))
    for name in ("rgb", "xyz", "mtr"):
        expected = torch.where(valid, dense[name], torch.zeros_like(dense[name]))
        torch.testing.assert_close(sparse[name], expected, rtol=1e-5, atol=1e-6)
        assert torch.all(empty[name] == 0)
