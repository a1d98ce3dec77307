"""The fused attention decoder's step and its greedy loop, as TorchScript functions.

At batch 1 a step of :class:`~captioner.decoders.soft_attention.fused.FusedAttentionDecoder` is two fp16
matrix products (bound by reading the weights) and some twenty small
tensor operations, each of which costs more in Python and dispatch overhead than in
arithmetic. Compiled with ``torch.jit.script`` the same operations run from TorchScript's
interpreter: a step and the greedy loop around it (the word distribution, the top-k, dropping
finished captions) never return to Python, which makes greedy decoding about three times
faster. Nothing is fused or reordered (PyTorch does not fuse on the CPU by default), so the
numbers are exactly those of eager mode.

:func:`captioner.torchscript.scripted` compiles them (and runs them in Python where TorchScript
cannot compile them).
"""

from __future__ import annotations

import torch

__all__ = ["Record", "State", "Weights", "fused_greedy", "fused_step"]

# per step: (rows, top log-probs, top ids, chosen tokens, chosen log-probs, attention weights)
Record = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
# (h, c, projected map (B, L, E), doubled attention keys (B, L, A), the next step's projection of h)
State = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
# (the words' LSTM gate table, doubled score weight, packed context product, packed product of the
#  new h, [attention dim, embedding dim, vocabulary size]): see captioner.decoders.soft_attention.fused
Weights = tuple[
    torch.Tensor,
    torch.Tensor,
    torch.classes.quantized.LinearPackedParamsBase,
    torch.classes.quantized.LinearPackedParamsBase,
    list[int],
]


def fused_step(tokens: torch.Tensor, state: State, weights: Weights) -> tuple[torch.Tensor, torch.Tensor, State]:
    """One word: tokens (B,) -> (logits (B, V), attention weights (B, L), the new state), with
    the state and weights documented in :mod:`captioner.decoders.soft_attention.fused`."""
    h, c, locations, keys, from_h = state
    word_gates, score_weight, from_context, from_new_hidden, sizes = weights
    attention_dim, embed_dim, vocab_size = sizes[0], sizes[1], sizes[2]
    hidden = h.shape[1]
    parts = from_h.split([attention_dim, embed_dim, 4 * hidden], dim=1)
    query, gate, gates = parts[0], parts[1], parts[2]
    scores = (keys + query[:, None]).sigmoid_() @ score_weight  # (B, L), up to a constant
    attention = scores.softmax(dim=-1)
    if locations.shape[0] == 1:  # one image shared by every row (beam search)
        mixed = attention @ locations[0]
    else:
        mixed = torch.bmm(attention[:, None], locations).squeeze(1)
    context = gate.sigmoid().mul_(mixed)  # (B, E)
    gates = torch.ops.quantized.linear_dynamic_fp16(context, from_context).add_(gates)
    gates = gates.add_(word_gates.index_select(0, tokens))
    sigmoid_gates = gates[:, : 3 * hidden].sigmoid().chunk(3, dim=1)  # input, forget, output
    c = torch.addcmul(sigmoid_gates[1] * c, sigmoid_gates[0], gates[:, 3 * hidden :].tanh())
    h = sigmoid_gates[2] * c.tanh()
    out = torch.ops.quantized.linear_dynamic_fp16(h, from_new_hidden)
    return out[:, :vocab_size], attention, (h, c, locations, keys, out[:, vocab_size:])


def fused_greedy(
    state: State,
    weights: Weights,
    mask: torch.Tensor | None,
    scale: float,
    start_id: int,
    end_id: int,
    max_length: int,
    top_k: int,
    reads: torch.Tensor | None = None,
) -> list[Record]:
    """Greedy decoding from the state before ``<start>``: the per-step records that
    :func:`captioner.decoding.greedy_decode` turns into captions, computed as its Python loop
    computes them (log-softmax of ``mask + scale * logits``; finished captions leave the batch).
    ``reads`` (B, V): the token each chosen token is read as at the next step (a concept
    decoder's copy, as the word it wrote); None: as itself."""
    device = state[0].device
    rows = torch.arange(state[0].shape[0], device=device)  # which image each batch row is
    tokens = torch.full([state[0].shape[0]], start_id, dtype=torch.long, device=device)
    inputs = tokens
    records: list[Record] = []
    for _ in range(max_length):
        logits, attention, state = fused_step(inputs, state, weights)
        if mask is not None:  # (V,) for every image, or (B, V) one row per image
            per_image = mask.dim() == 2 and mask.shape[0] != 1
            logits = torch.add(mask.index_select(0, rows) if per_image else mask, logits, alpha=scale)
        elif scale != 1.0:
            logits = logits * scale
        top_log_p, top_ids = torch.log_softmax(logits, dim=-1).topk(top_k, dim=-1)
        tokens, chosen_log_p = top_ids[:, 0], top_log_p[:, 0]
        records.append((rows, top_log_p, top_ids, tokens, chosen_log_p, attention))
        going = tokens != end_id
        still_going = int(going.sum())
        if still_going == 0:
            break
        if still_going < tokens.shape[0]:  # drop the finished captions from the batch
            keep = going.nonzero().squeeze(1)
            rows, tokens = rows.index_select(0, keep), tokens.index_select(0, keep)
            h, c, locations, keys, from_h = state
            if locations.shape[0] != 1:  # one image per row: select the rows' images too
                locations, keys = locations.index_select(0, keep), keys.index_select(0, keep)
            state = (h.index_select(0, keep), c.index_select(0, keep), locations, keys, from_h.index_select(0, keep))
        inputs = tokens if reads is None else reads.take(rows * reads.shape[1] + tokens)  # reads[rows, tokens]
    return records
