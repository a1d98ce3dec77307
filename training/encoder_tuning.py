"""Fine-tuning the encoder's last stages with the decoder, on a cache of the frozen trunk's maps.

The trunk (stem and first stages) stays frozen, so its maps are extracted once
(``training.extract_features --tune-encoder-stages K``); the top (last K stages and head,
:class:`~training.encoder_split.EncoderTop`) runs in every training step and its weights go into
the checkpoint, where :meth:`Captioner.load` puts them back into the rebuilt encoder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from captioner.checkpoint import Checkpoint
from captioner.config import ModelConfig
from captioner.encoders import EncoderSpec, ImageEncoder, build_encoder
from training.encoder_split import EncoderTop, split_encoder
from training.extract_features import cache_dir_for
from training.feature_cache import FeatureCache, open_cache

__all__ = [
    "TunedEncoderDecoder",
    "cache_for",
    "checkpoint_inputs",
    "checkpoint_maps",
    "encoder_to_train_on",
    "trunk_flags",
    "tuned_split",
]


class TunedEncoderDecoder(nn.Module):
    """A decoder that reads the trunk's maps (B, C', H, W) through the trainable encoder top."""

    def __init__(self, decoder: nn.Module, top: EncoderTop) -> None:
        super().__init__()
        self.decoder, self.top = decoder, top  # in this order: the decoder's parameters come first

    @property
    def config(self) -> ModelConfig:
        return self.decoder.config

    def encoder_maps(self, maps: torch.Tensor) -> torch.Tensor:
        """The encoder's maps (B, C, H, W) for the trunk's ``maps`` (B, C', H, W), through the top."""
        if maps.dim() != 4:
            raise ValueError(f"the encoder top reads maps (B, C, H, W), not a tensor of shape {tuple(maps.shape)}")
        return self.top(maps.float())

    def forward(self, maps: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, T-1, V), as the decoder's forward on the encoder's maps."""
        return self.decoder(self.encoder_maps(maps), captions)

    def init_state(self, maps: torch.Tensor) -> Any:
        return self.decoder.init_state(self.encoder_maps(maps))

    def concepts(self, maps: torch.Tensor) -> Any:
        """A concept decoder's slots for the trunk's ``maps`` (:meth:`ConceptAttentionDecoder.concepts`)."""
        return self.decoder.concepts(self.encoder_maps(maps))

    def step(self, tokens: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        return self.decoder.step(tokens, state)

    def select_state(self, state: Any, indices: torch.Tensor) -> Any:
        return self.decoder.select_state(state, indices)

    def attention_weights(self, state: Any) -> torch.Tensor:
        return self.decoder.attention_weights(state)


def tuned_split(checkpoint: Checkpoint, tuned_stages: int) -> tuple[ImageEncoder, EncoderTop]:
    """The checkpoint's encoder (with any fine-tuned weights it holds) split before its last
    ``tuned_stages`` stages.

    Raises:
        ValueError: the checkpoint fine-tuned more stages than ``tuned_stages`` would train,
            so the frozen trunk's cached maps would not be what it computes.
    """
    if tuned_stages < checkpoint.encoder_tuned_stages:
        raise ValueError(
            f"this checkpoint fine-tuned the encoder's last {checkpoint.encoder_tuned_stages} stages; "
            f"continue with --tune-encoder-stages {checkpoint.encoder_tuned_stages} or more"
        )
    return split_encoder(checkpoint.build_encoder(), tuned_stages)


def cache_for(
    root: Path, spec: EncoderSpec, names: Sequence[str], *, mirrored: bool = False, extract_flags: str = ""
) -> FeatureCache:
    """The complete cache of ``spec``'s maps for ``names`` under ``root``, or a FileNotFoundError
    naming the command that makes it (``training.extract_features`` with ``extract_flags``)."""
    cache = open_cache(cache_dir_for(root, spec.name, mirrored=mirrored), spec.to_dict(), names, mirrored=mirrored)
    if cache is None:
        flags = f" --encoder {spec.name}" if not extract_flags else f" {extract_flags}"
        raise FileNotFoundError(
            f"no complete {spec.name}{' mirrored' if mirrored else ''} feature cache for these images under "
            f"{root}; run training.extract_features{flags}{' --mirrored' if mirrored else ''} first"
        )
    return cache


def encoder_to_train_on(
    encoder_name: str, initial: Checkpoint | None, *, keep_imagenet_head: bool = False
) -> tuple[ImageEncoder, str, dict[str, Any]]:
    """The encoder whose cached maps a decoder trains on, its cache's name, and what a checkpoint
    of that decoder must keep of it (``save_checkpoint``'s ``encoder_weights`` and
    ``encoder_tuned_stages``).

    A start checkpoint whose encoder's last stages were fine-tuned keeps them, fixed: its maps
    are cached under a name of their own (the tuned weights' digest), never mixed with the
    untuned encoder's (a concept decoder's keeps its ImageNet head: :meth:`Checkpoint.build_encoder`).
    ``keep_imagenet_head``: keep the head even where the top was tuned without it (a soft-attention
    model's), read through the tuned top; a concept decoder's ``training.scst --tune-encoder-stages``
    stage then pulls its probabilities back to the untuned encoder's (``--imagenet-weight``).
    """
    if initial is None or not initial.encoder_tuned_stages:
        return build_encoder(encoder_name), encoder_name, {}
    if initial.encoder.name != encoder_name:
        raise ValueError(f"the start checkpoint's encoder is {initial.encoder.name}, not {encoder_name}")
    digest = hashlib.sha256()
    for name, weight in sorted(initial.encoder_weights.items()):
        digest.update(name.encode())
        digest.update(weight.contiguous().numpy().tobytes())
    kept = {"encoder_weights": initial.encoder_weights, "encoder_tuned_stages": initial.encoder_tuned_stages}
    encoder = initial.build_encoder(head_kept=True if keep_imagenet_head else None)
    return encoder, f"{encoder_name}_tuned_{digest.hexdigest()[:12]}", kept


def trunk_flags(encoder_name: str, tuned_stages: int) -> str:
    """The ``training.extract_features`` flags that cache the trunk's maps."""
    return f"--encoder {encoder_name} --tune-encoder-stages {tuned_stages}"


def checkpoint_inputs(
    checkpoint: Checkpoint, root: Path, corpus_names: Sequence[str], names: Sequence[str]
) -> torch.Tensor:
    """What the checkpoint's decoder reads for ``names``: the maps (N, C, H, W) for a decoder
    that reads them, else their pooled vectors (N, C) (as :meth:`FeatureCache.model_inputs`)."""
    maps = checkpoint_maps(checkpoint, root, corpus_names, names)
    return maps if checkpoint.model.reads_map else ImageEncoder.pool(maps.float())


@torch.inference_mode()
def checkpoint_maps(
    checkpoint: Checkpoint, root: Path, corpus_names: Sequence[str], names: Sequence[str], batch_size: int = 250
) -> torch.Tensor:
    """The encoder's maps (N, C, H, W) for ``names``, from the cache of the corpus' images
    (``corpus_names``) under ``root``: rows of the frozen encoder's cache or, for a fine-tuned
    encoder, of the trunk's cache through its tuned top."""
    if not checkpoint.encoder_tuned_stages:
        cache = cache_for(root, checkpoint.encoder, corpus_names)
        return torch.from_numpy(cache.features[cache.rows(names)])
    trunk, top = tuned_split(checkpoint, checkpoint.encoder_tuned_stages)
    flags = trunk_flags(checkpoint.encoder.name, checkpoint.encoder_tuned_stages)
    cache = cache_for(root, trunk.spec, corpus_names, extract_flags=flags)
    rows = cache.rows(names)
    maps = [
        top(torch.from_numpy(cache.features[rows[i : i + batch_size]]).float()) for i in range(0, len(rows), batch_size)
    ]
    return torch.cat(maps)
