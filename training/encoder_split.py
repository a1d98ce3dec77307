"""An EfficientNet-Lite encoder split for fine-tuning: a frozen trunk (stem and first stages),
whose maps are cached once, and a top (last stages and head) trained with the decoder."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from captioner.encoders import ImageEncoder
from captioner.encoders.lite import LiteFeatureMap

__all__ = ["EncoderTop", "split_encoder"]


class _Trunk(nn.Module):
    """An EfficientNet-Lite's stem and its first stages: the part a fine-tuning run keeps frozen."""

    def __init__(self, model: nn.Module, stages: int) -> None:
        super().__init__()
        self.conv_stem, self.bn1, self.blocks = model.conv_stem, model.bn1, model.blocks[:stages]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.bn1(self.conv_stem(images)))


class EncoderTop(nn.Module):
    """An EfficientNet-Lite's last stages and head, trained with the decoder: maps the trunk's
    map (B, C', H, W) to the encoder's (B, C, H, W). It holds the encoder's own modules (not
    copies) and knows each parameter's name in the encoder, for the checkpoint."""

    def __init__(self, encoder: ImageEncoder, stages: int) -> None:
        super().__init__()
        model = encoder.backbone.model
        self.stages, self.conv_head, self.bn2 = model.blocks[-stages:], model.conv_head, model.bn2
        own = {id(p): name for name, p in encoder.named_parameters()}
        self.encoder_names = {name: own[id(p)] for name, p in self.named_parameters()}

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv_head(self.stages(maps)))

    def encoder_weights(self) -> dict[str, torch.Tensor]:
        """This top's current weights under the encoder's names (for :meth:`ImageEncoder.load_tuned_weights`)."""
        return {self.encoder_names[name]: p.detach() for name, p in self.named_parameters()}


def split_encoder(encoder: ImageEncoder, tuned_stages: int) -> tuple[ImageEncoder, EncoderTop]:
    """Split an EfficientNet-Lite encoder before its last ``tuned_stages`` stages (of 7).

    Returns the frozen trunk as an encoder of its own (spec name ``<name>_stage<k>``, so its
    maps get a feature cache of their own) and the top, which shares the encoder's modules:
    ``top(trunk(x))`` equals ``encoder(x)``.

    Raises:
        ValueError: not an EfficientNet-Lite, or ``tuned_stages`` not in 1..6.
    """
    if not isinstance(encoder.backbone, LiteFeatureMap):
        raise ValueError(f"fine-tuning the encoder's last stages needs an EfficientNet-Lite, not {encoder.spec.name}")
    model = encoder.backbone.model
    count = len(model.blocks)
    if not 1 <= tuned_stages < count:
        raise ValueError(f"the encoder has {count} stages; tune 1 to {count - 1} of them, not {tuned_stages}")
    kept = count - tuned_stages
    trunk_spec = replace(encoder.spec, name=f"{encoder.spec.name}_stage{kept}")
    channels = model.blocks[kept - 1][-1].conv_pwl.out_channels
    return ImageEncoder(_Trunk(model, kept), trunk_spec, channels), EncoderTop(encoder, tuned_stages)
