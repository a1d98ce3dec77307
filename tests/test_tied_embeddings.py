"""Word-embedding tying (``ModelConfig.tie_embeddings``): one matrix for the embedding and the classifier."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from captioner.config import ModelConfig
from captioner.decoders import build_decoder
from captioner.decoders.soft_attention import FusedAttentionDecoder
from captioner.decoding import greedy_decode


def tied(config: ModelConfig, **changes) -> ModelConfig:
    """``config`` (a conftest model's) with the hidden size of its embeddings, tied."""
    return dataclasses.replace(config, hidden_dim=config.embed_dim, tie_embeddings=True, **changes)


@pytest.mark.parametrize("model_name", ["small_model", "attention_model"])
def test_the_classifier_is_the_embedding_and_trains_as_one(request, small_vocab, model_name):
    config = tied(request.getfixturevalue(model_name).config)
    torch.manual_seed(0)
    model = build_decoder(config)
    untied = build_decoder(dataclasses.replace(config, tie_embeddings=False))
    assert model.head.weight is model.embed.weight
    count = sum(p.numel() for p in model.parameters())
    assert count == sum(p.numel() for p in untied.parameters()) - model.embed.weight.numel()
    features = torch.randn(2, 16, 3, 3) if model.reads_map else torch.randn(2, 16)
    captions = torch.randint(4, len(small_vocab), (2, 5))
    before = model.embed.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model(features, captions).square().mean().backward()
    optimizer.step()
    assert not torch.equal(model.embed.weight, before)
    assert torch.equal(model.head.weight, model.embed.weight)


def test_the_fused_decoder_decodes_a_tied_model_as_the_model_does(attention_model, small_vocab):
    torch.manual_seed(0)
    model = build_decoder(tied(attention_model.config)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.half().float())  # fp16-representable: the fused decoder's storage loses nothing
    maps, ids = torch.randn(3, 16, 3, 3), {"start_id": small_vocab.start_id, "end_id": small_vocab.end_id}
    expected = greedy_decode(model, maps, max_length=8, **ids)
    ours = greedy_decode(FusedAttentionDecoder(model), maps, max_length=8, **ids)
    assert [d.token_ids for d in ours] == [d.token_ids for d in expected]


def test_tying_needs_the_hidden_and_embedding_sizes_equal(attention_model):
    with pytest.raises(ValueError, match="hidden_dim == embed_dim"):
        build_decoder(tied(attention_model.config, embed_dim=attention_model.config.hidden_dim + 1))
