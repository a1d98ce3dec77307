from __future__ import annotations

import json

import pytest

from captioner.vocab import SPECIAL_TOKENS, Vocabulary, tokenize


def test_tokenize_lowercases_and_drops_punctuation():
    assert tokenize("A Dog's ball, on the grass!") == ["a", "dog's", "ball", "on", "the", "grass"]


def test_build_applies_min_count_and_keeps_specials_first():
    vocab = Vocabulary.build(["a dog", "a dog runs", "a cat"], min_count=2)
    assert vocab.tokens[:4] == list(SPECIAL_TOKENS)
    assert vocab.tokens[4:] == ["a", "dog"]  # "runs" and "cat" seen once


def test_round_trip_and_unknown_words():
    vocab = Vocabulary.build(["a dog runs on the grass"], min_count=1)
    ids = vocab.encode("A dog runs on the snow")
    assert ids[0] == vocab.start_id and ids[-1] == vocab.end_id
    assert ids[-2] == vocab.unk_id
    assert vocab.decode(ids) == ["a", "dog", "runs", "on", "the", "<unk>"]


def test_decode_stops_at_end():
    vocab = Vocabulary.build(["a dog"], min_count=1)
    assert vocab.decode([vocab.start_id, vocab.id_of("a"), vocab.end_id, vocab.id_of("dog")]) == ["a"]


def test_json_round_trip_is_equal():
    vocab = Vocabulary.build(["a dog runs"], min_count=1)
    assert Vocabulary(json.loads(json.dumps(vocab.tokens))) == vocab


def test_rejects_list_without_specials():
    with pytest.raises(ValueError, match="special tokens"):
        Vocabulary(["a", "dog"])
