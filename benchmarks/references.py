"""Reference captioners timed beside ours: ResNet-50 + the same LSTM, and transformer captioners.

All use random weights (timing only). The transformer references need ``transformers``;
they are skipped, and the report says so, when it is not installed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image
from torchvision.transforms import v2

from captioner.captioner import Captioner
from captioner.checkpoint import Checkpoint
from captioner.config import ModelConfig
from captioner.decoders import build_decoder
from captioner.encoders import build_encoder
from captioner.encoders.batchnorm_folding import fold_batch_norms

__all__ = ["resnet50_lstm", "transformer_captioners"]


def resnet50_lstm(like: Captioner) -> Captioner:
    """Our decoder (same vocabulary, sizes and weight precision) on a randomly initialised torchvision ResNet-50,
    its BatchNorms folded into its convolutions as in our Lite encoders (a like-for-like reference)."""
    encoder = build_encoder("torchvision:resnet50", pretrained=False)
    fold_batch_norms(encoder)
    config = ModelConfig(**{**like.checkpoint.config.to_dict(), "encoder": encoder.spec.name, "feature_dim": 2048})
    checkpoint = Checkpoint(
        config, like.vocab, encoder.spec, build_decoder(config).eval(), concepts=like.checkpoint.concepts
    )
    return Captioner(checkpoint, encoder, decoder_precision=like.decoder_precision)


def transformer_captioners(image: Image.Image, *, max_new_tokens: int = 20) -> dict[str, Callable[[], object]]:
    """BLIP-base- and ViT-GPT2-sized captioners built from ``transformers`` configs (random weights)."""
    try:
        import transformers
    except ImportError:
        return {}
    from transformers import (
        BlipConfig,
        BlipForConditionalGeneration,
        GPT2Config,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
    )

    transformers.logging.set_verbosity_error()
    pixels = v2.functional.pil_to_tensor(image.convert("RGB").resize((384, 384)))  # (3, H, W) uint8
    blip = BlipForConditionalGeneration(BlipConfig()).eval()
    blip_pixels = pixels[None].float() / 255

    vit_gpt2_config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(
        ViTConfig(image_size=224), GPT2Config(add_cross_attention=True)
    )
    vit_gpt2_config.decoder_start_token_id = vit_gpt2_config.pad_token_id = 50256
    vit_gpt2 = VisionEncoderDecoderModel(config=vit_gpt2_config).eval()
    vit_pixels = torch.nn.functional.interpolate(blip_pixels, size=224)

    def run_blip() -> object:
        with torch.inference_mode():
            return blip.generate(pixel_values=blip_pixels, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens)

    def run_vit_gpt2() -> object:
        with torch.inference_mode():
            return vit_gpt2.generate(
                pixel_values=vit_pixels, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens
            )

    return {"BLIP-base (random weights)": run_blip, "ViT-GPT2 (random weights)": run_vit_gpt2}
