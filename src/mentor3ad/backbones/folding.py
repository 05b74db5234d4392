"""Batch norms folded into the convolutions before them: the frozen CNN backbones' inference path.

A frozen network in eval mode applies each BatchNorm2d as a fixed per-channel scale and shift; folded into the
preceding convolution's weight and bias it costs nothing. On 2 CPU cores a Lite0 forward at 448 alone takes
21-30 instead of 45-54 ms, in the inspector's pipeline about a third less (timm's BatchNormAct2d runs a separate
pass over the activations), with features equal to 1e-6 of their range. :func:`fold_batch_norms_checked` folds a
copy and keeps it only when it answers a probe input like the original (a norm registered beside a convolution it
does not follow is caught there).
"""
from __future__ import annotations

import copy
import logging
from typing import Callable, Tuple

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

LOG = logging.getLogger(__name__)
FOLD_TOLERANCE = 1e-4  # largest |folded - original| output, relative to the original's largest |value|
PROBE_SIZE = 64  # pixels of the seeded probe image the folded copy is checked on


def _after_norm(norm: nn.BatchNorm2d) -> nn.Module:
    """What a norm still does once its scale and shift live in the convolution: timm's BatchNormAct2d its
    dropout and activation, a plain BatchNorm2d nothing."""
    drop, act = getattr(norm, "drop", None), getattr(norm, "act", None)
    parts = [m for m in (drop, act) if isinstance(m, nn.Module) and not isinstance(m, nn.Identity)]
    return nn.Sequential(*parts) if parts else nn.Identity()


def fold_batch_norms(model: nn.Module) -> int:
    """Fold, in place, every BatchNorm2d (with running statistics) registered right after a Conv2d in the same
    parent into that convolution; returns how many were folded. Only for a frozen model in eval mode; check the
    result (:func:`fold_batch_norms_checked`): registration order need not be the order of the forward pass."""
    folded = 0
    for parent in list(model.modules()):
        children = list(parent._modules.items())
        for (_, conv), (norm_name, norm) in zip(children, children[1:]):
            if not (isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)):
                continue
            if norm.running_mean is None or norm.running_var is None or conv.out_channels != norm.num_features:
                continue
            weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, norm.running_mean, norm.running_var, norm.eps,
                                                norm.weight, norm.bias)
            conv.weight, conv.bias = nn.Parameter(weight.detach(), False), nn.Parameter(bias.detach(), False)
            parent._modules[norm_name] = _after_norm(norm)
            folded += 1
    return folded


@torch.no_grad()
def fold_batch_norms_checked(model: nn.Module, forward: Callable[[nn.Module, torch.Tensor], object],
                             name: str) -> Tuple[nn.Module, int]:
    """(model with its norms folded, count) when the folded copy's ``forward`` (model, (1, 3, P, P) probe) ->
    tensor or tensors matches the original's within ``FOLD_TOLERANCE``; else (model unchanged, 0) with a
    WARNING naming the difference (the network then runs at its unfolded speed, with the same features)."""
    if any(p.is_meta for p in model.parameters()):
        return model, 0  # built on torch's meta device to count its parameters: nothing runs
    folded = copy.deepcopy(model).eval()
    count = fold_batch_norms(folded)
    if count == 0:
        return model, 0
    probe = torch.rand(1, 3, PROBE_SIZE, PROBE_SIZE, generator=torch.Generator().manual_seed(0))
    probe = probe.to(next(model.parameters()).device)
    try:
        expected, got = forward(model, probe), forward(folded, probe)
    except Exception as err:  # noqa: BLE001 - a network that cannot take the probe runs as it was built
        LOG.warning("%s: its batch norms were not folded (the probe check failed: %s: %s)", name,
                    type(err).__name__, err)
        return model, 0
    expected = list(expected) if isinstance(expected, (list, tuple)) else [expected]
    got = list(got) if isinstance(got, (list, tuple)) else [got]
    worst = 0.0 if len(expected) == len(got) else float("inf")
    for want, have in zip(expected, got):
        if want.shape != have.shape:
            worst = float("inf")
            break
        scale = float(want.abs().max().clamp_min(1e-12))
        worst = max(worst, float((want - have).abs().max()) / scale)
    if not worst <= FOLD_TOLERANCE:
        LOG.warning("%s: folding its %d batch norms changed its output (%.3g of its range): kept unfolded",
                    name, count, worst)
        return model, 0
    LOG.debug("%s: %d batch norms folded into their convolutions (output within %.1g)", name, count, worst)
    return folded, count


__all__ = ["FOLD_TOLERANCE", "fold_batch_norms", "fold_batch_norms_checked"]
