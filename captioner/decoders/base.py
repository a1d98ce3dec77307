"""What every decoder answers, so that no caller checks flags or classes to know which one it has.

A decoder reads encoder features, generates words through ``init_state`` / ``step`` /
``select_state`` (what :mod:`captioner.decoding` runs) and is trained with teacher forcing
through ``forward``. Its class says what it reads (:attr:`Decoder.reads_map`) and whether
each word comes with attention weights (:attr:`Decoder.has_attention`);
:meth:`Decoder.for_inference` gives its fast CPU form for a weight precision.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from captioner.config import ModelConfig
from captioner.precision import check_precision, dynamically_quantised

__all__ = ["Decoder"]


class Decoder(nn.Module):
    """Base of the registered decoders (see :mod:`captioner.decoders`).

    Attributes:
        name: The name the registry, the config and the checkpoint know it by.
        has_attention: Every word comes with weights over the image's locations.
        reads_map: Reads the encoder's map (B, C, H, W) rather than its pooled vector (B, C).
        reads_concepts: Reads the image's ImageNet concepts (a concept table travels with it).
    """

    name: ClassVar[str]
    has_attention: ClassVar[bool] = False
    reads_map: ClassVar[bool] = False
    reads_concepts: ClassVar[bool] = False

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.vocab_size < 5:
            raise ValueError("ModelConfig.vocab_size must be set from the vocabulary")
        self.config = config

    def init_state(self, features: torch.Tensor) -> Any:
        """Read the image and return the state from which ``<start>`` is fed."""
        raise NotImplementedError

    def step(self, tokens: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """One word: tokens (B,) -> logits (B, V) and the next state."""
        raise NotImplementedError

    @staticmethod
    def select_state(state: Any, indices: torch.Tensor) -> Any:
        """Rows ``indices`` of the state (beam search reorders and repeats them)."""
        raise NotImplementedError

    @staticmethod
    def attention_weights(state: Any) -> torch.Tensor | None:
        """The weights (B, L) over image locations that produced the last word; None without attention."""
        return None

    def for_inference(self, precision: str, *, native: bool = True) -> nn.Module:
        """This decoder with its weights in ``precision`` (see :mod:`captioner.precision`): itself
        for ``fp32``, else a copy with PyTorch's dynamic quantisation (CPU only). ``native``: for
        decoders with compiled kernels, run the C++ ones where they build."""
        check_precision(self, precision)
        return self if precision == "fp32" else dynamically_quantised(self, precision)
