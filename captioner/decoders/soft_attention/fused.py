"""CPU inference form of the soft-attention decoder: fp16 weights, one matrix product per input.

:class:`~captioner.decoders.soft_attention.model.SoftAttentionDecoder` spends a step in seven small Linear
calls, an LSTM cell and a 25k-element ``tanh``; at batch 1 each call costs more in overhead
than in arithmetic. :class:`FusedAttentionDecoder` computes the same function with two
fp16 products a word:

* everything read from the new ``h`` (the word logits, and for the next step the attention
  query, gate beta and the LSTM's hidden part) in one product at the end of a step, the
  next step's part carried in the state; the LSTM's context part in the other;
* the LSTM's word part looked up, not multiplied: a (vocabulary x 4 hidden) table holds
  every word's embedding already multiplied by the LSTM's input weights;
* the LSTM's gates written out with the formulas of ``nn.LSTMCell``, stored in the order
  i, f, o, g so that the three sigmoid gates are one call;
* the attention score ``w . tanh(keys + query) + b`` as ``2w . sigmoid(2 keys + 2 query)`` (the
  same function up to a constant, since tanh(x) = 2 sigmoid(2x) - 1, and the softmax over
  locations ignores constants): PyTorch's CPU sigmoid is about 4x faster than its tanh, and
  with the factors 2 folded into the weights it is one pass over the (B, L, A) scores. The
  state's keys are therefore stored doubled;
* the context as a matrix product instead of a broadcast multiply and sum.

Weights are stored in fp16 and multiplied in fp32 (fbgemm's fp16 GEMM, as in
``torch.ao`` dynamic quantisation). The step and a greedy loop over it run in C++
(:mod:`.native`), or as TorchScript (:mod:`.kernels`) where the
C++ kernels cannot be built or ``native=False``. Inference only: no gradients and no dropout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from captioner.decoders.soft_attention import state as attention_state
from captioner.decoders.soft_attention.kernels import Record, State, Weights, fused_greedy, fused_step
from captioner.decoders.soft_attention.native import (
    native_greedy,
    native_initial_state,
    native_kernels_available,
    native_step,
)
from captioner.torchscript import scripted

if TYPE_CHECKING:  # the reference form builds this one (its for_inference), so imports it
    from captioner.decoders.soft_attention.model import SoftAttentionDecoder

__all__ = ["FusedAttentionDecoder", "FusedState"]

# (h, c, projected map (B, L, E), doubled attention keys (B, L, A), last attention weights (B, L),
#  the next step's projection of h: doubled query, gate and LSTM hidden part (B, A + E + 4H))
FusedState = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _pack(weight: torch.Tensor, bias: torch.Tensor | None) -> torch.ScriptObject:
    bias = None if bias is None else bias.detach().float()
    return torch.ops.quantized.linear_prepack_fp16(weight.detach().float(), bias)


def _linear(inputs: torch.Tensor, packed: torch.ScriptObject) -> torch.Tensor:
    return torch.ops.quantized.linear_dynamic_fp16(inputs, packed)


def _ifog(gates: torch.Tensor) -> torch.Tensor:
    """Rows of an LSTM gate tensor in ``nn.LSTMCell``'s order (i, f, g, o) -> (i, f, o, g)."""
    i, f, g, o = gates.chunk(4, dim=0)
    return torch.cat([i, f, o, g])


class FusedAttentionDecoder(nn.Module):
    """The decoding interface of :class:`SoftAttentionDecoder` (``init_state``, ``step``,
    ``select_state``, ``attention_weights``) with fused fp16 weights, for CPU inference, and a
    compiled greedy loop (:class:`~captioner.decoding.CompiledGreedy`).
    ``native``: run the C++ kernels where they build (:attr:`native` says whether they run)."""

    has_attention = True

    def __init__(self, model: SoftAttentionDecoder, *, native: bool = True) -> None:
        super().__init__()
        self.config = model.config
        self.attention_dim, self.embed_dim = model.config.attention_dim, model.config.embed_dim
        self.vocab_size = model.config.vocab_size
        self.norm = nn.LayerNorm(model.config.feature_dim)
        self.norm.load_state_dict(model.glue[0].state_dict())
        cell = model.cell
        weight_ih = _ifog(cell.weight_ih.detach())
        word_weights, context_weights = weight_ih.split([self.embed_dim, self.embed_dim], dim=1)
        self.register_buffer("word_gates", model.embed.weight.detach() @ word_weights.T)  # (V, 4H)
        self.register_buffer("score_weight", 2.0 * model.score.weight.detach().view(-1))
        self._glue = _pack(model.glue[1].weight, model.glue[1].bias)
        self._key = _pack(2.0 * model.key.weight, 2.0 * model.key.bias)  # doubled keys (see above)
        self._init = _pack(
            torch.cat([model.init_h.weight, model.init_c.weight]), torch.cat([model.init_h.bias, model.init_c.bias])
        )
        hidden_weight = torch.cat([2.0 * model.query.weight, model.gate.weight, _ifog(cell.weight_hh)])
        hidden_bias = torch.cat([2.0 * model.query.bias, model.gate.bias, _ifog(cell.bias_hh + cell.bias_ih)])
        self._from_new_hidden = _pack(  # the first step reads it too, less its logits
            torch.cat([model.head.weight, hidden_weight]), torch.cat([model.head.bias, hidden_bias])
        )
        self._from_context = _pack(context_weights, None)
        self._sizes = [self.attention_dim, self.embed_dim, self.vocab_size]
        self.native = native and native_kernels_available()
        if self.native:
            self._step, self._greedy = native_step, native_greedy
        else:
            self._step, self._greedy = scripted(fused_step), scripted(fused_greedy)
        self.requires_grad_(False)
        self.eval()

    attention_weights = staticmethod(attention_state.attention_weights)

    def init_state(self, features: torch.Tensor) -> FusedState:
        """Maps (B, C, H, W) or locations (B, L, C) -> the state before ``<start>``."""
        h, c, locations, keys, from_h = self._kernel_state(features)
        weights = torch.full(locations.shape[:2], 1.0 / locations.shape[1], device=locations.device)
        return h, c, locations, keys, weights, from_h

    def _kernel_state(self, features: torch.Tensor) -> State:
        """The state before ``<start>`` as the TorchScript kernels take it (no attention weights yet)."""
        if features.dim() == 4:
            features = features.flatten(2).transpose(1, 2)
        if self.native:
            products = (self._glue, self._init, self._key, self._from_new_hidden)
            return native_initial_state(features, self.norm, products, self.vocab_size)
        return self.state_over(self.projected(features))

    def projected(self, locations: torch.Tensor) -> torch.Tensor:
        """The encoder's locations (B, L, C) through the glue: (B, L, E)."""
        return _linear(self.norm(locations.float()), self._glue)

    def state_over(self, memories: torch.Tensor) -> State:
        """The kernels' state before ``<start>`` over projected memories (B, L, E)."""
        h, c = torch.tanh(_linear(memories.mean(dim=1), self._init)).chunk(2, dim=1)
        keys = _linear(memories.contiguous(), self._key)
        from_h = _linear(h, self._from_new_hidden)[:, self.vocab_size :]
        return h.contiguous(), c.contiguous(), memories, keys, from_h

    def step(self, tokens: torch.Tensor, state: FusedState) -> tuple[torch.Tensor, FusedState]:
        """One word: tokens (B,) -> logits (B, V); the new state carries this step's attention (B, L)."""
        h, c, locations, keys, _, from_h = state
        logits, weights, (h, c, locations, keys, from_h) = self._step(
            tokens, (h, c, locations, keys, from_h), self._weights
        )
        return logits, (h, c, locations, keys, weights, from_h)

    def greedy_records(self, features: torch.Tensor, **options: Any) -> list[Record]:
        """Greedy decoding in one call to the compiled loop: the per-step records of
        :func:`captioner.decoding.greedy_decode`, the same as its Python loop over :meth:`step`.
        ``options``: ``mask``, ``scale``, ``start_id``, ``end_id``, ``max_length``, ``top_k`` of
        :func:`~captioner.decoders.soft_attention.kernels.fused_greedy`."""
        return self._greedy(self._kernel_state(features), self._weights, **options)

    @property
    def _weights(self) -> Weights:
        return self.word_gates, self.score_weight, self._from_context, self._from_new_hidden, self._sizes

    @staticmethod
    def select_state(state: FusedState, indices: torch.Tensor) -> FusedState:
        """Rows ``indices`` of the state (see :func:`.state.select_state`)."""
        *reference_state, from_h = state
        return (*attention_state.select_state(tuple(reference_state), indices), from_h.index_select(0, indices))
