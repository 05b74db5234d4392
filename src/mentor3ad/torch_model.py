"""Mentor3AD heads as plain ``nn.Module``s (no training loop, no I/O).

Shapes: feature maps are (B, C, R, R) float32 (R = feature resolution), validity masks (B, R, R) bool,
score maps (B, R, R) float32 (1 - cosine similarity, in [0, 2]; 0 on invalid patches).

- :class:`MentorFusionModule` (MFM): F_Mtr = MLP(MLP(F_RGB) (+) MLP(F_XYZ)), trained with :func:`info_nce`.
- :class:`MentorGuidanceModule` (MGM): F~_XYZ = MLP3(MLP(F_Mtr) (+) F_RGB) and F~_RGB likewise;
  without the mentor it is the CFM cross-modal mapping F~_XYZ = MLP3(F_RGB).
- :class:`VotingModule` (VM): levels f_n(S_RGB^a_n S_XYZ^b_n S_Mtr^g_n), f = C^U(C^L(.)), then
  :class:`OneClassSVM` on the per-pixel level values.
- :class:`Mentor3ADHeads`: everything together, ``forward`` -> score maps.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig


def mlp(in_dim: int, hidden_dim: int, out_dim: int, layers: int) -> nn.Sequential:
    """``layers`` Linear layers with GELU in between (acts on the last dimension)."""
    if layers < 1:
        raise ValueError(f"an MLP needs at least one layer, got {layers}")
    dims = [in_dim] + [hidden_dim] * (layers - 1) + [out_dim]
    modules: List[nn.Module] = []
    for index in range(layers):
        modules.append(nn.Linear(dims[index], dims[index + 1]))
        if index < layers - 1:
            modules.append(nn.GELU())
    return nn.Sequential(*modules)


def to_patches(feature_map: torch.Tensor) -> torch.Tensor:
    """(B, C, R, R) -> (B, R, R, C)."""
    return feature_map.permute(0, 2, 3, 1)


def to_map(patches: torch.Tensor) -> torch.Tensor:
    """(B, R, R, C) -> (B, C, R, R)."""
    return patches.permute(0, 3, 1, 2).contiguous()


def cosine_distance_map(reconstructed: torch.Tensor, original: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-patch 1 - cos(reconstructed, original): (B, C, R, R) x2, valid (B, R, R) -> (B, R, R), 0 if invalid."""
    distance = 1.0 - F.cosine_similarity(reconstructed, original, dim=1, eps=1e-8)
    return torch.where(valid, distance, torch.zeros_like(distance))


def cosine_loss(reconstructed: torch.Tensor, original: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over valid patches of 1 - cos (paper eq. 4); 0 when no patch is valid."""
    distance = 1.0 - F.cosine_similarity(reconstructed, original, dim=1, eps=1e-8)
    count = valid.sum()
    if count == 0:
        return distance.sum() * 0.0
    return distance[valid].mean()


def info_nce(query: torch.Tensor, key: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE over P paired embeddings (P, D) x (P, D): the positive of row i is row i of the
    other set, all other rows of the batch are negatives."""
    if query.shape != key.shape or query.dim() != 2:
        raise ValueError(f"info_nce expects two (P, D) tensors of equal shape, got {tuple(query.shape)} and "
                         f"{tuple(key.shape)}")
    query = F.normalize(query, dim=1)
    key = F.normalize(key, dim=1)
    logits = query @ key.t() / temperature
    targets = torch.arange(query.shape[0], device=query.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets))


class MentorFusionModule(nn.Module):
    """MFM: (F_RGB (B,C_rgb,R,R), F_XYZ (B,C_xyz,R,R)) -> F_Mtr (B, mentor_dim, R, R)."""

    def __init__(self, rgb_dim: int, xyz_dim: int, config: ModelConfig):
        super().__init__()
        self.fusion = config.mfm_fusion
        self.rgb_projection = mlp(rgb_dim, config.mfm_hidden_dim, config.mentor_dim, 2)
        self.xyz_projection = mlp(xyz_dim, config.mfm_hidden_dim, config.mentor_dim, 2)
        fused_in = 2 * config.mentor_dim if self.fusion == "concat" else config.mentor_dim
        self.fusion_mlp = mlp(fused_in, config.mfm_hidden_dim, config.mentor_dim, 2)

    def project(self, rgb: torch.Tensor, xyz: torch.Tensor):
        """Per-modality projections (B, R, R, mentor_dim) each (the InfoNCE embeddings)."""
        return self.rgb_projection(to_patches(rgb)), self.xyz_projection(to_patches(xyz))

    def fuse(self, rgb_projected: torch.Tensor, xyz_projected: torch.Tensor) -> torch.Tensor:
        """(B, R, R, D) x2 -> (B, R, R, mentor_dim)."""
        if self.fusion == "concat":
            joined = torch.cat([rgb_projected, xyz_projected], dim=-1)
        else:
            joined = rgb_projected + xyz_projected
        return self.fusion_mlp(joined)

    def forward(self, rgb: torch.Tensor, xyz: torch.Tensor) -> torch.Tensor:
        return to_map(self.fuse(*self.project(rgb, xyz)))


class CrossModalMapper(nn.Module):
    """One MGM direction: source (B,C_src,R,R) [+ mentor (B,D,R,R)] -> target (B,C_tgt,R,R).

    With the mentor: MLP3(MLP(F_Mtr) (+) source) (paper eq. 3); without: MLP3(source) (CFM).
    """

    def __init__(self, source_dim: int, target_dim: int, config: ModelConfig):
        super().__init__()
        self.use_mentor = config.use_mentor
        self.fusion = config.mgm_fusion
        head_in = source_dim
        if self.use_mentor:
            mentor_out = config.mgm_mentor_dim if self.fusion == "concat" else source_dim
            self.mentor_mlp = mlp(config.mentor_dim, config.mgm_hidden_dim, mentor_out, 1)
            head_in = source_dim + mentor_out if self.fusion == "concat" else source_dim
        self.head = mlp(head_in, config.mgm_hidden_dim, target_dim, 3)

    def map_patches(self, source: torch.Tensor, mentor: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Channels-last: source (..., C_src) [+ mentor (..., D)] -> (..., C_tgt)."""
        if self.use_mentor:
            if mentor is None:
                raise ValueError("this MGM head was built with use_mentor=True and needs the mentor features")
            guide = self.mentor_mlp(mentor)
            source = torch.cat([guide, source], dim=-1) if self.fusion == "concat" else source + guide
        return self.head(source)

    def forward(self, source: torch.Tensor, mentor: Optional[torch.Tensor] = None) -> torch.Tensor:
        return to_map(self.map_patches(to_patches(source), None if mentor is None else to_patches(mentor)))


class MentorGuidanceModule(nn.Module):
    """MGM: both directions; returns (F~_RGB, F~_XYZ)."""

    def __init__(self, rgb_dim: int, xyz_dim: int, config: ModelConfig):
        super().__init__()
        self.rgb_to_xyz = CrossModalMapper(rgb_dim, xyz_dim, config)
        self.xyz_to_rgb = CrossModalMapper(xyz_dim, rgb_dim, config)

    def forward(self, rgb: torch.Tensor, xyz: torch.Tensor, mentor: Optional[torch.Tensor] = None):
        return self.xyz_to_rgb(xyz, mentor), self.rgb_to_xyz(rgb, mentor)


class OneClassSVM(nn.Module):
    """Learnable one-class SVM (Schoelkopf et al. 2001) on per-pixel feature vectors x (P, K).

    Kernel "linear": phi(x) = x with w = softplus(v) >= 0 (monotone scores); "rff": RBF kernel
    exp(-gamma |x - y|^2) approximated by D random Fourier features sqrt(2/D) cos(Omega x + b).
    Primal objective: 0.5 |w|^2 + 1/(nu n) sum_i max(0, rho - <w, phi(x_i)>) - rho.
    Anomaly score: rho - <w, phi(x)> (> 0 = outside the learned support).
    """

    def __init__(self, in_dim: int, kernel: str = "linear", nu: float = 0.1, rff_dim: int = 64,
                 rff_gamma: float = 1.0, seed: int = 0):
        super().__init__()
        if kernel not in ("linear", "rff"):
            raise ValueError(f"OC-SVM kernel must be 'linear' or 'rff', got {kernel!r}")
        self.kernel = kernel
        self.nu = float(nu)
        generator = torch.Generator().manual_seed(seed)
        if kernel == "rff":
            self.register_buffer("rff_weight", torch.randn(in_dim, rff_dim, generator=generator)
                                 * math.sqrt(2.0 * rff_gamma))
            self.register_buffer("rff_bias", torch.rand(rff_dim, generator=generator) * 2.0 * math.pi)
            feature_dim = rff_dim
        else:
            feature_dim = in_dim
        # feature standardisation, fixed from the training features before fitting
        self.register_buffer("input_mean", torch.zeros(in_dim))
        self.register_buffer("input_scale", torch.ones(in_dim))
        self.weight_raw = nn.Parameter(torch.zeros(feature_dim))
        self.rho = nn.Parameter(torch.zeros(()))

    @property
    def weight(self) -> torch.Tensor:
        return F.softplus(self.weight_raw) if self.kernel == "linear" else self.weight_raw

    def set_standardisation(self, features: torch.Tensor) -> None:
        """Fix the per-dimension standardisation from training features (P, K). Linear kernel: divide by
        the root mean square only (no centring, so the origin of Schoelkopf's formulation keeps its
        meaning); RBF: centre and divide by the standard deviation."""
        with torch.no_grad():
            mean, scale = self.statistics(features)
            self.input_mean.copy_(mean)
            self.input_scale.copy_(scale)

    def statistics(self, features: torch.Tensor):
        """(mean, scale) of features (P, K) as used by the standardisation (differentiable)."""
        if self.kernel == "rff":
            mean = features.mean(dim=0)
            scale = features.std(dim=0) if features.shape[0] > 1 else torch.ones_like(mean)
        else:
            mean = torch.zeros(features.shape[1], dtype=features.dtype, device=features.device)
            scale = features.pow(2).mean(dim=0).sqrt()
        return mean, scale.clamp_min(1e-6)

    def feature_map(self, x: torch.Tensor, statistics=None) -> torch.Tensor:
        """(P, K) -> phi(x) (P, K) or (P, D); ``statistics`` = (mean, scale) overrides the stored ones."""
        mean, scale = statistics if statistics is not None else (self.input_mean, self.input_scale)
        x = (x - mean) / scale
        if self.kernel == "rff":
            return math.sqrt(2.0 / self.rff_bias.numel()) * torch.cos(x @ self.rff_weight + self.rff_bias)
        return x

    def decision(self, x: torch.Tensor, statistics=None) -> torch.Tensor:
        """<w, phi(x)> for (P, K) -> (P,)."""
        return self.feature_map(x, statistics) @ self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Anomaly score rho - <w, phi(x)>: (P, K) -> (P,)."""
        return self.rho - self.decision(x)

    def objective(self, x: torch.Tensor, batch_statistics: bool = False) -> torch.Tensor:
        """Schoelkopf's primal objective on training features (P, K). ``batch_statistics``: standardise
        with the (differentiable) statistics of ``x`` itself, which makes the objective invariant to a
        common rescaling of learnable input features (no collapse by scaling)."""
        statistics = self.statistics(x) if batch_statistics else None
        hinge = F.relu(self.rho - self.decision(x, statistics))
        return 0.5 * (self.weight ** 2).sum() + hinge.mean() / self.nu - self.rho


SATURATED_LOGIT = 10.0  # softmax logit that makes one entry ~1 (1 - 4e-4 for 9 taps)


class RefinementConv(nn.Module):
    """f = C^U(C^L(S)): (B, 1, R, R) -> (B, 1, R, R), two convolutions whose kernels are non-negative and sum
    to one (softmax over taps / channels x taps), no bias: f is a learnable local weighted average, so it
    can redistribute but never erase a score map. Initialised to (almost exactly) the identity."""

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        self.padding = kernel_size // 2
        centre = self.padding * kernel_size + self.padding
        lower = torch.zeros(channels, kernel_size * kernel_size)
        lower[:, centre] = SATURATED_LOGIT
        upper = torch.zeros(channels, kernel_size * kernel_size)
        upper[:, centre] = SATURATED_LOGIT
        self.lower_logits = nn.Parameter(lower)
        self.upper_logits = nn.Parameter(upper)
        self.kernel_size = kernel_size

    def kernels(self):
        """Lower (C, 1, k, k) and upper (1, C, k, k) kernels, each summing to one."""
        k = self.kernel_size
        lower = torch.softmax(self.lower_logits, dim=1).view(-1, 1, k, k)
        upper = torch.softmax(self.upper_logits.flatten(), dim=0).view(1, -1, k, k)
        return lower, upper

    def forward(self, score: torch.Tensor) -> torch.Tensor:
        lower, upper = self.kernels()
        pad = (self.padding,) * 4
        hidden = F.conv2d(F.pad(score, pad, mode="replicate"), lower)
        return F.conv2d(F.pad(hidden, pad, mode="replicate"), upper)


class VotingModule(nn.Module):
    """Voting Module on M used score maps (B, M, R, R).

    level_n = f_n(prod_m S_m^{e_nm}) with exponents e_n = T_n softmax(logits_n) (learnable mix, fixed total
    T_n: level 1 starts as the plain product, T_1 = M, e_1m = 1; level n >= 2 as map (n-2) mod M alone,
    T_n = 1); S_All = prod_n level_n. The OC-SVM scores the per-pixel vector of -log(level_n) [and -log S_m
    for the raw maps]; the output map is exp(rho - <w, phi(x)>), 0 on invalid patches (= a learned weighted
    product of the levels for the linear kernel).
    """

    def __init__(self, num_maps: int, config: ModelConfig, seed: int = 0):
        super().__init__()
        self.num_maps = num_maps
        self.eps = config.score_eps
        self.include_raw = config.ocsvm_include_raw
        logits = torch.zeros(config.vote_levels, num_maps)
        totals = torch.ones(config.vote_levels)
        totals[0] = float(num_maps)
        for level in range(1, config.vote_levels):
            if num_maps > 1:
                logits[level, (level - 1) % num_maps] = SATURATED_LOGIT
        self.exponent_logits = nn.Parameter(logits)
        self.register_buffer("exponent_totals", totals)
        self.refinements = nn.ModuleList(RefinementConv(config.vote_conv_channels, config.vote_kernel_size)
                                         for _ in range(config.vote_levels))
        ocsvm_in = config.vote_levels + (num_maps if self.include_raw else 0)
        self.ocsvm = OneClassSVM(ocsvm_in, config.ocsvm_kernel, config.ocsvm_nu, config.ocsvm_rff_dim,
                                 config.ocsvm_rff_gamma, seed=seed)

    @property
    def exponents(self) -> torch.Tensor:
        """(N, M) exponents alpha_n, beta_n, gamma_n of the used maps per level."""
        return self.exponent_totals[:, None] * torch.softmax(self.exponent_logits, dim=1)

    def levels(self, scores: torch.Tensor) -> torch.Tensor:
        """(B, M, R, R) -> level maps (B, N, R, R), each >= eps."""
        log_scores = torch.log(scores.clamp_min(self.eps))
        weighted = torch.einsum("nm,bmhw->bnhw", self.exponents, log_scores)
        outputs = [refine(torch.exp(weighted[:, n:n + 1])) for n, refine in enumerate(self.refinements)]
        return torch.cat(outputs, dim=1).clamp_min(self.eps)

    def pixel_features(self, scores: torch.Tensor) -> torch.Tensor:
        """(B, M, R, R) -> OC-SVM inputs (B, R, R, K) = -log of the level maps [and raw maps]."""
        parts = [-torch.log(self.levels(scores))]
        if self.include_raw:
            parts.append(-torch.log(scores.clamp_min(self.eps)))
        return torch.cat(parts, dim=1).permute(0, 2, 3, 1)

    def combined(self, scores: torch.Tensor) -> torch.Tensor:
        """S_All = prod_n level_n: (B, M, R, R) -> (B, R, R)."""
        return torch.exp(torch.log(self.levels(scores)).sum(dim=1))

    def forward(self, scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B, M, R, R), valid (B, R, R) -> final map (B, R, R) = exp(OC-SVM score), 0 on invalid."""
        features = self.pixel_features(scores)
        batch, height, width, dims = features.shape
        raw = self.ocsvm(features.reshape(-1, dims)).reshape(batch, height, width)
        out = torch.exp(raw.clamp(max=60.0))
        return torch.where(valid, out, torch.zeros_like(out))


class Mentor3ADHeads(nn.Module):
    """All trainable heads. ``forward(F_RGB, F_XYZ, valid)`` -> dict of (B, R, R) maps:
    "rgb", "xyz", "mtr" (those computable), "final" (voted or plain product of the used maps)."""

    def __init__(self, rgb_dim: int, xyz_dim: int, config: ModelConfig, seed: int = 0):
        super().__init__()
        config.validate()
        self.config = config
        self.rgb_dim = int(rgb_dim)
        self.xyz_dim = int(xyz_dim)
        # per-channel feature standardisation (training statistics; identity until set)
        self.register_buffer("rgb_mean", torch.zeros(self.rgb_dim))
        self.register_buffer("rgb_scale", torch.ones(self.rgb_dim))
        self.register_buffer("xyz_mean", torch.zeros(self.xyz_dim))
        self.register_buffer("xyz_scale", torch.ones(self.xyz_dim))
        self.mfm = MentorFusionModule(rgb_dim, xyz_dim, config) if config.needs_mfm else None
        self.mgm = MentorGuidanceModule(rgb_dim, xyz_dim, config)
        self.voting = VotingModule(len(config.score_maps), config, seed=seed) if config.use_voting else None

    def _check(self, rgb: torch.Tensor, xyz: torch.Tensor, valid: torch.Tensor) -> None:
        if rgb.dim() != 4 or xyz.dim() != 4 or valid.dim() != 3:
            raise ValueError(f"expected rgb (B,C,R,R), xyz (B,C,R,R), valid (B,R,R); got {tuple(rgb.shape)}, "
                             f"{tuple(xyz.shape)}, {tuple(valid.shape)}")
        if rgb.shape[1] != self.rgb_dim or xyz.shape[1] != self.xyz_dim:
            raise ValueError(f"feature channels {rgb.shape[1]} (rgb) / {xyz.shape[1]} (xyz) do not match the "
                             f"heads ({self.rgb_dim} / {self.xyz_dim})")
        if rgb.shape[2:] != xyz.shape[2:] or rgb.shape[2:] != valid.shape[1:] or rgb.shape[0] != xyz.shape[0]:
            raise ValueError(f"feature maps disagree in size: rgb {tuple(rgb.shape)}, xyz {tuple(xyz.shape)}, "
                             f"valid {tuple(valid.shape)}")

    @torch.no_grad()
    def set_feature_statistics(self, rgb_patches: torch.Tensor, xyz_patches: torch.Tensor) -> None:
        """Per-channel mean / std from valid training patches (P, C_rgb), (P, C_xyz); used only when
        config.standardize_features."""
        for name, patches in (("rgb", rgb_patches), ("xyz", xyz_patches)):
            if patches.shape[0] < 2:
                raise ValueError(f"need at least two valid {name} patches for feature statistics")
            getattr(self, f"{name}_mean").copy_(patches.mean(dim=0))
            getattr(self, f"{name}_scale").copy_(patches.std(dim=0).clamp_min(1e-6))

    def normalize_patches(self, name: str, patches: torch.Tensor) -> torch.Tensor:
        """Channels-last (..., C) features of modality ``name`` ("rgb" / "xyz"), standardised when enabled."""
        if not self.config.standardize_features:
            return patches
        return (patches - getattr(self, f"{name}_mean")) / getattr(self, f"{name}_scale")

    def normalize_maps(self, rgb: torch.Tensor, xyz: torch.Tensor):
        """(B, C, R, R) maps standardised per channel when config.standardize_features."""
        if not self.config.standardize_features:
            return rgb, xyz
        return (to_map(self.normalize_patches("rgb", to_patches(rgb))),
                to_map(self.normalize_patches("xyz", to_patches(xyz))))

    def mentor(self, rgb: torch.Tensor, xyz: torch.Tensor) -> Optional[torch.Tensor]:
        return self.mfm(rgb, xyz) if self.mfm is not None else None

    def score_maps(self, rgb: torch.Tensor, xyz: torch.Tensor, valid: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Per-modality score maps (B, R, R) for the names in config.score_maps."""
        self._check(rgb, xyz, valid)
        valid = valid.bool()
        if not rgb.is_cuda and not bool(valid.all()):
            # Every head operation is per patch: on CPU run them on the valid patches only (about half of
            # the grid on a part) as a (1, C, P, 1) map and scatter the scores back; invalid patches are 0.
            patch_valid = torch.ones((1, int(valid.sum()), 1), dtype=torch.bool, device=valid.device)
            sparse = self.score_maps(self._gather(rgb, valid), self._gather(xyz, valid), patch_valid)
            return {name: torch.zeros(valid.shape, dtype=m.dtype, device=m.device).masked_scatter(valid, m.reshape(-1))
                    for name, m in sparse.items()}
        rgb, xyz = self.normalize_maps(rgb, xyz)
        f_mtr = self.mentor(rgb, xyz)
        rgb_rec, xyz_rec = self.mgm(rgb, xyz, f_mtr if self.config.use_mentor else None)
        maps: Dict[str, torch.Tensor] = {}
        if "rgb" in self.config.score_maps:
            maps["rgb"] = cosine_distance_map(rgb_rec, rgb, valid)
        if "xyz" in self.config.score_maps:
            maps["xyz"] = cosine_distance_map(xyz_rec, xyz, valid)
        if "mtr" in self.config.score_maps:
            mtr_rec = self.mfm(rgb_rec, xyz_rec)
            maps["mtr"] = cosine_distance_map(mtr_rec, f_mtr, valid)
        return maps

    @staticmethod
    def _gather(feature_map: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B, C, R, R) features of the valid patches (B, R, R) -> (1, C, P, 1), in row-major patch order."""
        return feature_map.permute(1, 0, 2, 3)[:, valid].reshape(1, feature_map.shape[1], -1, 1)

    def stacked(self, maps: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Dict of (B, R, R) -> (B, M, R, R) in config.score_maps order."""
        return torch.stack([maps[name] for name in self.config.score_maps], dim=1)

    def combine(self, maps: Dict[str, torch.Tensor], valid: torch.Tensor) -> torch.Tensor:
        """Final map (B, R, R): Voting Module, or the plain product of the used maps when voting is off."""
        stacked = self.stacked(maps)
        if self.voting is not None:
            return self.voting(stacked, valid.bool())
        return stacked.prod(dim=1)

    def forward(self, rgb: torch.Tensor, xyz: torch.Tensor, valid: torch.Tensor) -> Dict[str, torch.Tensor]:
        maps = self.score_maps(rgb, xyz, valid)
        maps["final"] = self.combine(maps, valid)
        return maps
