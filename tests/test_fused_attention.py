"""The fused fp16 attention decoder computes what the attention model computes."""

from __future__ import annotations

import pytest
import torch

from captioner.decoding import beam_search, greedy_decode
from captioner.fused_attention import FusedAttentionDecoder
from captioner.precision import with_precision


@pytest.fixture()
def half_rounded(attention_model):
    """The attention model with fp16-representable weights, so fp16 storage loses nothing."""
    with torch.no_grad():
        for parameter in attention_model.parameters():
            parameter.copy_(parameter.half().float())
    return attention_model


def test_fp16_attention_decoder_is_the_fused_one(attention_model):
    assert isinstance(with_precision(attention_model, "fp16"), FusedAttentionDecoder)


def test_fused_steps_match_the_model_on_a_batch_of_images(half_rounded, small_vocab):
    fused = FusedAttentionDecoder(half_rounded)
    maps = torch.randn(3, 16, 3, 3)
    tokens = torch.randint(4, len(small_vocab), (3, 5))
    with torch.inference_mode():
        expected, state = None, half_rounded.init_state(maps)
        ours = fused.init_state(maps)
        doubled = (1, 1, 1, 2, 1)  # the fused decoder keeps its attention keys doubled
        for name, a, b, factor in zip(("h", "c", "locations", "keys", "weights"), state, ours, doubled):
            assert torch.allclose(factor * a, b, atol=1e-5), name
        for t in range(tokens.shape[1]):
            expected, state = half_rounded.step(tokens[:, t], state)
            logits, ours = fused.step(tokens[:, t], ours)
            assert torch.allclose(logits, expected, atol=1e-5)
            assert torch.allclose(fused.attention_weights(ours), half_rounded.attention_weights(state), atol=1e-6)


def test_fused_decoder_gives_the_same_greedy_and_beam_captions(half_rounded, small_vocab):
    fused = FusedAttentionDecoder(half_rounded)
    maps = torch.randn(4, 16, 3, 3)
    ids = {"start_id": small_vocab.start_id, "end_id": small_vocab.end_id, "max_length": 8}
    for decode, options in ((greedy_decode, {}), (beam_search, {"beam_size": 3, "no_repeat_ngram": 2})):
        expected = decode(half_rounded, maps, **ids, **options)
        ours = decode(fused, maps, **ids, **options)  # beam search shares one image's locations across rows
        assert [d.token_ids for d in ours] == [d.token_ids for d in expected]
        assert [d.log_prob for d in ours] == pytest.approx([d.log_prob for d in expected], abs=1e-4)


def test_fused_decoder_leaves_the_model_alone_and_has_no_gradients(attention_model):
    before = {k: v.clone() for k, v in attention_model.state_dict().items()}
    fused = FusedAttentionDecoder(attention_model)
    assert all(torch.equal(before[k], v) for k, v in attention_model.state_dict().items())
    assert not any(p.requires_grad for p in fused.parameters()) and not fused.training


class _StepsOnly:
    """The fused decoder seen through ``StepModel`` alone, so greedy decoding runs its Python loop."""

    def __init__(self, fused: FusedAttentionDecoder) -> None:
        self.init_state, self.step, self.select_state = fused.init_state, fused.step, fused.select_state
        self.attention_weights = fused.attention_weights


@pytest.mark.parametrize("images", [1, 5])
def test_compiled_greedy_loop_gives_exactly_what_the_python_loop_gives(half_rounded, small_vocab, images):
    fused = FusedAttentionDecoder(half_rounded)
    torch.manual_seed(images)
    maps = torch.randn(images, 16, 3, 3)
    ids = {"start_id": small_vocab.start_id, "end_id": small_vocab.end_id, "max_length": 9, "top_k": 3}
    for options in ({}, {"temperature": 1.7, "suppress_ids": small_vocab.never_generated_ids}):
        compiled = greedy_decode(fused, maps, **ids, **options)
        python_loop = greedy_decode(_StepsOnly(fused), maps, **ids, **options)
        assert compiled == python_loop  # tokens, probabilities, top-k and attention, bit for bit
    lengths = {len(d.steps) for d in compiled}
    records = fused.greedy_records(maps, mask=None, scale=1.0, **ids)  # what greedy_decode ran above
    assert len(records) == max(lengths) and records[0][2].shape == (images, 3)
    assert images == 1 or len(lengths) > 1, "the batch should exercise dropping finished captions"


def test_decoder_runs_in_python_where_torchscript_cannot_compile(half_rounded, small_vocab, monkeypatch):
    compiled = FusedAttentionDecoder(half_rounded)
    assert isinstance(compiled._greedy, torch.jit.ScriptFunction)

    def no_sources(function):
        raise OSError("could not get source code")

    monkeypatch.setattr(torch.jit, "script", no_sources)
    with pytest.warns(UserWarning, match="runs in Python"):
        in_python = FusedAttentionDecoder(half_rounded)
    assert not isinstance(in_python._greedy, torch.jit.ScriptFunction)
    maps = torch.randn(3, 16, 3, 3)
    ids = {"start_id": small_vocab.start_id, "end_id": small_vocab.end_id, "max_length": 7}
    for decode, options in ((greedy_decode, {}), (beam_search, {"beam_size": 2})):
        assert decode(in_python, maps, **ids, **options) == decode(compiled, maps, **ids, **options)
