"""Voting Module of Mentor3AD as plain ``nn.Module``s: combines the score maps into the final map.

Shapes: score maps (B, M, R, R) float32 in [0, 2] (M used maps), validity (B, R, R) bool.

- :class:`RefinementConv`: f = C^U(C^L(S)), two non-negative, normalised convolutions.
- :class:`VotingModule`: levels f_n(prod_m S_m^{e_nm}), then :class:`OneClassSVM` on the per-pixel levels.
- :class:`OneClassSVM`: learnable one-class SVM (Schoelkopf et al. 2001), linear or RBF (random features).
- :func:`fit_voting`: its training stage on good parts' score maps (after MFM / MGM, :mod:`.training`).
"""
from __future__ import annotations

import logging
import math
from typing import Callable, List

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..errors import InputError

LOG = logging.getLogger("mentor3ad.model.training")  # the training log it is part of

OCSVM_SCORE_CLAMP = 60.0  # the final map is exp(min(OC-SVM score, 60)): +inf saturates (a FAIL), never overflows


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
        """(B, M, R, R) -> level maps (B, N, R, R), each >= eps: f_n of level n's product, all N refinements
        as two grouped channels-last convolutions (the same arithmetic as each :class:`RefinementConv` on
        its own level; 3x faster to train than N separate ones, whose weight gradients dominated a VM step)."""
        log_scores = torch.log(scores.clamp_min(self.eps))
        weighted = torch.exp(torch.einsum("nm,bmhw->bnhw", self.exponents, log_scores))
        kernels = [refine.kernels() for refine in self.refinements]
        levels = len(kernels)
        channels_last = torch.channels_last
        lower = torch.cat([k[0] for k in kernels]).contiguous(memory_format=channels_last)  # (N C, 1, k, k)
        upper = torch.cat([k[1] for k in kernels]).contiguous(memory_format=channels_last)  # (N, C, k, k)
        pad = (self.refinements[0].padding,) * 4
        hidden = F.conv2d(F.pad(weighted, pad, mode="replicate").contiguous(memory_format=channels_last), lower,
                          groups=levels)
        refined = F.conv2d(F.pad(hidden, pad, mode="replicate").contiguous(memory_format=channels_last), upper,
                           groups=levels)
        return refined.contiguous().clamp_min(self.eps)

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
        """(B, M, R, R), valid (B, R, R) -> final map (B, R, R) = exp(OC-SVM score), 0 on invalid; NaN where
        the score is NaN or -inf (broken weights: exp(-inf) = 0 would read as "perfectly normal")."""
        features = self.pixel_features(scores)
        batch, height, width, dims = features.shape
        raw = self.ocsvm(features.reshape(-1, dims)).reshape(batch, height, width)
        out = torch.exp(raw.clamp(max=OCSVM_SCORE_CLAMP))
        out = torch.where(torch.isneginf(raw), torch.full_like(out, math.nan), out)
        return torch.where(valid, out, torch.zeros_like(out))


def fit_voting(voting: VotingModule, score_maps: torch.Tensor, valid: torch.Tensor, steps: int, lr: float,
               anchor_weight: float, progress: bool = False, log: Callable[[str], None] = LOG.info) -> List[float]:
    """Train ``voting`` (exponents, refinement convs, OC-SVM) on normal score maps (M, num_maps, R, R).

    Loss: Schoelkopf's OC-SVM objective on the per-pixel level features of the valid pixels, standardised
    with their own (differentiable) statistics, so rescaling every map cannot lower it
    + anchor_weight * |theta - theta_0|^2 over the exponents and conv weights (keeps the levels close
    to their initial meaning). The final statistics are then frozen into the OC-SVM.
    """
    from tqdm import tqdm

    valid = valid.bool()
    if int(valid.sum()) < 2:
        raise InputError("the Voting Module needs at least two valid training pixels")
    with torch.no_grad():
        voting.ocsvm.set_standardisation(voting.pixel_features(score_maps)[valid])
    anchored = [p for n, p in voting.named_parameters() if not n.startswith("ocsvm.")]
    initial = [p.detach().clone() for p in anchored]
    optimiser = torch.optim.Adam(voting.parameters(), lr=lr)
    history = []
    for step in tqdm(range(steps), desc="VM", disable=not progress, leave=False):
        features = voting.pixel_features(score_maps)[valid]
        loss = voting.ocsvm.objective(features, batch_statistics=True)
        if anchor_weight > 0:
            loss = loss + anchor_weight * sum(((p - p0) ** 2).sum() for p, p0 in zip(anchored, initial))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        history.append(float(loss.detach()))
        if step == 0 or step == steps - 1 or (step + 1) % max(1, steps // 5) == 0:
            log(f"VM step {step + 1}/{steps} loss {history[-1]:.5f}")
    with torch.no_grad():  # freeze the standardisation the last steps were trained with
        voting.ocsvm.set_standardisation(voting.pixel_features(score_maps)[valid])
    return history
