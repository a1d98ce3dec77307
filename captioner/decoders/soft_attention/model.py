"""Soft-attention decoder (Show, Attend and Tell; Xu et al. 2015) with the same linear glue.

The glue projects every location of the encoder's map (B, C, H, W) to the decoder size;
at each step additive attention over the L = H*W locations gives a context vector, gated
by a scalar beta, which the LSTM reads together with the previous word. The initial state
comes from the mean of the projected map. ``step`` also returns the attention weights
through the state, so a per-word heatmap can be shown.
"""

from __future__ import annotations

import torch
from torch import nn

from captioner.config import ModelConfig
from captioner.decoders.base import Decoder
from captioner.decoders.layers import word_classifier
from captioner.decoders.soft_attention import state as attention_state
from captioner.decoders.soft_attention.fused import FusedAttentionDecoder
from captioner.decoders.soft_attention.state import AttentionState
from captioner.precision import check_precision

__all__ = ["AttentionState", "SoftAttentionDecoder"]


class SoftAttentionDecoder(Decoder):
    """Glue + attention LSTM decoder. ``features``: maps (B, C, H, W) or locations (B, L, C)."""

    name = "soft_attention"
    has_attention = True
    reads_map = True

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        e, h, a = config.embed_dim, config.hidden_dim, config.attention_dim
        self.glue = nn.Sequential(nn.LayerNorm(config.feature_dim), nn.Linear(config.feature_dim, e))
        self.image_dropout = nn.Dropout(config.image_dropout)
        self.init_h, self.init_c = nn.Linear(e, h), nn.Linear(e, h)
        self.key = nn.Linear(e, a)
        self.query = nn.Linear(h, a)
        self.score = nn.Linear(a, 1)
        self.gate = nn.Linear(h, e)
        self.embed = nn.Embedding(config.vocab_size, e, padding_idx=0)
        self.cell = nn.LSTMCell(2 * e, h)
        self.dropout = nn.Dropout(config.dropout)
        self.head = word_classifier(config, self.embed)

    def _locations(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() == 4:  # (B, C, H, W) -> (B, L, C)
            features = features.flatten(2).transpose(1, 2)
        return self.image_dropout(self.glue(features.float()))  # (B, L, E)

    def init_state(self, features: torch.Tensor) -> AttentionState:
        locations = self._locations(features)  # (B, L, E)
        mean = locations.mean(dim=1)
        weights = torch.full(locations.shape[:2], 1.0 / locations.shape[1], device=locations.device)
        return torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean)), locations, self.key(locations), weights

    def step(self, tokens: torch.Tensor, state: AttentionState) -> tuple[torch.Tensor, AttentionState]:
        """One word: tokens (B,) -> logits (B, V); the new state carries this step's attention (B, L)."""
        h, c, locations, keys, _ = state
        scores = self.score(torch.tanh(keys + self.query(h)[:, None])).squeeze(-1)  # (B, L)
        weights = scores.softmax(dim=-1)
        context = torch.sigmoid(self.gate(h)) * (weights[:, :, None] * locations).sum(dim=1)  # (B, E)
        h, c = self.cell(torch.cat([self.embed(tokens), context], dim=-1), (h, c))
        return self.head(self.dropout(h)), (h, c, locations, keys, weights)

    def forward(self, features: torch.Tensor, captions: torch.Tensor, *, return_attention: bool = False):
        """Teacher forcing: logits (B, T-1, V) predicting ``captions[:, 1:]`` (and weights (B, T-1, L))."""
        logits, weights = self.forward_with_attention(features, captions)
        return (logits, weights) if return_attention else logits

    def forward_with_attention(self, features: torch.Tensor, captions: torch.Tensor):
        """Logits (B, T-1, V) and attention weights (B, T-1, L) under teacher forcing."""
        state = self.init_state(features)
        logits, weights = [], []
        for t in range(captions.shape[1] - 1):
            step_logits, state = self.step(captions[:, t], state)
            logits.append(step_logits)
            weights.append(state[4])
        return torch.stack(logits, dim=1), torch.stack(weights, dim=1)

    attention_weights = staticmethod(attention_state.attention_weights)
    select_state = staticmethod(attention_state.select_state)

    def for_inference(self, precision: str, *, native: bool = True) -> nn.Module:
        """In ``fp16`` the :class:`FusedAttentionDecoder` (on its C++ kernels where they build and
        ``native``); otherwise as :meth:`Decoder.for_inference`."""
        if precision != "fp16":
            return super().for_inference(precision, native=native)
        check_precision(self, precision)
        return FusedAttentionDecoder(self, native=native)
