"""Glue projection and LSTM decoder (Show and Tell, Vinyals et al. 2015).

The image enters as the LSTM's first input: the glue projects the pooled CNN feature to
the word-embedding size and the LSTM reads it at step -1 from a zero state, exactly as
in Show and Tell. Feeding it as an input (rather than as the initial state) lets the
LSTM's own gates decide how much of the image to keep in memory, and keeps the decoder
a plain language model over ``[image, <start>, w1, ...]``; ``init_state`` runs that
first step so decoding only ever calls ``step``.
"""

from __future__ import annotations

import torch
from torch import nn

from captioner.config import ModelConfig
from captioner.decoders.base import Decoder
from captioner.decoders.layers import Glue, word_classifier

__all__ = ["DecoderState", "ShowAndTellDecoder"]

DecoderState = tuple[torch.Tensor, torch.Tensor]  # LSTM (h, c), each (layers, B, hidden)


class ShowAndTellDecoder(Decoder):
    """Glue + LSTM decoder over the pooled vector. Works on encoder features, so it trains on cached features."""

    name = "show_and_tell"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.glue = Glue(config.feature_dim, config.embed_dim, config.image_dropout)
        self.embed = nn.Embedding(config.vocab_size, config.embed_dim, padding_idx=0)
        self.lstm = nn.LSTM(
            config.embed_dim,
            config.hidden_dim,
            num_layers=config.num_layers,
            batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(config.dropout)
        self.head = word_classifier(config, self.embed)

    def forward(self, features: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
        """Teacher forcing. ``captions`` (B, T) = ``<start> w1 .. <end> <pad>..``.

        Returns logits (B, T-1, V) predicting ``captions[:, 1:]``.
        """
        image = self.glue(features).unsqueeze(1)  # (B, 1, E)
        words = self.embed(captions[:, :-1])  # (B, T-1, E)
        outputs, _ = self.lstm(torch.cat([image, words], dim=1))  # (B, T, H)
        return self.head(self.dropout(outputs[:, 1:]))  # (B, T-1, V)

    def init_state(self, features: torch.Tensor) -> DecoderState:
        """Read the image (step -1) and return the state from which ``<start>`` is fed."""
        image = self.glue(features).unsqueeze(1)  # (B, 1, E)
        _, state = self.lstm(image)
        return state

    def step(self, tokens: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
        """One decoding step: tokens (B,) -> logits (B, V) and the next state."""
        outputs, state = self.lstm(self.embed(tokens).unsqueeze(1), state)  # (B, 1, H)
        return self.head(outputs[:, 0]), state

    @staticmethod
    def select_state(state: DecoderState, indices: torch.Tensor) -> DecoderState:
        """Reorder / repeat the batch entries of ``state`` (used by beam search)."""
        h, c = state
        return h.index_select(1, indices), c.index_select(1, indices)
