"""Decoder weight precision for CPU inference: fp32, fp16 or int8 (PyTorch dynamic quantisation).

At batch 1 the LSTM decoder is bound by reading its weights (about 18 MB per word in fp32),
not by arithmetic. ``fp16`` stores the Linear/LSTM weights in half precision and computes in
fp32 (fbgemm's fp16 GEMM): half the bytes, and on the Flickr8k val and test splits the
same captions as fp32. Each decoder picks its form for a precision
(:meth:`~captioner.decoders.Decoder.for_inference`): the soft-attention decoder in ``fp16``
becomes a :class:`~captioner.decoders.soft_attention.FusedAttentionDecoder`, the same function
in fewer, fused matrix products, since at batch 1 the cost of each call weighs as much as the
arithmetic. ``int8`` (per-tensor dynamic quantisation) changes about one caption in eight;
``python -m benchmarks.decoder_precision`` measures all of them.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

__all__ = ["DECODER_PRECISIONS", "check_precision", "dynamically_quantised"]

DECODER_PRECISIONS = ("fp32", "fp16", "int8")
_DTYPES = {"fp16": torch.float16, "int8": torch.qint8}


def check_precision(model: nn.Module, precision: str) -> None:
    """Raise a ValueError unless ``model`` can hold its weights in ``precision``: a known name,
    and the CPU for ``fp16``/``int8`` (the quantised kernels are CPU-only)."""
    if precision not in DECODER_PRECISIONS:
        raise ValueError(f"decoder precision must be one of {', '.join(DECODER_PRECISIONS)}, not {precision!r}")
    if precision != "fp32" and any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError(f"decoder precision {precision!r} runs on the CPU only; use 'fp32' on other devices")


def dynamically_quantised(model: nn.Module, precision: str) -> nn.Module:
    """A copy of ``model`` with PyTorch's dynamic quantisation of its Linear and LSTM-cell
    layers (``fp16`` or ``int8`` weights), module by module, without fusing anything."""
    with warnings.catch_warnings():  # torch.ao's eager-mode API warns that it moves to torchao
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model).eval(), {nn.Linear, nn.LSTMCell}, dtype=_DTYPES[precision]
        )
