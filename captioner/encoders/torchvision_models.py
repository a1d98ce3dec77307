"""torchvision classifiers as encoders (``torchvision:<model>``), with their ``DEFAULT`` weights,
which torchvision downloads on first use (needs the internet once)."""

from __future__ import annotations

import torch
from torch import nn

from captioner.encoders.base import ImageEncoder
from captioner.encoders.spec import EncoderSpec

__all__ = ["TORCHVISION_PREFIX", "build_torchvision"]

TORCHVISION_PREFIX = "torchvision:"


def build_torchvision(name: str, *, pretrained: bool) -> ImageEncoder:
    from torchvision import models

    model_name = name.removeprefix(TORCHVISION_PREFIX)
    if model_name not in models.list_models(module=models):
        raise ValueError(f"torchvision has no classification model called {model_name!r}")
    weights_enum = models.get_model_weights(model_name)
    weights = weights_enum.DEFAULT
    try:
        model = models.get_model(model_name, weights=weights if pretrained else None)
    except (OSError, RuntimeError) as error:  # URLError is an OSError
        raise RuntimeError(
            f"could not get the ImageNet weights for {model_name} ({error}). torchvision "
            "downloads them on first use, which needs the internet; offline, use "
            f"one of the efficientnet_lite encoders"
        ) from error
    preprocess = weights.transforms()
    spec = EncoderSpec(
        name=name,
        weights=f"{weights_enum.__name__}.{weights.name}",
        image_size=int(preprocess.crop_size[0]),
        resize_size=int(preprocess.resize_size[0]),
        mean=tuple(preprocess.mean),
        std=tuple(preprocess.std),
        interpolation=preprocess.interpolation.value,
    )
    backbone, feature_dim = _torchvision_feature_map(model)
    return ImageEncoder(backbone, spec, feature_dim)


class _PoolInputHook(nn.Module):
    """Runs a torchvision classifier and returns the input of its global pooling layer."""

    def __init__(self, model: nn.Module, pool: nn.Module) -> None:
        super().__init__()
        self.model = model
        self._pool = pool

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []
        handle = self._pool.register_forward_hook(lambda _m, args, _out: captured.append(args[0]))
        try:
            self.model(images)
        finally:
            handle.remove()
        return captured[-1]


def _torchvision_feature_map(model: nn.Module) -> tuple[nn.Module, int]:
    pools = [m for m in model.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    if not pools:
        raise ValueError(f"{type(model).__name__} has no global pooling layer to read a map from")
    if hasattr(model, "aux_logits"):  # inception_v3: the auxiliary head is training-only
        model.aux_logits, model.AuxLogits = False, None
    probe = _PoolInputHook(model, pools[-1]).eval()
    with torch.no_grad():
        size = 299 if type(model).__name__ == "Inception3" else 224
        feature_dim = probe(torch.zeros(1, 3, size, size)).shape[1]
    return probe, int(feature_dim)
