"""Shared fixtures: the committed Flickr8k mini corpus, the shipped captioner, small models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from captioner import Captioner
from captioner.config import ModelConfig
from captioner.decoders import ShowAndTellDecoder, SoftAttentionDecoder
from captioner.vocab import Vocabulary

FIXTURES = Path(__file__).parent / "fixtures"
MINI_CORPUS = FIXTURES / "flickr8k_mini"
# A test-split photo whose five reference captions all mention a dog.
DOG_PHOTO = MINI_CORPUS / "images" / "2496370758_a3fbc49837.jpg"


@pytest.fixture(scope="session")
def mini_corpus() -> Path:
    return MINI_CORPUS


@pytest.fixture(scope="session")
def dog_photo() -> Path:
    return DOG_PHOTO


@pytest.fixture(scope="session")
def shipped() -> Captioner:
    """The real shipped checkpoint with its real encoder (loaded once per session)."""
    return Captioner.load()


@pytest.fixture()
def small_vocab() -> Vocabulary:
    return Vocabulary.build(["a dog runs on the grass", "a cat sits on a mat", "two dogs play"], min_count=1)


@pytest.fixture()
def small_model(small_vocab: Vocabulary) -> ShowAndTellDecoder:
    torch.manual_seed(0)
    config = ModelConfig(feature_dim=16, vocab_size=len(small_vocab), embed_dim=12, hidden_dim=20, dropout=0.0)
    return ShowAndTellDecoder(config).eval()


@pytest.fixture()
def attention_model(small_vocab: Vocabulary) -> SoftAttentionDecoder:
    """A small soft-attention decoder (random weights) over 16-channel maps."""
    torch.manual_seed(0)
    config = ModelConfig(
        feature_dim=16,
        vocab_size=len(small_vocab),
        embed_dim=12,
        hidden_dim=20,
        dropout=0.0,
        image_dropout=0.0,
        decoder="soft_attention",
        attention_dim=10,
    )
    return SoftAttentionDecoder(config).eval()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Expose each phase's report on the test item (the browser test screenshots on failure)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
