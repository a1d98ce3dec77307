"""The fused attention decoder's step and greedy loop as a C++ extension, built on first use.

:mod:`.kernels` runs a word as some thirty ATen calls from TorchScript; at batch
1 their overhead, not their arithmetic, is most of the step besides the two fp16 products.
``fused_decoder.cpp`` (beside this module) computes the same function with plain loops around
those products (less decoding time: docs/speed.md) and registers it as ``torch.ops.captioner``.
PyTorch's extension loader compiles it once per machine (``ninja`` and a C++ compiler; about
20 s, kept under ``$TORCH_EXTENSIONS_DIR`` or ``~/.cache/torch_extensions``). Where it cannot,
:func:`native_kernels_available` warns once and the decoder keeps the TorchScript kernels.

:func:`native_step` and :func:`native_greedy` take and return what
:func:`.kernels.fused_step` and :func:`.kernels.fused_greedy`
do. Numbers differ from theirs in the last bits only (sums in another order).
"""

from __future__ import annotations

import functools
import logging
import warnings
from pathlib import Path

import torch

from captioner.decoders.soft_attention.kernels import Record, State, Weights

__all__ = ["native_greedy", "native_initial_state", "native_kernels_available", "native_step"]

_SOURCE = Path(__file__).with_name("fused_decoder.cpp")
_RECORD_SIZE = 6  # tensors per step in what the native greedy loop returns


@functools.cache
def native_kernels_available() -> bool:
    """Build (on first use) and load the native kernels; False, with a warning, where that fails."""
    logger = logging.getLogger(__name__)
    try:
        loader_log = logging.getLogger("torch.utils.cpp_extension")
        level = loader_log.level
        loader_log.setLevel(logging.ERROR)  # importing it warns that there is no CUDA, which we do not use
        try:
            from torch.utils import cpp_extension
        finally:
            loader_log.setLevel(level)
        logger.info("loading the native decoder kernels (compiled once per machine)")
        cpp_extension.load(
            "captioner_fused_decoder", [str(_SOURCE)], extra_cflags=["-O3", "-fopenmp-simd"], is_python_module=False
        )
        return hasattr(torch.ops.captioner, "greedy")
    except Exception as error:  # no compiler, no ninja, a failed build: all leave the TorchScript kernels
        warnings.warn(
            f"the native decoder kernels are unavailable, decoding runs the TorchScript ones ({error})", stacklevel=2
        )
        return False


def native_initial_state(locations: torch.Tensor, norm: torch.nn.LayerNorm, products: tuple, vocab_size: int) -> State:
    """The state before ``<start>`` from the encoder's locations (B, L, C), as
    :meth:`.fused.FusedAttentionDecoder.init_state` computes it, in C++
    (``products``: the decoder's packed glue, init, key and new-hidden fp16 products)."""
    return tuple(
        torch.ops.captioner.initial_state.default(
            locations.float(), norm.weight, norm.bias, norm.eps, *products, vocab_size
        )
    )


def native_step(tokens: torch.Tensor, state: State, weights: Weights) -> tuple[torch.Tensor, torch.Tensor, State]:
    """One word, as :func:`.kernels.fused_step`, in C++."""
    h, c, locations, keys, from_h = state
    logits, attention, h, c, from_h = torch.ops.captioner.step.default(tokens, h, c, locations, keys, from_h, *weights)
    return logits, attention, (h, c, locations, keys, from_h)


def native_greedy(
    state: State,
    weights: Weights,
    mask: torch.Tensor | None,
    scale: float,
    start_id: int,
    end_id: int,
    max_length: int,
    top_k: int,
) -> list[Record]:
    """Greedy decoding, as :func:`.kernels.fused_greedy`, in C++."""
    flat = torch.ops.captioner.greedy.default(*state, *weights, mask, scale, start_id, end_id, max_length, top_k)
    return [tuple(flat[i : i + _RECORD_SIZE]) for i in range(0, len(flat), _RECORD_SIZE)]
