"""Exact rewrites of a frozen CNN backbone for inference, each checked on a probe before it is kept.

* Batch norms folded into the convolutions before them (:func:`fold_batch_norms`): a frozen network in eval mode
  applies each BatchNorm2d as a fixed per-channel scale and shift; folded into the preceding convolution's weight
  and bias it costs nothing (timm's BatchNormAct2d runs a separate pass over the activations). Features equal to
  1e-6 of their range; a Lite0 forward about a third faster.
* TF "same" padding of the stride-2 convolutions without its copy (:func:`unpad_same_convolutions`): timm's
  ``Conv2dSame`` pads every input explicitly (one more zero row and column after it than before), a full copy of
  the activations (~2 ms each at 448 on 2 cores, in channels-last). On an even-sized input the same sums come
  from a plain convolution with symmetric padding and the kernel extended by one leading zero row and column;
  measured on Lite0 at 448: 44 -> 29 ms per forward, outputs identical on the probe.

:func:`rewrite_for_inference` applies both to a copy and keeps it only when it answers a seeded probe input like
the original (a norm registered beside a convolution it does not follow is caught there); otherwise the network
runs as it was built, with a WARNING.
"""
from __future__ import annotations

import copy
import logging
from typing import Callable, NamedTuple, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

LOG = logging.getLogger(__name__)
REWRITE_TOLERANCE = 1e-4  # largest |rewritten - original| output, relative to the original's largest |value|
PROBE_SIZE = 64  # pixels of the seeded probe image the rewritten copy is checked on (even sizes down the net)


def _after_norm(norm: nn.BatchNorm2d) -> nn.Module:
    """What a norm still does once its scale and shift live in the convolution: timm's BatchNormAct2d its
    dropout and activation, a plain BatchNorm2d nothing."""
    drop, act = getattr(norm, "drop", None), getattr(norm, "act", None)
    parts = [m for m in (drop, act) if isinstance(m, nn.Module) and not isinstance(m, nn.Identity)]
    return nn.Sequential(*parts) if parts else nn.Identity()


def fold_batch_norms(model: nn.Module) -> int:
    """Fold, in place, every BatchNorm2d (with running statistics) registered right after a Conv2d in the same
    parent into that convolution; returns how many were folded. Only for a frozen model in eval mode; check the
    result (:func:`rewrite_for_inference`): registration order need not be the order of the forward pass."""
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


class EvenInputSameConv(nn.Module):
    """A stride-2 ``Conv2dSame`` (timm: TF "same" padding) without its padding copy on even-sized inputs.

    TF pads an even input of an odd k x k stride-2 kernel with lo = (k - 3) / 2 zeros before and hi = lo + 1 after
    (k - 2 in all). A plain convolution with hi zeros on both sides and a (k + 1) x (k + 1)
    kernel whose first row and column are zero samples the same pixels with the same weights (the extra zeros
    before the input meet the zero weights). Odd inputs run the original module (their padding is symmetric)."""

    def __init__(self, same: nn.Conv2d):
        super().__init__()
        k = same.kernel_size[0]
        self.same = same
        self.plain = nn.Conv2d(same.in_channels, same.out_channels, k + 1, 2, (k - 1) // 2, groups=same.groups,
                               bias=same.bias is not None)
        self.plain.weight = nn.Parameter(F.pad(same.weight.detach(), (1, 0, 1, 0)), False)
        if same.bias is not None:
            self.plain.bias = nn.Parameter(same.bias.detach().clone(), False)

    @staticmethod
    def applies(module: nn.Module) -> bool:
        """A timm Conv2dSame of stride 2, odd square kernel, no dilation."""
        try:
            from timm.layers import Conv2dSame
        except ImportError:
            return False
        k = getattr(module, "kernel_size", (0, 0))
        return (type(module) is Conv2dSame and module.stride == (2, 2) and k[0] == k[1] and k[0] % 2 == 1
                and module.dilation == (1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2 or x.shape[-2] % 2:
            return self.same(x)
        return self.plain(x)


def unpad_same_convolutions(model: nn.Module) -> int:
    """Replace, in place, every stride-2 timm ``Conv2dSame`` by an :class:`EvenInputSameConv`; returns how many.
    Check the result (:func:`rewrite_for_inference`)."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):
            if child is not None and EvenInputSameConv.applies(child):
                parent._modules[name] = EvenInputSameConv(child)
                replaced += 1
    return replaced


class Rewrites(NamedTuple):
    """What :func:`rewrite_for_inference` kept: batch norms folded, stride-2 same-padded convolutions unpadded."""

    folded_norms: int = 0
    unpadded_convs: int = 0


@torch.no_grad()
def rewrite_for_inference(model: nn.Module, forward: Callable[[nn.Module, torch.Tensor], object],
                          name: str) -> Tuple[nn.Module, Rewrites]:
    """(model rewritten, what was done) when the rewritten copy's ``forward`` (model, (1, 3, P, P) probe) ->
    tensor or tensors matches the original's within ``REWRITE_TOLERANCE``; else (model unchanged, nothing) with a
    WARNING naming the difference (the network then runs at its original speed, with the same features)."""
    if any(p.is_meta for p in model.parameters()):
        return model, Rewrites()  # built on torch's meta device to count its parameters: nothing runs
    rewritten = copy.deepcopy(model).eval()
    done = Rewrites(fold_batch_norms(rewritten), unpad_same_convolutions(rewritten))
    if not any(done):
        return model, Rewrites()
    probe = torch.rand(1, 3, PROBE_SIZE, PROBE_SIZE, generator=torch.Generator().manual_seed(0))
    probe = probe.to(next(model.parameters()).device)
    try:
        expected, got = forward(model, probe), forward(rewritten, probe)
    except Exception as err:  # noqa: BLE001 - a network that cannot take the probe runs as it was built
        LOG.warning("%s: not rewritten for inference (the probe check failed: %s: %s)", name,
                    type(err).__name__, err)
        return model, Rewrites()
    expected = list(expected) if isinstance(expected, (list, tuple)) else [expected]
    got = list(got) if isinstance(got, (list, tuple)) else [got]
    worst = 0.0 if len(expected) == len(got) else float("inf")
    for want, have in zip(expected, got):
        if want.shape != have.shape:
            worst = float("inf")
            break
        scale = float(want.abs().max().clamp_min(1e-12))
        worst = max(worst, float((want - have).abs().max()) / scale)
    if not worst <= REWRITE_TOLERANCE:
        LOG.warning("%s: rewriting it for inference (%d batch norms folded, %d same-padded convolutions unpadded) "
                    "changed its output (%.3g of its range): kept as built", name, done.folded_norms,
                    done.unpadded_convs, worst)
        return model, Rewrites()
    LOG.debug("%s: %d batch norms folded, %d same-padded convolutions unpadded (output within %.1g)", name,
              done.folded_norms, done.unpadded_convs, worst)
    return rewritten, done


__all__ = ["REWRITE_TOLERANCE", "EvenInputSameConv", "Rewrites", "fold_batch_norms", "rewrite_for_inference",
           "unpad_same_convolutions"]
