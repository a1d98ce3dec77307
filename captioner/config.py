"""Model configuration: the fields saved in every checkpoint to rebuild the model's shape."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["ModelConfig"]


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a captioner. Saved in the checkpoint, so loading needs no other settings.

    Attributes:
        encoder: Encoder name from :mod:`captioner.encoders` (decides weights and
            preprocessing), e.g. ``"efficientnet_lite0"`` or ``"torchvision:resnet50"``.
        feature_dim: Channels of the encoder's feature map / pooled vector.
        vocab_size: Number of tokens, special tokens included.
        embed_dim: Word-embedding size; the glue projects image features to this size.
        hidden_dim: LSTM hidden size.
        num_layers: Stacked LSTM layers.
        dropout: Dropout on the LSTM output before the classifier (and between LSTM layers).
        image_dropout: Dropout on the glue output (the image embedding the LSTM reads first).
        decoder: Decoder name from :mod:`captioner.decoders`: ``"show_and_tell"`` reads the
            pooled vector once (Show and Tell), ``"soft_attention"`` attends over the encoder's
            map at every word (Show, Attend and Tell).
        attention_dim: Size of the additive attention's hidden layer.
        tie_embeddings: The word classifier shares its weights with the word embeddings
            (Press and Wolf 2017); needs ``hidden_dim == embed_dim``.
        num_classes: Classes of the encoder's ImageNet head (concept decoders).
        concept_words: Words of the concept table (concept decoders; 0 otherwise).
        concept_slots: The image's best concept words the decoder reads and may copy.
        concept_threshold: Summed class probability a concept word needs to fill a slot; an
            empty slot's copy tokens are never generated.
        copy_bias: Added to the logits of the filled slots' copy tokens when decoding (chosen on
            ``val`` after training by ``training.tune_concepts``; 0 while training).
    """

    encoder: str = "efficientnet_lite0"
    feature_dim: int = 1280
    vocab_size: int = 0
    embed_dim: int = 512
    hidden_dim: int = 512
    num_layers: int = 1
    dropout: float = 0.5
    image_dropout: float = 0.5
    decoder: str = "show_and_tell"
    attention_dim: int = 512
    tie_embeddings: bool = False
    num_classes: int = 1000
    concept_words: int = 0
    concept_slots: int = 0
    concept_threshold: float = 0.3
    copy_bias: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from a dict, refusing unknown keys with a message that names them.

        Reads checkpoints written before decoders were named: their ``attention`` flag becomes
        ``decoder="soft_attention"`` (true) or ``"show_and_tell"`` (false)."""
        if "attention" in data:
            data = dict(data)
            attention = data.pop("attention")
            data.setdefault("decoder", "soft_attention" if attention else "show_and_tell")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"unknown model config keys {sorted(unknown)}; this checkpoint was written "
                "by a newer or different captioner version"
            )
        return cls(**data)
