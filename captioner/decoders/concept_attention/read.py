"""A concept decoder handed the concepts of the features it is about to decode.

:class:`~captioner.Captioner` reads each batch's concepts once, to show them beside the
captions; decoding that same batch through :func:`with_read_concepts` reuses them rather than
running the ImageNet head and the concept table again. The view holds one call's features and
concepts, so concurrent captions never share it.
"""

from __future__ import annotations

from typing import Any

import torch

from captioner.concepts import ImageConcepts
from captioner.decoding import CompiledGreedy

__all__ = ["with_read_concepts"]


class _ReadConcepts:
    """The :class:`~captioner.decoding.StepModel` interface of a concept decoder whose
    ``features`` were read as ``concepts``; other features (a beam search's single image, a
    slice) are read afresh, as the decoder alone would."""

    def __init__(self, decoder: Any, features: torch.Tensor, concepts: ImageConcepts) -> None:
        self.decoder, self.features, self.concepts = decoder, features, concepts

    def _known(self, features: torch.Tensor) -> ImageConcepts | None:
        return self.concepts if features is self.features else None

    def init_state(self, features: torch.Tensor) -> Any:
        return self.decoder.init_state(features, self._known(features))

    def step(self, tokens: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        return self.decoder.step(tokens, state)

    def select_state(self, state: Any, indices: torch.Tensor) -> Any:
        return self.decoder.select_state(state, indices)

    def attention_weights(self, state: Any) -> torch.Tensor | None:
        return self.decoder.attention_weights(state)


class _CompiledReadConcepts(_ReadConcepts):
    """:class:`_ReadConcepts` of a decoder with a compiled greedy loop (:class:`CompiledGreedy`)."""

    @property
    def vocab_size(self) -> int:
        return self.decoder.vocab_size

    def greedy_records(self, features: torch.Tensor, **options: Any) -> list[tuple[torch.Tensor, ...]]:
        return self.decoder.greedy_records(features, concepts=self._known(features), **options)


def with_read_concepts(decoder: Any, features: torch.Tensor, concepts: ImageConcepts) -> _ReadConcepts:
    """``decoder`` (a concept decoder, either form) decoding ``features`` with their ``concepts``."""
    if isinstance(decoder, CompiledGreedy):
        return _CompiledReadConcepts(decoder, features, concepts)
    return _ReadConcepts(decoder, features, concepts)
