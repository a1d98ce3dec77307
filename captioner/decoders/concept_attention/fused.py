"""CPU inference form of the concept decoder: the fused soft-attention kernels over ``L + K`` memories.

The concept decoder differs from soft attention only before the first word (its memories are
the image's locations followed by the concept slots), in an additive mask on the slot tokens'
logits and in reading a copy token back as its word, so :class:`FusedConceptDecoder` builds its
state once in Python and then runs the soft-attention decoder's fused step and compiled greedy
loop unchanged, the slot mask passed as the loop's per-image logit mask and the words read back
as its per-image token reads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from captioner.decoders.soft_attention.fused import FusedAttentionDecoder
from captioner.decoders.soft_attention.kernels import Record, State

if TYPE_CHECKING:
    from captioner.concepts import ImageConcepts
    from captioner.decoders.concept_attention.model import ConceptAttentionDecoder

__all__ = ["FusedConceptDecoder", "concept_step"]


def concept_step(
    soft_attention_step: Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]],
    base_vocab_size: int,
    tokens: torch.Tensor,
    state: tuple,
) -> tuple[torch.Tensor, tuple]:
    """One word of a concept decoder over ``soft_attention_step`` (either form's): each token read
    as its state's token reads say (a copy as the word it wrote), the slot mask added to the copy
    tokens' logits; the state's last two entries, the mask and the reads, carried on."""
    *attention, mask, reads = state
    logits, attention = soft_attention_step(reads.gather(1, tokens[:, None]).squeeze(1), tuple(attention))
    logits = torch.cat([logits[:, :base_vocab_size], logits[:, base_vocab_size:] + mask], dim=1)
    return logits, (*attention, mask, reads)


class FusedConceptDecoder(FusedAttentionDecoder):
    """:class:`ConceptAttentionDecoder`'s decoding interface with the fused fp16 soft-attention
    kernels; the concept slots' few fp32 products run once per caption, before the first word."""

    def __init__(self, model: ConceptAttentionDecoder, *, native: bool = True) -> None:
        super().__init__(model, native=native)
        self.reference = model  # its concept table, slot memories and slot mask
        with torch.no_grad():
            self.word_memories = model.word_memories()
        self.slots, self.base_vocab_size = model.slots, model.base_vocab_size

    def _concept_state(
        self, features: torch.Tensor, concepts: ImageConcepts | None = None
    ) -> tuple[State, torch.Tensor, torch.Tensor]:
        """The kernels' state before ``<start>`` over the locations and slots, the slot mask (B, 2K)
        and the token each token is read as (B, V); ``concepts``: the features' concepts where
        already read."""
        concepts = self.reference.concepts(features) if concepts is None else concepts
        if features.dim() == 4:
            features = features.flatten(2).transpose(1, 2)
        slots = self.reference.concept_memories(concepts, self.word_memories)
        memories = torch.cat([self.projected(features), slots], dim=1)
        reads = self.reference.token_reads(concepts)
        return self.state_over(memories), self.reference.slot_mask(concepts), reads  # over L + K memories

    def init_state(self, features: torch.Tensor, concepts: ImageConcepts | None = None):
        (h, c, memories, keys, from_h), mask, reads = self._concept_state(features, concepts)
        weights = torch.full(memories.shape[:2], 1.0 / memories.shape[1], device=memories.device)
        return h, c, memories, keys, weights, from_h, mask, reads

    def step(self, tokens: torch.Tensor, state):
        """One word, as :meth:`ConceptAttentionDecoder.step`: a copy token is read as its word."""
        return concept_step(super().step, self.base_vocab_size, tokens, state)

    def greedy_records(
        self,
        features: torch.Tensor,
        *,
        mask: torch.Tensor | None,
        concepts: ImageConcepts | None = None,
        **options: Any,
    ) -> list[Record]:
        """The compiled greedy loop with the slot mask as a per-image logit mask (B, V); the records'
        attention weights cover the image's locations only, as :meth:`attention_weights` does."""
        state, slot_mask, reads = self._concept_state(features, concepts)
        per_image = torch.zeros(slot_mask.shape[0], self.vocab_size, device=slot_mask.device)
        per_image[:, self.base_vocab_size :] = slot_mask * options["scale"]  # as step's mask, then scaled
        if mask is not None:
            per_image += mask
        records = self._greedy(state, self._weights, mask=per_image, reads=reads, **options)
        return [(*record[:5], record[5][:, : -self.slots]) for record in records]

    def attention_weights(self, state) -> torch.Tensor:
        """The weights (B, L) over the image's locations (the slots' share left out)."""
        return state[4][:, : -self.slots]

    @staticmethod
    def select_state(state, indices: torch.Tensor):
        *fused, mask, reads = state
        selected = FusedAttentionDecoder.select_state(tuple(fused), indices)
        return (*selected, mask.index_select(0, indices), reads.index_select(0, indices))
