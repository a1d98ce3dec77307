"""Soft attention (Show, Attend and Tell): the reference form that trains (:mod:`.model`) and
its fused fp16 form for CPU inference (:mod:`.fused`), whose step and greedy loop run as C++
kernels (:mod:`.native`, ``fused_decoder.cpp``) or as TorchScript (:mod:`.kernels`)."""

from __future__ import annotations

from captioner.decoders.soft_attention.fused import FusedAttentionDecoder
from captioner.decoders.soft_attention.model import SoftAttentionDecoder

__all__ = ["FusedAttentionDecoder", "SoftAttentionDecoder"]
