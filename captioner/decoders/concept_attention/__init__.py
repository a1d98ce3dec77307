"""The concept decoder: soft attention over the image and its ImageNet concepts, with copy tokens.

:mod:`.model` is the reference (training) form, :mod:`.fused` its CPU inference form, and
:mod:`.read` either form decoding features whose concepts were already read.
"""

from captioner.decoders.concept_attention.fused import FusedConceptDecoder
from captioner.decoders.concept_attention.model import ConceptAttentionDecoder

__all__ = ["ConceptAttentionDecoder", "FusedConceptDecoder"]
