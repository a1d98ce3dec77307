"""The reviewed ImageNet -> caption word table and the slot helpers built on it."""

from __future__ import annotations

import pytest
import torch
from timm.data import ImageNetInfo

from captioner.concepts import ConceptTable, image_concepts, imagenet_class_names, slotted_tokens, word_probabilities


@pytest.fixture(scope="module")
def table() -> ConceptTable:
    return ConceptTable.load()


def word_of(table: ConceptTable, imagenet_class: int) -> str | None:
    index = table.class_words[imagenet_class]
    return table.words[index] if index >= 0 else None


def test_the_table_maps_every_imagenet_class_named_as_timm_names_it(table):
    import csv

    from captioner.concepts import default_table_dir

    with open(default_table_dir() / "imagenet_concepts.csv", newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    info = ImageNetInfo()
    assert [int(r["index"]) for r in rows] == list(range(1000))
    assert [r["class_name"] for r in rows] == [info.index_to_description(i) for i in range(1000)]
    assert len(table.class_words) == 1000 and len(set(table.words)) == len(table.words)
    assert imagenet_class_names() == tuple(info.index_to_description(i).split(",")[0] for i in range(1000))


@pytest.mark.parametrize(
    ("imagenet_class", "word"),
    [(151, "dog"), (268, "dog"), (281, "cat"), (285, "cat"), (967, "coffee"), (657, "rocket"), (779, "bus")],
)
def test_reviewed_classes_map_to_the_word_a_caption_uses(table, imagenet_class, word):
    assert word_of(table, imagenet_class) == word


def test_every_dog_breed_is_a_dog(table):
    assert {word_of(table, c) for c in range(151, 269)} == {"dog"}


def test_word_probabilities_sum_the_classes_of_a_word(table):
    probs = torch.zeros(1, 1000)
    probs[0, 281], probs[0, 282], probs[0, 207] = 0.4, 0.3, 0.2  # tabby, tiger cat, golden retriever
    words = word_probabilities(probs, table.class_index(), len(table.words))
    assert float(words[0, table.words.index("cat")]) == pytest.approx(0.7)
    concepts = image_concepts(probs, table.class_index(), len(table.words), slots=3, threshold=0.25)
    assert [table.words[i] if i >= 0 else None for i in concepts.word_ids[0].tolist()] == ["cat", None, None]


def test_caption_words_naming_a_slot_concept_become_its_tokens(table):
    slots = [table.words.index("dog"), -1, table.words.index("bicycle")]
    tokens = "two dogs and a puppy near a bike and a cat".split()
    assert slotted_tokens(tokens, slots, table) == [
        "two", "<concepts1>", "and", "a", "<concept1>", "near", "a", "<concept3>", "and", "a", "cat",
    ]  # fmt: skip
