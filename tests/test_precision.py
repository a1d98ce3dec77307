"""Decoder weight precision: fp16 keeps the shipped model's captions, int8 runs, bad names fail."""

from __future__ import annotations

import pytest
import torch

from captioner import Captioner


@pytest.fixture(scope="module")
def fixture_features(shipped: Captioner, mini_corpus) -> torch.Tensor:
    photos = sorted((mini_corpus / "images").glob("*.jpg"))
    return shipped.encode(photos)


def _variant(shipped: Captioner, precision: str) -> Captioner:
    return Captioner(shipped.checkpoint, shipped.encoder, decoder_precision=precision)


def test_the_default_on_cpu_is_fp16(shipped):
    assert shipped.decoder_precision == "fp16"


@pytest.mark.slow
def test_fp16_gives_the_fp32_captions_and_nearly_the_same_probabilities(shipped, fixture_features):
    full = _variant(shipped, "fp32").caption_features(fixture_features, top_k=3)
    half = _variant(shipped, "fp16").caption_features(fixture_features, top_k=3)
    assert [r.caption for r in half] == [r.caption for r in full]
    for a, b in zip(full, half):
        assert [s.prob for s in b.steps] == pytest.approx([s.prob for s in a.steps], abs=5e-3)


@pytest.mark.slow
def test_int8_stores_quantised_weights_and_still_captions(shipped, fixture_features, small_model):
    quantised = small_model.for_inference("int8")
    assert any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in quantised.modules())
    assert small_model.head.weight.dtype == torch.float32  # the original is left alone
    results = _variant(shipped, "int8").caption_features(fixture_features)
    assert all(r.steps and all(0 <= s.prob <= 1 for s in r.steps) for r in results)


def test_unknown_precision_is_refused(small_model):
    with pytest.raises(ValueError, match="fp32, fp16, int8"):
        small_model.for_inference("fp8")
