"""The decoders, registered by name: the name is what the config and the checkpoint store.

    model = build_decoder(ModelConfig(decoder="soft_attention", vocab_size=len(vocab)))

To add a decoder: write a :class:`Decoder` subclass in a module (or folder) of its own here,
with a ``name``, and add the class to ``_DECODERS`` below; its faster inference forms live
beside it and are reached through its :meth:`Decoder.for_inference`.
"""

from __future__ import annotations

from captioner.config import ModelConfig
from captioner.decoders.base import Decoder
from captioner.decoders.concept_attention import ConceptAttentionDecoder
from captioner.decoders.show_and_tell import ShowAndTellDecoder
from captioner.decoders.soft_attention import SoftAttentionDecoder

__all__ = [
    "ConceptAttentionDecoder",
    "Decoder",
    "ShowAndTellDecoder",
    "SoftAttentionDecoder",
    "build_decoder",
    "decoder_class",
    "decoder_names",
]

_DECODERS: dict[str, type[Decoder]] = {
    cls.name: cls for cls in (ShowAndTellDecoder, SoftAttentionDecoder, ConceptAttentionDecoder)
}


def decoder_names() -> list[str]:
    """The registered decoders' names, sorted."""
    return sorted(_DECODERS)


def decoder_class(name: str) -> type[Decoder]:
    """The decoder class registered as ``name``; a ValueError naming the registered ones otherwise."""
    try:
        return _DECODERS[name]
    except KeyError:
        raise ValueError(f"unknown decoder {name!r}; choose one of {', '.join(decoder_names())}") from None


def build_decoder(config: ModelConfig) -> Decoder:
    """The decoder ``config.decoder`` names, with freshly initialised weights of the config's shape."""
    return decoder_class(config.decoder)(config)
