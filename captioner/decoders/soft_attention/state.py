"""The soft-attention decoder's state and what decoding reads from it, shared by its reference
form (:mod:`.model`) and its fused inference form (:mod:`.fused`)."""

from __future__ import annotations

import torch

__all__ = ["AttentionState", "attention_weights", "select_state"]

# (h, c, projected map (B, L, E), attention keys (B, L, A), last attention weights (B, L))
AttentionState = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def attention_weights(state: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The weights (B, L) over image locations that produced the last word."""
    return state[4]


def select_state(state: AttentionState, indices: torch.Tensor) -> AttentionState:
    """Rows ``indices`` of the state. The image's locations and keys, when held once (batch 1,
    as in beam search over one image), are shared by every row through broadcasting, not copied."""
    h, c, locations, keys, weights = state
    if locations.shape[0] != 1:  # one image per row: select the rows' images too
        locations, keys = locations.index_select(0, indices), keys.index_select(0, indices)
    return h.index_select(0, indices), c.index_select(0, indices), locations, keys, weights.index_select(0, indices)
