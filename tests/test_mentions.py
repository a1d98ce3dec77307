"""Object-mention F1, invented subjects, unfinished captions and doubled words on hand-made captions."""

from __future__ import annotations

import pytest

from captioner.vocab import tokenize
from training.mentions import doubled_words, invented_subjects, object_f1, stops_mid_phrase, unfinished

REFERENCES = {
    "bike": ["a man rides a bike", "a cyclist on a bicycle", "a man on a bike", "a person outdoors", "a man"],
    "dog": ["a dog runs", "a brown dog", "a dog on grass", "a puppy", "an animal"],
    "one_mention": ["a boy with a bike", "a boy", "a child", "a kid", "a boy outside"],
}


def test_object_f1_counts_images_shown_by_two_references_and_captions_by_synonyms():
    objects = {"bicycle": ("bicycle", "bike", "bikes")}
    perfect = object_f1({"bike": "a man riding a bicycle", "dog": "a dog", "one_mention": "a boy"}, REFERENCES, objects)
    assert perfect["bicycle"] == pytest.approx({"images": 1, "precision": 100, "recall": 100, "f1": 100})
    spurious = object_f1({"bike": "a bike", "dog": "a dog on a bike", "one_mention": "a boy"}, REFERENCES, objects)
    assert spurious["bicycle"]["precision"] == pytest.approx(50) and spurious["mean"]["f1"] == pytest.approx(200 / 3)


def test_invented_subjects_are_categories_no_reference_names():
    report = invented_subjects(
        {"bike": "a man rides a bike", "dog": "a man and a dog", "one_mention": "a cat"}, REFERENCES
    )
    assert report["invented_person"] == 1 and report["invented_cat"] == 1
    assert report["share"] == pytest.approx(200 / 3)


def test_captions_that_stop_mid_phrase_are_unfinished():
    captions = {"a": "a boy is playing in a", "b": "two men are standing in front", "c": "a dog runs on the grass"}
    assert unfinished(captions) == ["a", "b"]


def test_a_noun_phrase_without_its_noun_is_unfinished_and_a_described_one_is_not():
    lost_noun = ["two men are playing in a black", "two women are standing in front of a white", "a blue and white"]
    described = ["a man dressed in black", "a dog is wearing red", "the dog is brown and white", "a man in a red shirt"]
    assert [stops_mid_phrase(tokenize(c)) for c in lost_noun] == [True, True, True]
    assert [stops_mid_phrase(tokenize(c)) for c in described] == [False, False, False, False]
    assert stops_mid_phrase(tokenize("a dog is")) and stops_mid_phrase(tokenize("a boy runs through"))


def test_a_word_written_twice_in_a_row_is_counted_once_per_caption():
    captions = {"a": "a black dog dog is running", "b": "a dog is playing with a dog", "c": "Two dogs dogs dogs ."}
    assert doubled_words(captions) == ["a", "c"]
