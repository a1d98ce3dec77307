"""Soft attention that also reads the image's ImageNet concepts and may copy them into the caption.

The encoder's ImageNet head gives 1,000 class probabilities, summed into concept words by
the reviewed table (:mod:`captioner.concepts`). The ``K`` most probable words above a threshold
fill ``K`` slots. Each slot joins the image's ``L`` locations as one more thing to attend to:
its vector is the word's direction in the classifier (the mean of its classes' weight rows)
plus its confidence, both projected to the decoder size. The vocabulary ends with ``2K`` slot
tokens, "the word in slot k" and its plural; generating one copies that word into the
caption, which is how the decoder names things its caption corpus never showed (after DCC /
DNOC: training captions have the image's concept words replaced by slot tokens). A slot with
no concept can never be generated: a low-confidence concept is never forced into a caption.
At the next step a copy is read back as the word it wrote, where the vocabulary has that word,
so the decoder goes on from "dog", not from "some concept" (which it followed with "dog").

Everything past ``init_state`` is the soft-attention step over ``L + K`` memories plus one
additive mask on the slot tokens' logits, so the fused inference form of soft attention
runs it unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from captioner.concepts import ConceptTable, ImageConcepts, image_concepts
from captioner.config import ModelConfig
from captioner.decoders.concept_attention.fused import FusedConceptDecoder, concept_step
from captioner.decoders.soft_attention.model import SoftAttentionDecoder
from captioner.precision import check_precision
from captioner.vocab import Vocabulary

__all__ = ["ConceptAttentionDecoder", "ConceptState"]

# (h, c, memories (B, L + K, E), attention keys (B, L + K, A), last attention weights (B, L + K),
#  additive mask on the slot tokens' logits (B, 2K): 0 or -inf, the token each token is read as (B, V))
ConceptState = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class ConceptAttentionDecoder(SoftAttentionDecoder):
    """Soft attention over the image's locations and its concept slots, with copy tokens.

    It holds a copy of the encoder's ImageNet head, so it reads the class probabilities from the
    same maps (B, C, H, W) as every decoder: nothing else has to carry them.
    """

    name = "concept_attention"
    reads_concepts = True

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        if config.concept_slots < 1 or config.concept_words < 1:
            raise ValueError("a concept decoder needs concept_slots and concept_words (from its concept table)")
        e, k = config.embed_dim, config.concept_slots
        self.slots = k
        self.base_vocab_size = config.vocab_size - 2 * k  # slot tokens come last
        self.register_buffer("imagenet_weight", torch.zeros(config.num_classes, config.feature_dim))
        self.register_buffer("imagenet_bias", torch.zeros(config.num_classes))
        self.register_buffer("class_words", torch.full((config.num_classes,), -1, dtype=torch.long))
        self.register_buffer("word_vectors", torch.zeros(config.concept_words, config.feature_dim))
        # each concept word's vocabulary id, singular and plural (-1: not in the vocabulary); set
        # from the vocabulary by read_copies_as_words, so not stored in checkpoints
        self.register_buffer("copy_reads", torch.full((config.concept_words, 2), -1), persistent=False)
        self.concept_glue = nn.Sequential(nn.LayerNorm(config.feature_dim), nn.Linear(config.feature_dim, e))
        self.confidence = nn.Linear(2, e)
        self.empty_slot = nn.Parameter(torch.zeros(e))

    def set_concept_table(self, class_words: torch.Tensor, imagenet_head: nn.Linear) -> None:
        """Fill the buffers: each class's word index (1000,), the encoder's ImageNet head, and per
        word the mean of its classes' weight rows (the word's direction in the classifier)."""
        with torch.no_grad():
            weight = imagenet_head.weight.detach().float()
            self.imagenet_weight.copy_(weight)
            self.imagenet_bias.copy_(imagenet_head.bias.detach().float())
            self.class_words.copy_(class_words)
            mapped = class_words >= 0
            sums = torch.zeros_like(self.word_vectors).index_add_(0, class_words[mapped], weight[mapped])
            counts = torch.bincount(class_words[mapped], minlength=self.word_vectors.shape[0]).clamp(min=1)
            self.word_vectors.copy_(sums / counts[:, None])

    def read_copies_as_words(self, table: ConceptTable, vocab: Vocabulary) -> None:
        """Read a copy token back as the word it wrote (the table's word or its plural), where
        ``vocab`` (the decoder's tokens) has it; elsewhere as itself."""
        ids = [vocab.id_of(word) for pair in zip(table.words, table.plurals) for word in pair]
        self.copy_reads.copy_(torch.tensor([-1 if i == vocab.unk_id else i for i in ids]).view(-1, 2))

    def token_reads(self, concepts: ImageConcepts) -> torch.Tensor:
        """(B, V) long: the token each token is read as at the next step; every token itself, but
        a filled slot's copy tokens, which read as the slot's word (singular, plural)."""
        words = concepts.word_ids.repeat(1, 2)  # (B, 2K): the word each copy token writes
        plural = torch.arange(2 * self.slots, device=words.device) >= self.slots
        read = self.copy_reads[words.clamp(min=0), plural.long()]
        copies = torch.arange(self.base_vocab_size, self.config.vocab_size, device=words.device)
        read = torch.where((words >= 0) & (read >= 0), read, copies)
        words_themselves = torch.arange(self.base_vocab_size, device=words.device).expand(len(words), -1)
        return torch.cat([words_themselves, read], dim=1)

    def class_logits(self, features: torch.Tensor) -> torch.Tensor:
        """The ImageNet head's logits (B, 1000) for maps (B, C, H, W) or locations (B, L, C)."""
        pooled = features.float().mean(dim=(2, 3)) if features.dim() == 4 else features.float().mean(dim=1)
        return torch.addmm(self.imagenet_bias, pooled, self.imagenet_weight.T)

    def class_probabilities(self, features: torch.Tensor) -> torch.Tensor:
        """The ImageNet head's probabilities (B, 1000) for maps (B, C, H, W) or locations (B, L, C)."""
        return torch.softmax(self.class_logits(features), dim=-1)

    def concepts(self, features: torch.Tensor) -> ImageConcepts:
        """The slots' words for the images' features."""
        return self.concepts_from_probabilities(self.class_probabilities(features))

    def concepts_from_probabilities(self, class_probs: torch.Tensor) -> ImageConcepts:
        """The slots' words for the images' ImageNet probabilities (B, 1000)."""
        return image_concepts(
            class_probs,
            self.class_words,
            self.word_vectors.shape[0],
            slots=self.slots,
            threshold=self.config.concept_threshold,
        )

    def concept_memories(self, concepts: ImageConcepts, word_memories: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K, E): each slot's word and confidence, or the learned empty-slot vector.

        ``word_memories``: :meth:`word_memories`, computed once, for inference (the same values).
        """
        available, word_ids = concepts.available, concepts.word_ids.clamp(min=0)
        if word_memories is None:
            words = self.concept_glue(self.word_vectors[word_ids].float())  # (B, K, E)
        else:
            words = word_memories[word_ids]
        score = concepts.scores.float().clamp(min=1e-4)
        filled = words + self.confidence(torch.stack([score, score.log()], dim=-1))
        return torch.where(available[:, :, None], filled, self.empty_slot.expand_as(filled))

    def word_memories(self) -> torch.Tensor:
        """(W, E): every concept word's direction through the slot glue (a slot's memory less its
        confidence term)."""
        return self.concept_glue(self.word_vectors.float())

    def slot_mask(self, concepts: ImageConcepts) -> torch.Tensor:
        """(B, 2K) additive mask on the slot tokens' logits: -inf for empty slots (singular and
        plural), the config's ``copy_bias`` for filled ones."""
        blocked = (~concepts.available).repeat(1, 2)
        filled = torch.full(blocked.shape, float(self.config.copy_bias), device=blocked.device)
        return filled.masked_fill(blocked, float("-inf"))

    def memories(self, features: torch.Tensor, concepts: ImageConcepts) -> torch.Tensor:
        """(B, L + K, E): the image's projected locations, then its concept slots."""
        return torch.cat([self._locations(features), self.concept_memories(concepts)], dim=1)

    def init_state(self, features: torch.Tensor, concepts: ImageConcepts | None = None) -> ConceptState:
        """The state before ``<start>``; ``concepts``: the features' concepts where already read."""
        concepts = self.concepts(features) if concepts is None else concepts
        memories = self.memories(features, concepts)
        mean = memories.mean(dim=1)
        weights = torch.full(memories.shape[:2], 1.0 / memories.shape[1], device=memories.device)
        h, c = torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean))
        return h, c, memories, self.key(memories), weights, self.slot_mask(concepts), self.token_reads(concepts)

    def step(self, tokens: torch.Tensor, state: ConceptState) -> tuple[torch.Tensor, ConceptState]:
        """One word: tokens (B,) -> logits (B, V), empty slots masked; the state keeps this step's
        attention. A copy token is read as the word it wrote."""
        return concept_step(super().step, self.base_vocab_size, tokens, state)

    def forward_with_attention(self, features: torch.Tensor, captions: torch.Tensor):
        """Logits (B, T-1, V) and attention weights (B, T-1, L) over the image's locations."""
        logits, weights = super().forward_with_attention(features, captions)
        return logits, weights[:, :, : -self.slots]

    def attention_weights(self, state: ConceptState) -> torch.Tensor:
        """The weights (B, L) over the image's locations (the slots' share left out)."""
        return state[4][:, : state[4].shape[1] - self.slots]

    @staticmethod
    def select_state(state: ConceptState, indices: torch.Tensor) -> ConceptState:
        *attention, mask, reads = state
        selected = SoftAttentionDecoder.select_state(tuple(attention), indices)
        return (*selected, mask.index_select(0, indices), reads.index_select(0, indices))

    def for_inference(self, precision: str, *, native: bool = True) -> nn.Module:
        """In ``fp16`` the :class:`FusedConceptDecoder`; otherwise as :meth:`Decoder.for_inference`."""
        if precision != "fp16":
            return super(SoftAttentionDecoder, self).for_inference(precision, native=native)
        check_precision(self, precision)
        return FusedConceptDecoder(self, native=native)
