"""Soft attention decoder (Show, Attend and Tell) and its per-word heatmaps."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from captioner.captioner import Captioner
from captioner.checkpoint import load_checkpoint, save_checkpoint
from captioner.config import ModelConfig
from captioner.decoders import build_decoder
from captioner.decoding import beam_search, greedy_decode, sample_decode
from captioner.encoders import build_encoder
from captioner.presentation import attention_overlays


def test_teacher_forcing_matches_stepping_and_weights_are_distributions(attention_model, small_vocab):
    maps = torch.randn(2, 16, 3, 3)
    captions = torch.randint(4, len(small_vocab), (2, 6))
    logits, weights = attention_model(maps, captions, return_attention=True)
    assert logits.shape == (2, 5, len(small_vocab)) and weights.shape == (2, 5, 9)
    assert torch.allclose(weights.sum(dim=-1), torch.ones(2, 5), atol=1e-5)
    state = attention_model.init_state(maps)
    for t in range(5):
        step_logits, state = attention_model.step(captions[:, t], state)
        assert torch.allclose(step_logits, logits[:, t], atol=1e-5)


def test_decoders_record_attention_per_word(attention_model, small_vocab):
    ids = {"start_id": small_vocab.start_id, "end_id": small_vocab.end_id}
    maps = torch.randn(3, 16, 3, 3)
    greedy = greedy_decode(attention_model, maps, max_length=6, top_k=2, **ids)
    beam = beam_search(attention_model, maps, beam_size=1, max_length=6, top_k=2, **ids)
    for g, b in zip(greedy, beam):
        assert g.token_ids == b.token_ids
        for gs, bs in zip(g.steps, b.steps):
            assert len(gs.attention) == 9 and sum(gs.attention) == pytest.approx(1, abs=1e-5)
            assert gs.attention == pytest.approx(bs.attention, abs=1e-6)


def test_sampling_records_attention_too(attention_model, small_vocab):
    generator = torch.Generator().manual_seed(0)
    decoded = sample_decode(
        attention_model,
        torch.randn(2, 16, 3, 3),
        start_id=small_vocab.start_id,
        end_id=small_vocab.end_id,
        max_length=6,
        top_k=2,
        top_p=0.9,
        generator=generator,
    )
    for sequence in decoded:
        assert all(len(step.attention) == 9 for step in sequence.steps)


def test_attention_checkpoint_gives_heatmaps_through_the_captioner(tmp_path, small_vocab, dog_photo):
    encoder = build_encoder("efficientnet_lite0")
    torch.manual_seed(0)
    config = ModelConfig(
        feature_dim=1280,
        vocab_size=len(small_vocab),
        embed_dim=16,
        hidden_dim=24,
        decoder="soft_attention",
        attention_dim=8,
    )
    path = save_checkpoint(tmp_path / "att.safetensors", build_decoder(config), small_vocab, encoder.spec)
    captioner = Captioner(load_checkpoint(path), encoder)
    assert captioner.has_attention
    result = captioner.caption(dog_photo, max_length=5)
    assert result.attention_grid == (7, 7)
    assert all(len(step.attention) == 49 for step in result.steps)
    overlays = attention_overlays(Image.open(dog_photo), result)
    assert [label.split()[0] for _, label in overlays] == [step.word for step in result.steps]
    assert all(picture.size[0] == 256 for picture, _ in overlays)
