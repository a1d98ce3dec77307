"""The fused fp16 attention decoder computes what the attention model computes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from captioner.decoders.soft_attention import FusedAttentionDecoder, native
from captioner.decoding import beam_search, greedy_decode


@pytest.fixture()
def half_rounded(attention_model):
    """The attention model with fp16-representable weights, so fp16 storage loses nothing."""
    with torch.no_grad():
        for parameter in attention_model.parameters():
            parameter.copy_(parameter.half().float())
    return attention_model


def test_fp16_attention_decoder_is_the_fused_one(attention_model):
    assert isinstance(attention_model.for_inference("fp16"), FusedAttentionDecoder)


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


@pytest.mark.parametrize("native", [True, False], ids=["native", "torchscript"])
@pytest.mark.parametrize("images", [1, 5])
def test_compiled_greedy_loop_gives_exactly_what_the_python_loop_gives(half_rounded, small_vocab, images, native):
    fused = FusedAttentionDecoder(half_rounded, native=native)
    assert fused.native == native
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
    compiled = FusedAttentionDecoder(half_rounded, native=False)
    assert isinstance(compiled._greedy, torch.jit.ScriptFunction)

    def no_sources(function):
        raise OSError("could not get source code")

    monkeypatch.setattr(torch.jit, "script", no_sources)
    with pytest.warns(UserWarning, match="runs in Python"):
        in_python = FusedAttentionDecoder(half_rounded, native=False)
    assert not isinstance(in_python._greedy, torch.jit.ScriptFunction)
    maps = torch.randn(3, 16, 3, 3)
    ids = {"start_id": small_vocab.start_id, "end_id": small_vocab.end_id, "max_length": 7}
    for decode, options in ((greedy_decode, {}), (beam_search, {"beam_size": 2})):
        assert decode(in_python, maps, **ids, **options) == decode(compiled, maps, **ids, **options)


def test_native_and_torchscript_kernels_compute_the_same_steps(half_rounded, small_vocab):
    native, torchscript = FusedAttentionDecoder(half_rounded), FusedAttentionDecoder(half_rounded, native=False)
    assert native.native, "the C++ kernels should build here (a C++ compiler and ninja are installed)"
    torch.manual_seed(0)
    maps = torch.randn(4, 16, 3, 3)
    tokens = torch.randint(4, len(small_vocab), (4, 6))
    with torch.inference_mode():
        ours, theirs = native.init_state(maps), torchscript.init_state(maps)
        shared = beam_rows(ours), beam_rows(theirs)  # one image's locations for every row, as in beam search
        for t in range(tokens.shape[1]):
            logits, ours = native.step(tokens[:, t], ours)
            expected, theirs = torchscript.step(tokens[:, t], theirs)
            assert torch.allclose(logits, expected, atol=1e-5)
            assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(ours, theirs))
            logits, _ = native.step(tokens[:, t], shared[0])
            expected, _ = torchscript.step(tokens[:, t], shared[1])
            assert torch.allclose(logits, expected, atol=1e-5)
    ids = {"start_id": small_vocab.start_id, "end_id": small_vocab.end_id, "max_length": 9}
    for decode, options in ((greedy_decode, {}), (beam_search, {"beam_size": 3, "no_repeat_ngram": 2})):
        expected = decode(torchscript, maps, **ids, **options)
        assert [d.token_ids for d in decode(native, maps, **ids, **options)] == [d.token_ids for d in expected]


def beam_rows(state: tuple) -> tuple:
    """The state with the first image's locations and keys shared by every row."""
    h, c, locations, keys, weights, from_h = state
    return h, c, locations[:1], keys[:1], weights, from_h


def test_native_step_rejects_a_token_outside_the_vocabulary_and_a_mismatched_state(half_rounded, small_vocab):
    fused = FusedAttentionDecoder(half_rounded)
    state = fused.init_state(torch.randn(1, 16, 3, 3))
    with pytest.raises(RuntimeError, match="token id out of range"):
        fused.step(torch.tensor([len(small_vocab)]), state)
    h, c, *rest = state
    with pytest.raises(RuntimeError, match="one row per caption"):  # checked, not read out of bounds
        fused.step(torch.tensor([4]), (h, c[:, :-1].contiguous(), *rest))


@pytest.mark.slow
def test_decoder_keeps_the_torchscript_kernels_where_the_native_ones_cannot_build(tmp_path):
    """No C++ compiler (a fresh extension folder, so nothing is cached): one line says so, and captions."""
    script = textwrap.dedent(
        """
        import torch
        from captioner.config import ModelConfig
        from captioner.decoders.soft_attention import FusedAttentionDecoder, SoftAttentionDecoder
        from captioner.decoding import greedy_decode

        model = SoftAttentionDecoder(ModelConfig(vocab_size=12, feature_dim=16, embed_dim=8, hidden_dim=8,
                                                 decoder="soft_attention", attention_dim=8))
        fused = FusedAttentionDecoder(model.eval())
        assert not fused.native and isinstance(fused._greedy, torch.jit.ScriptFunction)
        print(greedy_decode(fused, torch.randn(2, 16, 3, 3), start_id=1, end_id=2, max_length=5)[0].token_ids)
        """
    )
    env = {**os.environ, "CXX": str(tmp_path / "no-such-compiler"), "TORCH_EXTENSIONS_DIR": str(tmp_path)}
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("[")
    said = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(said) == 1 and "native decoder kernels are unavailable (no C++ compiler" in said[0], done.stderr


def test_kernel_builds_are_kept_apart_per_installation(monkeypatch, tmp_path):
    """The build folder is keyed by the source and the installation, under TORCH_EXTENSIONS_DIR."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    folder = native.build_directory()
    assert folder.parent == tmp_path and folder.name.startswith("captioner_fused_decoder-")
    assert folder == native.build_directory()  # stable for one installation
    monkeypatch.setattr(native, "_SOURCE", tmp_path / "edited.cpp")
    (tmp_path / "edited.cpp").write_text("// another version of the kernels")
    assert native.build_directory() != folder
