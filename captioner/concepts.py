"""ImageNet concepts: the encoder's 1,000 class probabilities summed into caption words.

A reviewed table (``captioner/data/imagenet_concepts.csv``) maps each ImageNet class to the
word a caption would use for it (every dog breed to "dog", "espresso" to "coffee") or to
nothing. An image's concepts are the words whose classes hold the most probability; the
concept decoder (:mod:`captioner.decoders.concept_attention`) reads the best ``k`` of them and
may copy each into its caption through a slot token, so it can name things its caption
corpus never showed. The table travels inside every checkpoint that uses it.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from captioner.vocab import Vocabulary

__all__ = [
    "Concept",
    "ConceptReader",
    "ConceptTable",
    "ImageConceptWords",
    "imagenet_class_names",
    "caption_words",
    "ImageConcepts",
    "default_table_dir",
    "image_concepts",
    "fill_slot",
    "slot_tokens",
    "slotted_tokens",
    "top_classes",
    "word_probabilities",
]

NUM_CLASSES = 1000


def default_table_dir() -> Path:
    """The folder holding the reviewed table (``imagenet_concepts.csv``, ``concept_words.csv``)."""
    return Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class ConceptTable:
    """Concept words and which ImageNet classes make each of them.

    Attributes:
        words: The concept words, sorted.
        plurals: Each word's plural, for captions of several such things.
        class_words: For each of the 1,000 classes, the index of its word, or -1 for none.
        caption_forms: Per word, other words captions use for the same thing (e.g. "bike"
            for "bicycle"); used only to find the concept in training captions.
    """

    words: tuple[str, ...]
    plurals: tuple[str, ...]
    class_words: tuple[int, ...]
    caption_forms: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        if len(self.class_words) != NUM_CLASSES:
            raise ValueError(f"a concept table maps {NUM_CLASSES} ImageNet classes, not {len(self.class_words)}")
        if len(self.plurals) != len(self.words):
            raise ValueError("a concept table needs one plural per word")
        if any(not -1 <= w < len(self.words) for w in self.class_words):
            raise ValueError("a concept table's class_words must index its words (or be -1)")

    @classmethod
    def load(cls, folder: str | Path | None = None) -> ConceptTable:
        """Read the two CSV files of ``folder`` (None: the reviewed table shipped with the library)."""
        folder = Path(folder) if folder is not None else default_table_dir()
        with open(folder / "concept_words.csv", newline="", encoding="utf-8") as file:
            rows = sorted(csv.DictReader(file), key=lambda row: row["word"])
        words = tuple(row["word"] for row in rows)
        index = {word: i for i, word in enumerate(words)}
        classes = _class_rows(folder)
        missing = sorted({row["word"] for row in classes if row["word"] and row["word"] not in index})
        if missing:
            raise ValueError(f"{folder}: words {missing[:5]} of imagenet_concepts.csv are not in concept_words.csv")
        return cls(
            words=words,
            plurals=tuple(row["plural"] for row in rows),
            class_words=tuple(index[row["word"]] if row["word"] else -1 for row in classes),
            caption_forms=tuple(tuple(row["caption_forms"].split()) for row in rows),
        )

    def to_dict(self) -> dict[str, Any]:
        """What a checkpoint stores."""
        return {
            "words": list(self.words),
            "plurals": list(self.plurals),
            "class_words": list(self.class_words),
            "caption_forms": [list(forms) for forms in self.caption_forms],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConceptTable:
        """The table :meth:`to_dict` wrote (checkpoints from before caption forms were stored have none)."""
        forms = tuple(tuple(str(form) for form in row) for row in data.get("caption_forms", ()))
        if forms and len(forms) != len(data["words"]):
            raise ValueError("a concept table needs caption forms for every word, or none")
        return cls(tuple(data["words"]), tuple(data["plurals"]), tuple(int(i) for i in data["class_words"]), forms)

    def forms(self, word_id: int) -> tuple[set[str], set[str]]:
        """The caption words that name concept ``word_id``: (singular forms, plural forms)."""
        word, plural = self.words[word_id], self.plurals[word_id]
        extra = set(self.caption_forms[word_id]) if self.caption_forms else set()
        plural_extra = {form for form in extra if _singular(form) in extra | {word}}
        return {word} | extra - plural_extra - {plural}, {plural} | plural_extra

    @functools.cached_property
    def members(self) -> dict[int, tuple[int, ...]]:
        """Each word's ImageNet classes."""
        members: dict[int, list[int]] = {}
        for imagenet_class, word_id in enumerate(self.class_words):
            if word_id >= 0:
                members.setdefault(word_id, []).append(imagenet_class)
        return {word_id: tuple(classes) for word_id, classes in members.items()}

    def class_index(self) -> torch.Tensor:
        """(1000,) long: each class's word index, -1 for none."""
        return torch.tensor(self.class_words, dtype=torch.long)


def _singular(word: str) -> str | None:
    """A regular English plural's singular ("puppies" -> "puppy", "buses" -> "bus"), else None."""
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith("es") and word[:-2].endswith(("s", "x", "ch", "sh")):
        return word[:-2]
    return word[:-1] if word.endswith("s") else None


def word_probabilities(class_probs: torch.Tensor, class_words: torch.Tensor, num_words: int) -> torch.Tensor:
    """(B, 1000) class probabilities -> (B, W): each word's summed probability."""
    columns = torch.where(class_words >= 0, class_words, num_words)  # unmapped classes: one spare column
    totals = torch.zeros(class_probs.shape[0], num_words + 1, device=class_probs.device)
    return totals.index_add_(1, columns, class_probs.float())[:, :num_words]


@dataclass(frozen=True)
class ImageConcepts:
    """An image's best concept words, most probable first; ``word_ids`` -1 marks an empty slot
    (fewer concepts than slots at or above the threshold)."""

    word_ids: torch.Tensor  # (B, K) long
    scores: torch.Tensor  # (B, K) summed class probability of each word
    best_words: torch.Tensor | None = None  # (B, K) the words of ``scores``, none left out

    @property
    def available(self) -> torch.Tensor:
        """(B, K) bool: slots holding a concept."""
        return self.word_ids >= 0

    def select(self, rows: torch.Tensor) -> ImageConcepts:
        best = self.best_words.index_select(0, rows) if self.best_words is not None else None
        return ImageConcepts(self.word_ids.index_select(0, rows), self.scores.index_select(0, rows), best)


def image_concepts(
    class_probs: torch.Tensor, class_words: torch.Tensor, num_words: int, *, slots: int, threshold: float
) -> ImageConcepts:
    """The ``slots`` most probable concept words of each image; those under ``threshold`` are left out."""
    scores, best = word_probabilities(class_probs, class_words, num_words).topk(slots, dim=1)
    word_ids = torch.where(scores >= threshold, best, torch.full_like(best, -1))
    return ImageConcepts(word_ids, scores, best)


def slot_tokens(slots: int) -> list[str]:
    """The ``2 * slots`` copy tokens that end a concept decoder's vocabulary: "the word in slot k"
    for k = 1..slots, then its plural."""
    return [f"<concept{k}>" for k in range(1, slots + 1)] + [f"<concepts{k}>" for k in range(1, slots + 1)]


def fill_slot(
    token_id: int, word_ids: Sequence[int], table: ConceptTable, base_vocab_size: int
) -> tuple[str, int] | None:
    """The word a slot token stands for in an image whose slots hold ``word_ids`` (-1: empty),
    with that slot's index; None for a token that is not a filled slot."""
    slot = token_id - base_vocab_size
    slots = len(word_ids)
    if not 0 <= slot < 2 * slots or word_ids[slot % slots] < 0:
        return None
    word_id = word_ids[slot % slots]
    return (table.plurals[word_id] if slot >= slots else table.words[word_id]), slot % slots


def caption_words(
    token_ids: Sequence[int], tokens: Sequence[str], end_id: int, word_ids: Sequence[int], table: ConceptTable
) -> list[str]:
    """A decoded caption's words up to ``<end>``, slot tokens replaced by the image's concept words
    (``tokens``: the vocabulary, whose last ``2 * len(word_ids)`` tokens are the slots)."""
    base = len(tokens) - 2 * len(word_ids)
    words = []
    for token_id in token_ids:
        if token_id == end_id:
            break
        filled = fill_slot(token_id, word_ids, table, base)
        words.append(filled[0] if filled is not None else tokens[token_id])
    return words


def slotted_tokens(tokens: Sequence[str], word_ids: Sequence[int], table: ConceptTable) -> list[str]:
    """Training captions for a concept decoder: each word that names one of the image's slot
    concepts (the word, its plural or a caption form) becomes that slot's token."""
    names = slot_tokens(len(word_ids))
    lookup: dict[str, str] = {}
    for k, word_id in reversed(list(enumerate(word_ids))):  # the most probable slot wins a shared form
        if word_id < 0:
            continue
        singular, plural = table.forms(word_id)
        lookup.update({form: names[k] for form in singular})
        lookup.update({form: names[len(word_ids) + k] for form in plural})
    return [lookup.get(token, token) for token in tokens]


def top_classes(class_probs: Sequence[float], table: ConceptTable, word_id: int, *, limit: int = 3) -> list[int]:
    """The classes of concept ``word_id``, most probable first (at most ``limit``)."""
    return sorted(table.members.get(word_id, ()), key=lambda c: -class_probs[c])[:limit]


@functools.cache
def imagenet_class_names(folder: str | Path | None = None) -> tuple[str, ...]:
    """The 1,000 ImageNet classes' short names (the table's class names up to the first comma;
    timm's descriptions)."""
    return tuple(row["class_name"].split(",")[0] for row in _class_rows(Path(folder or default_table_dir())))


def _class_rows(folder: Path) -> list[dict[str, str]]:
    """The rows of ``folder``'s ``imagenet_concepts.csv``, in class order."""
    with open(folder / "imagenet_concepts.csv", newline="", encoding="utf-8") as file:
        return sorted(csv.DictReader(file), key=lambda row: int(row["index"]))


@dataclass(frozen=True)
class Concept:
    """A concept word the encoder's ImageNet head found in an image, with the classes behind it.

    ``in_slot``: probable enough to be offered to the decoder (a concept below the threshold is
    shown, never used)."""

    word: str
    prob: float
    classes: list[tuple[str, float]]
    in_slot: bool

    def describe(self) -> str:
        """E.g. "tabby 0.37, tiger cat 0.37 -> cat 0.74"."""
        return ", ".join(f"{name} {prob:.2f}" for name, prob in self.classes) + f" → {self.word} {self.prob:.2f}"


@dataclass(frozen=True)
class ImageConceptWords:
    """One image's slots (word ids, -1 empty) and the concepts to show for it."""

    slots: list[int]
    shown: list[Concept]
    table: ConceptTable = field(repr=False)
    base_vocab_size: int
    slot_scores: list[float] = field(default_factory=list)  # each slot's probability (0 where empty)

    def copy_of(self, token_id: int) -> tuple[str, str] | None:
        """(the word written, its concept word) for a copy token ("cats", "cat"); None for other
        tokens and for empty slots."""
        filled = fill_slot(token_id, self.slots, self.table, self.base_vocab_size)
        return (filled[0], self.table.words[self.slots[filled[1]]]) if filled is not None else None

    def naming_tokens(self, min_prob: float, vocabulary: Vocabulary) -> dict[str, frozenset[int]]:
        """Each slot concept of probability ``min_prob`` or more, with the tokens that name it: its
        two copy tokens, and the word, its plural and its caption forms ("bike" for "bicycle")
        where ``vocabulary`` (the decoder's tokens) holds them. What a caption must contain to
        name the image's confident concepts."""
        slots = len(self.slots)
        named = {}
        for slot, (word_id, prob) in enumerate(zip(self.slots, self.slot_scores)):
            if word_id < 0 or prob < min_prob:
                continue
            forms = set.union(*self.table.forms(word_id))  # the word, its plural, its caption forms
            tokens = {self.base_vocab_size + slot, self.base_vocab_size + slots + slot}
            in_vocabulary = {vocabulary.id_of(w) for w in forms} - {vocabulary.unk_id}
            named[self.table.words[word_id]] = frozenset(tokens | in_vocabulary)
        return named


class ConceptReader:
    """Reads images' concepts as a concept decoder reads them, with the ImageNet classes behind
    each word, for showing them next to the caption."""

    def __init__(self, model, table: ConceptTable, *, classes_per_word: int = 3) -> None:  # noqa: ANN001
        self.model, self.table, self.classes_per_word = model, table, classes_per_word

    def read(self, features: torch.Tensor) -> tuple[ImageConcepts, list[ImageConceptWords]]:
        """The decoder's concepts of ``features`` (the maps it reads: what its slots hold) and, per
        image, its slots and shown concepts."""
        probs = self.model.class_probabilities(features)  # (B, 1000)
        concepts = self.model.concepts_from_probabilities(probs)
        names = imagenet_class_names()
        read = []
        for row, (image_slots, image_scores, image_best) in enumerate(
            zip(concepts.word_ids.tolist(), concepts.scores.tolist(), self._best_words(concepts))
        ):
            shown = []
            for word_id, score in zip(image_best, image_scores):
                if score < 0.01:
                    continue
                members = torch.tensor(self.table.members[word_id])
                top = probs[row, members].topk(min(self.classes_per_word, len(members)))
                classes = [(names[int(members[i])], float(p)) for p, i in zip(top.values, top.indices)]
                shown.append(Concept(self.table.words[word_id], score, classes, word_id in image_slots))
            slot_scores = [score if word_id >= 0 else 0.0 for word_id, score in zip(image_slots, image_scores)]
            read.append(ImageConceptWords(image_slots, shown, self.table, self.model.base_vocab_size, slot_scores))
        return concepts, read

    @staticmethod
    def _best_words(concepts: ImageConcepts) -> list[list[int]]:
        """The best words' ids, empty slots included (``image_concepts`` blanks them as -1)."""
        return concepts.best_words.tolist()
