"""Choose a concept decoder's copy bias and slot threshold on ``val``.

    python -m training.tune_concepts --checkpoint runs/ship/best.safetensors --data ../shared/flickr8k \
        --biases 0 1 2 3 --thresholds 0.1 0.2 --select CIDEr --apply

Captions the split with each setting (the checkpoint's default decoding; ``--require-concepts``:
also the probabilities from which a caption must name a concept, by constrained beam search) and
reports CIDEr and BLEU-4 (Java-free), the mean F1 of mentioning the held-out objects
(:mod:`training.mentions`), the captions that copy a concept and those that stop mid-phrase.
``--apply`` writes the best setting by ``--select`` into the checkpoint (threshold and bias in
its config, the required concepts in its default decoding); with ``--fewest-unfinished``, the best of
the settings whose captions stop mid-phrase least often.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from tqdm import tqdm

from captioner.captioner import Captioner
from training.datasets import load_corpus
from training.mentions import object_f1, unfinished
from training.metrics import score_captions

__all__ = ["best_setting", "main"]

SELECTABLE = ("CIDEr", "BLEU-4", "mean_f1")


def _caption_all(
    captioner: Captioner, images: list, require_concepts: float, batch_size: int = 50
) -> tuple[dict[str, str], int]:
    predictions, copied = {}, 0
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        results = captioner.caption_batch([i.path for i in chunk], top_k=1, require_concepts=require_concepts)
        for image, result in zip(chunk, results):
            predictions[image.name] = result.caption
            copied += any(step.concept for step in result.steps)
    return predictions, copied


def best_setting(grid: list[dict], select: str, *, fewest_unfinished: bool = False) -> dict:
    """The grid's row with the highest ``select``; with ``fewest_unfinished``, of the rows whose
    captions stop mid-phrase least often."""
    if fewest_unfinished:
        fewest = min(row["unfinished"] for row in grid)
        grid = [row for row in grid if row["unfinished"] == fewest]
    return max(grid, key=lambda row: row[select])


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--split", default="val", choices=("val", "train"))
    parser.add_argument("--biases", nargs="+", type=float, default=[0.0, 1.0, 2.0, 3.0])
    parser.add_argument("--thresholds", nargs="+", type=float, default=[0.2])
    parser.add_argument(
        "--require-concepts",
        nargs="+",
        type=float,
        default=[0.0],
        help="probabilities from which a concept must be named (0 = off; below a threshold: skipped)",
    )
    parser.add_argument("--select", default="CIDEr", choices=SELECTABLE)
    parser.add_argument(
        "--fewest-unfinished",
        action="store_true",
        help="choose only among the settings whose captions stop mid-phrase least often",
    )
    parser.add_argument("--apply", action="store_true", help="store the best setting in the checkpoint's config")
    args = parser.parse_args(argv)
    captioner = Captioner.load(args.checkpoint)
    checkpoint = captioner.checkpoint
    if not checkpoint.model.reads_concepts:
        raise SystemExit(f"{args.checkpoint} has no concept decoder ({checkpoint.config.decoder})")
    images = [image for image in load_corpus(args.data) if image.split == args.split]
    references = {image.name: list(image.captions) for image in images}
    grid = []
    settings = [
        (t, b, r) for t in args.thresholds for b in args.biases for r in args.require_concepts if r == 0 or r >= t
    ]
    for threshold, bias, require in tqdm(settings, desc="settings"):
        config = dataclasses.replace(checkpoint.config, concept_threshold=threshold, copy_bias=bias)
        checkpoint.model.config = config  # the inference form reads its slots through this model
        predictions, copied = _caption_all(captioner, images, require)
        scores = score_captions(predictions, references, use_java=False, metrics=("BLEU", "CIDEr"))
        row = {
            "threshold": threshold,
            "copy_bias": bias,
            "require_concepts": require,
            "CIDEr": scores["CIDEr"],
            "BLEU-4": scores["BLEU-4"],
            "mean_f1": object_f1(predictions, references)["mean"]["f1"],
            "copying": copied,
            "unfinished": len(unfinished(predictions)),
        }
        grid.append(row)
        print(json.dumps(row), flush=True)
    best = best_setting(grid, args.select, fewest_unfinished=args.fewest_unfinished)
    print(
        f"best by {args.select} on {args.split}: threshold {best['threshold']}, copy bias {best['copy_bias']}, "
        f"concepts required from {best['require_concepts']}"
    )
    if args.apply:
        config = dataclasses.replace(
            checkpoint.config, concept_threshold=best["threshold"], copy_bias=best["copy_bias"]
        )
        checkpoint.model.config = config
        metrics = {**checkpoint.metrics, "val_concept_choice": {**best, "grid": grid}}
        decoding = {**checkpoint.decoding, "require_concepts": best["require_concepts"]}
        dataclasses.replace(checkpoint, config=config, metrics=metrics, decoding=decoding).save(args.checkpoint)
        print(f"stored in {args.checkpoint}")
    return grid


if __name__ == "__main__":
    main()
