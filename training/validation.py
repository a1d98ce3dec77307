"""Greedy captions of the ``val`` images scored against their references: the number every
training run selects its best weights by."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from captioner.concepts import ConceptTable, caption_words
from captioner.decoders import Decoder
from captioner.decoding import greedy_decode
from captioner.vocab import Vocabulary
from training.datasets import CaptionedImage
from training.mentions import unfinished
from training.metrics import score_captions

__all__ = ["ValidationSet", "caption_texts", "validate"]


@dataclass(frozen=True)
class ValidationSet:
    """The ``val`` images with the model's inputs for them (rows in the same order), and how
    their captions are read: the vocabulary, a concept decoder's table, the greedy length limit."""

    features: torch.Tensor
    images: list[CaptionedImage]
    vocab: Vocabulary
    table: ConceptTable | None = None
    max_length: int = 20

    def scores(self, model: Decoder) -> dict[str, float]:
        """:func:`validate` ``model`` on these images."""
        return validate(model, self.features, self.images, self.vocab, max_length=self.max_length, table=self.table)


def validate(
    model: Decoder,
    features: torch.Tensor,
    images: list[CaptionedImage],
    vocab: Vocabulary,
    *,
    max_length: int,
    batch_size: int = 250,
    table: ConceptTable | None = None,
) -> dict[str, float]:
    """Greedy-decode ``features`` and score against the images' references (fast, Java-free): BLEU,
    CIDEr and ``unfinished``, the number of captions that stop mid-phrase.

    Plain greedy over the whole vocabulary (``<unk>`` allowed), as the shipped model was selected.
    A concept decoder's copy tokens are filled from ``table``.
    """
    model.eval()
    predictions = {}
    for start in range(0, len(images), batch_size):
        decoded = greedy_decode(
            model,
            features[start : start + batch_size],
            start_id=vocab.start_id,
            end_id=vocab.end_id,
            max_length=max_length,
            top_k=1,
        )
        captions = caption_texts(model, features[start : start + batch_size], decoded, vocab, table)
        predictions.update(
            {image.name: caption for image, caption in zip(images[start : start + batch_size], captions)}
        )
    references = {image.name: list(image.captions) for image in images}
    scores = score_captions(predictions, references, use_java=False, metrics=("BLEU", "CIDEr"))
    return {**scores, "unfinished": float(len(unfinished(predictions)))}


def caption_texts(
    model: Decoder, features: torch.Tensor, decoded: list, vocab: Vocabulary, table: ConceptTable | None
) -> list[str]:
    """The decoded captions as text; a concept decoder's copy tokens become the images' concept words."""
    if table is None:
        return [" ".join(vocab.decode(seq.token_ids)) for seq in decoded]
    slots = model.concepts(features).word_ids.tolist()
    return [
        " ".join(caption_words(seq.token_ids, vocab.tokens, vocab.end_id, words, table))
        for seq, words in zip(decoded, slots)
    ]
