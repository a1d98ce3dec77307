"""CPU inference form of the soft-attention decoder: fp16 weights, one matrix product per input.

:class:`~captioner.attention.AttentionCaptionModel` spends a step in seven small Linear
calls, an LSTM cell and a 25k-element ``tanh``; at batch 1 each call costs more in overhead
than in arithmetic. :class:`FusedAttentionDecoder` computes the same function with:

* everything read from the previous ``h`` (attention query, gate beta, the LSTM's hidden
  part) in one fp16 product, and the LSTM's context part in another;
* the LSTM's word part looked up, not multiplied: a (vocabulary x 4 hidden) table holds
  every word's embedding already multiplied by the LSTM's input weights;
* the LSTM's gates written out (the same i, f, g, o order and formulas as ``nn.LSTMCell``);
* the attention score ``w . tanh(keys + query) + b`` as ``2w . sigmoid(2 keys + 2 query) + b - sum(w)``
  (the same function, since tanh(x) = 2 sigmoid(2x) - 1): PyTorch's CPU sigmoid is about 4x
  faster than its tanh, and with the factors 2 folded into the weights it is one pass over
  the (B, L, A) scores instead of two. The state's keys are therefore stored doubled;
* the context as a matrix product instead of a broadcast multiply and sum.

Weights are stored in fp16 and multiplied in fp32 (fbgemm's fp16 GEMM, as in
``torch.ao`` dynamic quantisation). Inference only: it has no gradients and no dropout.
"""

from __future__ import annotations

import torch
from torch import nn

from captioner.attention import AttentionCaptionModel, AttentionState

__all__ = ["FusedAttentionDecoder"]


def _pack(weight: torch.Tensor, bias: torch.Tensor | None) -> torch.ScriptObject:
    bias = None if bias is None else bias.detach().float()
    return torch.ops.quantized.linear_prepack_fp16(weight.detach().float(), bias)


def _linear(inputs: torch.Tensor, packed: torch.ScriptObject) -> torch.Tensor:
    return torch.ops.quantized.linear_dynamic_fp16(inputs, packed)


class FusedAttentionDecoder(nn.Module):
    """The decoding interface of :class:`AttentionCaptionModel` (``init_state``, ``step``,
    ``select_state``, ``attention_weights``) with fused fp16 weights, for CPU inference."""

    def __init__(self, model: AttentionCaptionModel) -> None:
        super().__init__()
        self.config = model.config
        self.attention_dim, self.embed_dim = model.config.attention_dim, model.config.embed_dim
        self.norm = nn.LayerNorm(model.config.feature_dim)
        self.norm.load_state_dict(model.glue[0].state_dict())
        cell = model.cell
        word_weights, context_weights = cell.weight_ih.detach().split([self.embed_dim, self.embed_dim], dim=1)
        self.register_buffer("word_gates", model.embed.weight.detach() @ word_weights.T)  # (V, 4H)
        score_weight = model.score.weight.detach().view(-1)
        self.register_buffer("score_weight", 2.0 * score_weight)
        self.register_buffer("score_bias", model.score.bias.detach() - score_weight.sum())
        self._glue = _pack(model.glue[1].weight, model.glue[1].bias)
        self._key = _pack(2.0 * model.key.weight, 2.0 * model.key.bias)  # doubled keys (see above)
        self._init = _pack(
            torch.cat([model.init_h.weight, model.init_c.weight]), torch.cat([model.init_h.bias, model.init_c.bias])
        )
        self._from_hidden = _pack(
            torch.cat([2.0 * model.query.weight, model.gate.weight, cell.weight_hh]),  # doubled query
            torch.cat([2.0 * model.query.bias, model.gate.bias, cell.bias_hh + cell.bias_ih]),
        )
        self._from_context = _pack(context_weights, None)
        self._head = _pack(model.head.weight, model.head.bias)
        self.requires_grad_(False)
        self.eval()

    select_state = staticmethod(AttentionCaptionModel.select_state)
    attention_weights = staticmethod(AttentionCaptionModel.attention_weights)

    def init_state(self, features: torch.Tensor) -> AttentionState:
        """Maps (B, C, H, W) or locations (B, L, C) -> the state before ``<start>``."""
        if features.dim() == 4:
            features = features.flatten(2).transpose(1, 2)
        locations = _linear(self.norm(features.float()), self._glue)  # (B, L, E)
        h, c = torch.tanh(_linear(locations.mean(dim=1), self._init)).chunk(2, dim=1)
        weights = torch.full(locations.shape[:2], 1.0 / locations.shape[1], device=locations.device)
        return h.contiguous(), c.contiguous(), locations, _linear(locations, self._key), weights

    def step(self, tokens: torch.Tensor, state: AttentionState) -> tuple[torch.Tensor, AttentionState]:
        """One word: tokens (B,) -> logits (B, V); the new state carries this step's attention (B, L)."""
        h, c, locations, keys, _ = state
        query, gate, hidden_gates = _linear(h, self._from_hidden).split(
            [self.attention_dim, self.embed_dim, 4 * h.shape[1]], dim=1
        )
        scores = (keys + query[:, None]).sigmoid_() @ self.score_weight + self.score_bias  # (B, L)
        weights = scores.softmax(dim=-1)
        if locations.shape[0] == 1:  # one image shared by every row (beam search)
            mixed = weights @ locations[0]
        else:
            mixed = torch.bmm(weights[:, None], locations).squeeze(1)
        context = torch.sigmoid(gate) * mixed  # (B, E)
        gates = _linear(context, self._from_context) + hidden_gates + self.word_gates[tokens]
        in_gate, forget_gate, cell_gate, out_gate = gates.chunk(4, dim=1)  # nn.LSTMCell's order
        c = torch.addcmul(forget_gate.sigmoid() * c, in_gate.sigmoid(), cell_gate.tanh())
        h = out_gate.sigmoid_() * c.tanh()
        return _linear(h, self._head), (h, c, locations, keys, weights)
