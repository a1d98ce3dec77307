"""Does a caption name the right things? Object-mention F1 and invented subjects.

* :func:`object_f1`, after DCC (Hendricks et al. 2016): an image shows an object when at least
  two of its references mention it; a caption mentions it by the word or a synonym. Per object,
  F1 of "the caption mentions it" against "the image shows it", over a split.
* :func:`invented_subjects`, after CHAIR (Rohrbach et al. 2018), per caption: the share of
  captions naming a person or an animal (by category) that none of the image's references names.
* :func:`doubled_words`: captions that write one word twice in a row ("a black dog dog").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise

from captioner.vocab import tokenize

__all__ = [
    "HELD_OUT_OBJECTS",
    "MODIFIERS",
    "SUBJECT_CATEGORIES",
    "UNFINISHED_LAST_WORDS",
    "doubled_words",
    "invented_subjects",
    "mentions",
    "object_f1",
    "stops_mid_phrase",
    "unfinished",
]

# A caption that stops on one of these stops mid-phrase ("a boy is playing in a", "... in front"):
# articles, prepositions, conjunctions and verbs that Flickr8k's references (almost) never end on.
UNFINISHED_LAST_WORDS = frozenset(
    "a an the of in on at with and to for from by into onto front its his her their some two three four "
    "several many this that who is are has does as while whilst through across under beside towards toward "
    "against during very".split()
)

# Words that describe a thing without naming it: a caption ending on them right after an article
# ("two women are standing in front of a white", "on a blue and white") has lost its noun. After a
# preposition they may end it ("a man dressed in black").
MODIFIERS = frozenset(
    "red blue green yellow black white brown pink purple grey gray tan blond blonde bright colorful striped "
    "young little small large big tall long old older wooden rocky grassy snowy sandy muddy".split()
)
_ARTICLES = frozenset("a an the its his her their some two three four several many this that".split())

# Eight objects that ImageNet's classes cover and Flickr8k describes, each shown (by at least two
# of five references) in 10 to 58 test images: the held-out objects of training.heldout_objects.
# Chosen from the caption counts of train / val / test before any model was trained on them.
HELD_OUT_OBJECTS: dict[str, tuple[str, ...]] = {
    "bicycle": ("bicycle", "bicycles", "bike", "bikes"),
    "boat": ("boat", "boats", "canoe", "canoes", "kayak", "kayaks", "sailboat", "sailboats", "raft", "rafts"),
    "car": ("car", "cars"),
    "camera": ("camera", "cameras"),
    "bench": ("bench", "benches"),
    "swing": ("swing", "swings"),
    "motorcycle": ("motorcycle", "motorcycles", "motorbike", "motorbikes"),
    "ball": ("ball", "balls"),
}

# Subject categories whose words a caption may invent (CHAIR counts objects by category the same way).
SUBJECT_CATEGORIES: dict[str, tuple[str, ...]] = {
    "person": (
        "man men woman women boy boys girl girls child children kid kids person people baby babies toddler "
        "lady ladies guy guys player players adult adults teenager teenagers teen teens biker bikers rider "
        "riders skier skiers surfer surfers swimmer swimmers climber climbers crowd family couple worker "
        "workers dancer dancers cyclist cyclists skateboarder skateboarders snowboarder snowboarders "
        "gentleman someone"
    ).split(),
    "dog": "dog dogs puppy puppies".split(),
    "cat": "cat cats kitten kittens".split(),
    "horse": "horse horses pony ponies".split(),
    "bird": "bird birds duck ducks goose geese seagull seagulls pigeon pigeons".split(),
    "cow": "cow cows cattle bull bulls calf".split(),
    "sheep": "sheep lamb lambs".split(),
    "animal": "animal animals".split(),
}


def mentions(caption: str | Sequence[str], words: Sequence[str]) -> bool:
    """True when ``caption`` (text or tokens) contains one of ``words``."""
    tokens = tokenize(caption) if isinstance(caption, str) else caption
    return not set(words).isdisjoint(tokens)


def object_f1(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    objects: Mapping[str, Sequence[str]] = HELD_OUT_OBJECTS,
    *,
    min_references: int = 2,
) -> dict[str, dict[str, float]]:
    """Per object: images showing it, precision, recall and F1 (in %) of the captions' mentions,
    plus ``"mean"`` (the mean F1 over the objects)."""
    report: dict[str, dict[str, float]] = {}
    for name, words in objects.items():
        shown = {key for key, refs in references.items() if sum(mentions(r, words) for r in refs) >= min_references}
        said = {key for key in references if mentions(predictions.get(key, ""), words)}
        hits = len(shown & said)
        precision = hits / len(said) if said else 0.0
        recall = hits / len(shown) if shown else 0.0
        f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
        report[name] = {"images": len(shown), "precision": 100 * precision, "recall": 100 * recall, "f1": 100 * f1}
    report["mean"] = {"f1": sum(r["f1"] for r in report.values()) / len(objects)}
    return report


def invented_subjects(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    categories: Mapping[str, Sequence[str]] = SUBJECT_CATEGORIES,
) -> dict[str, float]:
    """The share (%) of captions naming a person or animal category that no reference names,
    and per category the number of captions that invent it."""
    invented = {name: 0 for name in categories}
    captions_inventing = 0
    for key, refs in references.items():
        caption = tokenize(predictions.get(key, ""))
        made_up = [
            name
            for name, words in categories.items()
            if mentions(caption, words) and not any(mentions(r, words) for r in refs)
        ]
        captions_inventing += bool(made_up)
        for name in made_up:
            invented[name] += 1
    return {
        "share": 100 * captions_inventing / max(1, len(references)),
        **{f"invented_{k}": v for k, v in invented.items()},
    }


def stops_mid_phrase(words: Sequence[str]) -> bool:
    """True when a caption (its ``words``) ends on a word of :data:`UNFINISHED_LAST_WORDS`, or on
    :data:`MODIFIERS` (joined by "and") right after an article: a noun phrase without its noun."""
    if not words:
        return False
    if words[-1] in UNFINISHED_LAST_WORDS:
        return True
    start = len(words)
    while start > 0 and (words[start - 1] in MODIFIERS or (words[start - 1] == "and" and start < len(words))):
        start -= 1
    return start < len(words) and (start == 0 or words[start - 1] in _ARTICLES)


def unfinished(predictions: Mapping[str, str]) -> list[str]:
    """The keys of captions that stop mid-phrase (:func:`stops_mid_phrase`)."""
    return [key for key, caption in predictions.items() if stops_mid_phrase(tokenize(caption))]


def doubled_words(predictions: Mapping[str, str]) -> list[str]:
    """The keys of captions that write one word twice in a row ("a black dog dog")."""
    return [key for key, caption in predictions.items() if any(a == b for a, b in pairwise(tokenize(caption)))]
