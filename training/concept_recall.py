"""How often the encoder's ImageNet head finds the held-out objects: the ceiling of a concept decoder.

    python -m training.concept_recall --checkpoint checkpoints/captioner.safetensors --data ../shared/flickr8k

A caption can name a held-out object (:data:`training.mentions.HELD_OUT_OBJECTS`) only by copying
it from a concept slot, so the slots bound the held-out F1 of :mod:`training.heldout_objects`.
For each way of reading concepts from the cached maps (:data:`POOLINGS`) and each threshold,
this reports on ``val``, per object, the recall of the slots (the share of images showing the
object, by at least two of five references, whose slots hold its word) and the F1 a decoder
would reach by copying exactly its slots' words, then, over all slot words, the share that a
reference names and the share of images with a filled slot. Nothing is trained.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from captioner.checkpoint import load_checkpoint
from captioner.concepts import ConceptTable, word_probabilities
from captioner.vocab import tokenize
from training.datasets import load_corpus
from training.encoder_tuning import cache_for
from training.mentions import HELD_OUT_OBJECTS, mentions

__all__ = ["POOLINGS", "main", "slot_recall"]

Head = tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]  # weight, bias, class words, number of words


def _word_probabilities(vectors: torch.Tensor, head: Head) -> torch.Tensor:
    """(N, C) pooled vectors -> (N, W) summed word probabilities of the ImageNet head."""
    weight, bias, class_words, words = head
    return word_probabilities(torch.softmax(torch.addmm(bias, vectors, weight.T), dim=-1), class_words, words)


def _best_region(maps: torch.Tensor, head: Head, grid: int) -> torch.Tensor:
    """(N, W): each word's highest probability over a ``grid`` x ``grid`` split of the map."""
    regions = F.adaptive_avg_pool2d(maps, grid).flatten(2).transpose(1, 2)  # (N, R, C)
    return torch.stack([_word_probabilities(regions[:, r], head) for r in range(regions.shape[1])], 1).amax(1)


def _image(maps: torch.Tensor, head: Head) -> torch.Tensor:
    return _word_probabilities(maps.mean(dim=(2, 3)), head)


# How concepts are read from maps (N, C, H, W): the concept decoder's own reading ("image",
# the head on the mean-pooled map) and readings that also look at parts of the image.
POOLINGS: dict[str, Callable[[torch.Tensor, Head], torch.Tensor]] = {
    "image": _image,
    "best of 3x3 regions": lambda maps, head: _best_region(maps, head, 3),
    "best location": lambda maps, head: _best_region(maps, head, maps.shape[-1]),
    "image x 3x3 regions": lambda maps, head: (_image(maps, head) * _best_region(maps, head, 3)).sqrt(),
    "image x best location": lambda maps, head: (_image(maps, head) * _best_region(maps, head, maps.shape[-1])).sqrt(),
}


def slot_recall(
    probabilities: torch.Tensor, references: list[list[str]], table: ConceptTable, *, slots: int, threshold: float
) -> dict:
    """Per held-out object the slots' recall and precision and the F1 of copying them; over all
    slot words the share a reference names; and the share of images with a filled slot."""
    scores, best = probabilities.topk(slots, dim=1)
    filled = scores >= threshold
    objects = {}
    for name, words in HELD_OUT_OBJECTS.items():
        shown = torch.tensor([sum(mentions(ref, words) for ref in refs) >= 2 for refs in references])
        tagged = ((best == table.words.index(name)) & filled).any(dim=1)
        hits = int((shown & tagged).sum())
        recall, precision = hits / max(int(shown.sum()), 1), hits / max(int(tagged.sum()), 1)
        f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
        objects[name] = {"recall": 100 * recall, "precision": 100 * precision, "f1": 100 * f1}
    named = total = 0
    for row, (word_ids, kept) in enumerate(zip(best.tolist(), filled.tolist())):
        said = {word for ref in references[row] for word in tokenize(ref)}
        for word_id, keep in zip(word_ids, kept):
            if keep:
                singular, plural = table.forms(word_id)
                total += 1
                named += bool(said & (singular | plural))
    return {
        "objects": objects,
        "mean_f1": sum(o["f1"] for o in objects.values()) / len(objects),
        "slot_words_named": 100 * named / max(total, 1),
        "images_with_a_slot": 100 * float(filled.any(dim=1).float().mean()),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=Path("checkpoints/captioner.safetensors"))
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--features", type=Path, default=Path("runs/features"))
    parser.add_argument("--thresholds", nargs="+", type=float, default=[0.1, 0.2, 0.3])
    args = parser.parse_args(argv)
    checkpoint = load_checkpoint(args.checkpoint)
    model, table = checkpoint.model, checkpoint.concepts
    if table is None:
        raise SystemExit(f"{args.checkpoint} has no concept decoder ({checkpoint.config.decoder})")
    corpus = load_corpus(args.data)
    cache = cache_for(args.features, checkpoint.encoder, [image.name for image in corpus])
    images = [image for image in corpus if image.split == "val"]
    maps = cache.model_inputs(True)[cache.rows([image.name for image in images])].float()
    head = (model.imagenet_weight, model.imagenet_bias, model.class_words, len(table.words))
    references = [list(image.captions) for image in images]
    report = {}
    print(f"{'pooling':22s} {'thr':>4s}  " + " ".join(f"{n[:6]:>6s}" for n in HELD_OUT_OBJECTS) + "  F1  named  w/slot")
    with torch.no_grad():
        for name, pooling in POOLINGS.items():
            probabilities = pooling(maps, head)
            for threshold in args.thresholds:
                row = slot_recall(probabilities, references, table, slots=model.slots, threshold=threshold)
                report[f"{name} @ {threshold}"] = row
                recalls = " ".join(f"{o['recall']:6.0f}" for o in row["objects"].values())
                print(
                    f"{name:22s} {threshold:4.2f}  {recalls}  {row['mean_f1']:4.1f}  "
                    f"{row['slot_words_named']:4.1f}  {row['images_with_a_slot']:5.1f}"
                )
    return report


if __name__ == "__main__":
    main()
