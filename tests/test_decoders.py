"""The decoder registry: names build decoders, old configs keep their decoder, unknown names are refused."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from captioner.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from captioner.config import ModelConfig
from captioner.decoders import Decoder, build_decoder, decoder_class, decoder_names
from captioner.encoders import EncoderSpec


@pytest.mark.parametrize("name", decoder_names())
def test_every_registered_name_builds_a_decoder_that_generates(name, small_vocab):
    config = ModelConfig(
        feature_dim=16,
        vocab_size=len(small_vocab),
        embed_dim=12,
        hidden_dim=20,
        decoder=name,
        concept_words=5,  # read by concept decoders only
        concept_slots=2,
    )
    decoder = build_decoder(config).eval()
    assert isinstance(decoder, Decoder) and decoder.name == name and decoder_class(name) is type(decoder)
    features = torch.randn(2, 16, 3, 3) if decoder.reads_map else torch.randn(2, 16)
    logits, state = decoder.step(torch.tensor([1, 1]), decoder.init_state(features))
    assert logits.shape == (2, len(small_vocab))
    weights = decoder.attention_weights(state)
    assert (weights is not None) == decoder.has_attention
    assert decoder.for_inference("fp32") is decoder


@pytest.mark.parametrize(("attention", "name"), [(True, "soft_attention"), (False, "show_and_tell")])
def test_a_legacy_attention_flag_names_its_decoder(attention, name):
    config = ModelConfig.from_dict({"vocab_size": 9, "attention": attention, "attention_dim": 8})
    assert config.decoder == name and "attention" not in config.to_dict()


def test_a_checkpoint_written_with_the_legacy_flag_loads_as_soft_attention(attention_model, small_vocab, tmp_path):
    spec = EncoderSpec("efficientnet_lite0", "test", 224, (0.5,) * 3, (0.5,) * 3)
    path = save_checkpoint(tmp_path / "new.safetensors", attention_model, small_vocab, spec)
    metadata = safe_open(str(path), framework="pt").metadata()
    config = json.loads(metadata["config"])
    config = {k: v for k, v in config.items() if k not in ("decoder", "num_classes") and not k.startswith("concept")}
    legacy = tmp_path / "legacy.safetensors"  # as checkpoints were written before decoders had names
    save_file(
        load_file(str(path)), str(legacy), metadata={**metadata, "config": json.dumps({**config, "attention": True})}
    )
    assert read_metadata(legacy)["config"]["attention"] is True
    assert load_checkpoint(legacy).model.name == "soft_attention"


def test_an_unknown_decoder_is_refused_with_the_registered_names():
    with pytest.raises(
        ValueError,
        match="unknown decoder 'transformer'; choose one of concept_attention, show_and_tell, soft_attention",
    ):
        build_decoder(ModelConfig(vocab_size=9, decoder="transformer"))
