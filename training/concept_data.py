"""Training inputs of a concept decoder: its table and ImageNet head, slot vocabulary, slotted captions.

Every cached image's slot concepts come from its cached map through the decoder's copy of the
encoder's ImageNet head (one small product per image, no second pass over the photos); each
training caption then has the words naming those concepts replaced by the slots' copy tokens
(:func:`captioner.concepts.slotted_tokens`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from captioner.concepts import ConceptTable, slot_tokens, slotted_tokens
from captioner.encoders import ImageEncoder
from captioner.vocab import Vocabulary, tokenize

__all__ = [
    "base_vocabulary",
    "cached_slot_words",
    "concept_vocabulary",
    "prepare_concept_decoder",
    "slotted_caption_pairs",
]


def cached_slot_words(model: nn.Module, features: torch.Tensor, *, chunk: int = 1024) -> torch.Tensor:
    """(N, K) long: the slot words (-1: empty) the concept decoder ``model`` reads from each row of
    ``features`` (the cached maps), in chunks to bound memory."""
    with torch.inference_mode():
        return torch.cat([model.concepts(features[i : i + chunk]).word_ids for i in range(0, len(features), chunk)])


def base_vocabulary(vocab: Vocabulary) -> Vocabulary:
    """``vocab`` without the slot tokens a concept decoder's vocabulary ends with (if any)."""
    return Vocabulary([token for token in vocab.tokens if not token.startswith("<concept")])


def concept_vocabulary(base: Vocabulary, slots: int) -> Vocabulary:
    """``base`` followed by the ``2 * slots`` copy tokens."""
    return Vocabulary([*base.tokens, *slot_tokens(slots)])


def prepare_concept_decoder(model: nn.Module, table: ConceptTable, encoder: ImageEncoder, vocab: Vocabulary) -> None:
    """Give a fresh concept decoder its table, a copy of the encoder's ImageNet head and, from its
    vocabulary ``vocab``, the words its copy tokens are read back as."""
    if encoder.imagenet_head is None:
        raise ValueError(
            f"the {encoder.spec.name} encoder has no ImageNet head; a concept decoder needs an EfficientNet-Lite "
            "whose top, if fine-tuned, kept the head (a concept decoder's, tuned by training.scst --imagenet-weight; "
            "training.train --keep-imagenet-head reads it through a top tuned without it)"
        )
    model.set_concept_table(table.class_index(), encoder.imagenet_head)
    model.read_copies_as_words(table, vocab)


def slotted_caption_pairs(
    images: Sequence, rows: np.ndarray, vocab: Vocabulary, word_ids: torch.Tensor, table: ConceptTable
) -> list[tuple[int, torch.Tensor]]:
    """(feature row, token ids) for every caption, with the image's concept words as slot tokens.
    ``word_ids`` (N, K): each cached row's slot words (-1: empty)."""
    pairs = []
    for image, row in zip(images, rows):
        slots = word_ids[int(row)].tolist()
        for caption in image.captions:
            tokens = slotted_tokens(tokenize(caption), slots, table)
            pairs.append((int(row), torch.tensor([vocab.start_id, *map(vocab.id_of, tokens), vocab.end_id])))
    return pairs
