"""Growing the shipped checkpoint's vocabulary: ids kept, rows carried by token, new words started in context."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from captioner.captioner import default_checkpoint_path
from captioner.checkpoint import load_checkpoint
from captioner.decoders import build_decoder
from captioner.vocab import Vocabulary
from training.concept_data import base_vocabulary, concept_vocabulary
from training.vocab_growth import grow_vocabulary, rows_from_context, start_from

CAPTIONS = ["a zorblax runs", "a black zorblax runs on the grass", "the zorblax and a quux"]


@pytest.fixture(scope="module")
def shipped_checkpoint():
    return load_checkpoint(default_checkpoint_path())


@pytest.fixture(scope="module")
def grown(shipped_checkpoint):
    """The shipped decoder grown by the new words of ``CAPTIONS`` (seen twice or more): (model, vocab)."""
    old = shipped_checkpoint
    base = grow_vocabulary(base_vocabulary(old.vocab), CAPTIONS, min_count=2)
    vocab = concept_vocabulary(base, old.config.concept_slots)
    model = build_decoder(dataclasses.replace(old.config, vocab_size=len(vocab))).eval()
    assert start_from(model, old.model, old.vocab, vocab, old.concepts) == []  # nothing left as initialised
    return model, vocab


def test_growth_appends_the_new_words_and_keeps_every_id():
    old = Vocabulary.build(["a dog runs", "a dog sits"], min_count=1)
    new = grow_vocabulary(old, ["a zorblax runs", "the zorblax and a quux", "a dog"], min_count=2)
    assert new.tokens == [*old.tokens, "zorblax"]  # "quux" and "the" are seen once, "a" is known


def test_a_grown_decoder_keeps_every_old_row_and_ends_with_the_copy_tokens(shipped_checkpoint, grown):
    model, vocab = grown
    old, old_vocab = shipped_checkpoint.model, shipped_checkpoint.vocab
    assert vocab.tokens[: len(old_vocab) - 6] == old_vocab.tokens[:-6]  # every word keeps its id
    assert vocab.tokens[-7:] == ["zorblax", *old_vocab.tokens[-6:]]
    assert model.base_vocab_size == vocab.id_of("zorblax") + 1
    for token in ("dog", "a", "<end>", "<concept1>", "<concepts3>"):  # copy tokens moved up one id
        new_id, old_id = vocab.id_of(token), old_vocab.id_of(token)
        assert torch.equal(model.embed.weight[new_id], old.embed.weight[old_id])
        assert torch.equal(model.head.weight[new_id], old.head.weight[old_id])
        assert torch.equal(model.head.bias[new_id], old.head.bias[old_id])
    assert torch.equal(model.word_vectors, old.word_vectors) and torch.equal(model.class_words, old.class_words)


def test_a_grown_decoder_gives_every_old_token_its_old_logit(shipped_checkpoint, grown):
    model, vocab = grown
    old, old_vocab = shipped_checkpoint.model, shipped_checkpoint.vocab
    torch.manual_seed(0)
    features = torch.randn(2, 1280, 7, 7).abs()
    words = "a black dog runs on the grass".split()
    with torch.no_grad():
        before = old(features, torch.tensor([[old_vocab.id_of(w) for w in ["<start>", *words]]] * 2))
        after = model(features, torch.tensor([[vocab.id_of(w) for w in ["<start>", *words]]] * 2))
    kept = torch.tensor([vocab.id_of(token) for token in old_vocab.tokens])
    torch.testing.assert_close(after[..., kept], before, rtol=1e-5, atol=1e-5)


def test_a_new_word_starts_as_the_word_the_decoder_expected_in_its_place(shipped, dog_photo, grown):
    grown_model, vocab = grown
    model = build_decoder(grown_model.config).eval()
    model.load_state_dict(grown_model.state_dict())  # a copy: the module's fixture stays as grown
    zorblax = vocab.id_of("zorblax")
    features = shipped.encode([dog_photo])
    caption = torch.tensor([vocab.start_id, vocab.id_of("a"), zorblax, vocab.end_id])
    with torch.no_grad():
        after_a = model(features, caption[None])[0, 1]
    expected = int(after_a.index_fill(0, torch.tensor([zorblax]), float("-inf")).argmax())  # its best other word
    heaviest = rows_from_context(model, features, [(0, caption)], [zorblax])
    assert heaviest[zorblax][0] == (expected, 1.0)
    assert torch.equal(model.head.weight[zorblax], model.head.weight[expected])
    assert torch.equal(model.embed.weight[zorblax], model.embed.weight[expected])
    with torch.no_grad():
        logits = model(features, caption[None])[0, 1]
    assert float(logits[zorblax]) == pytest.approx(float(logits[expected]), abs=1e-4)  # level with it
