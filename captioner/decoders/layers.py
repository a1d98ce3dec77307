"""Pieces the decoders share: the glue and the word classifier."""

from __future__ import annotations

import torch
from torch import nn

from captioner.config import ModelConfig

__all__ = ["Glue", "word_classifier"]


class Glue(nn.Module):
    """Trainable linear projection from CNN features to the decoder's input size."""

    def __init__(self, feature_dim: int, embed_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(feature_dim)
        self.proj = nn.Linear(feature_dim, embed_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() == 4:  # (B, C, H, W) map -> (B, C) pooled vector
            features = features.float().mean(dim=(2, 3))
        return self.dropout(self.proj(self.norm(features.float())))  # (B, E)


def word_classifier(config: ModelConfig, embed: nn.Embedding) -> nn.Linear:
    """The hidden state -> word logits layer; its weight is ``embed``'s when the config ties them."""
    head = nn.Linear(config.hidden_dim, config.vocab_size)
    if config.tie_embeddings:
        if config.hidden_dim != config.embed_dim:
            raise ValueError(
                f"tie_embeddings needs hidden_dim == embed_dim (got {config.hidden_dim} and {config.embed_dim})"
            )
        head.weight = embed.weight
    return head
