"""Choose the decoding on ``val``: beam sizes x length penalties, scored on cached features.

    python -m training.tune_decoding --checkpoint checkpoints/captioner.safetensors \
        --data ../shared/flickr8k --beams 1 3 5 --length-penalties 0 0.5 1
    python -m training.tune_decoding ... --beams 1 3 --require-concepts 0 0.5 0.7 0.9   # concept decoders

Prints one row per setting (BLEU-1..4, CIDEr with the Java-free scorers, mean caption length
and its ratio to the mean reference length, captions that stop mid-phrase, the share that invent
a person or animal) and writes the grid as JSON. ``--require-concepts`` adds constrained beam
search (concepts at least that probable must be named; 0 = off) to the grid; left out, the
checkpoint's stored choice is kept, so beams can be chosen after the concepts. With ``--apply`` the
setting with the best ``--select`` score becomes the checkpoint's default decoding (what the
app, the CLI and ``training.evaluate`` use unless told otherwise). Decode the test split with
the chosen setting only once, via ``training.evaluate``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from captioner.captioner import Captioner
from captioner.checkpoint import load_checkpoint
from captioner.vocab import tokenize
from training.datasets import SPLITS, load_corpus
from training.encoder_tuning import checkpoint_inputs
from training.mentions import invented_subjects, unfinished
from training.metrics import score_captions

__all__ = ["main"]


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="default: the shipped checkpoint")
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--annotations", type=Path)
    parser.add_argument("--features", type=Path, default=Path("runs/features"))
    parser.add_argument("--split", default="val", choices=SPLITS)
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--length-penalties", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    parser.add_argument("--no-repeat-ngrams", type=int, nargs="+", default=[0], help="0 = repeats allowed")
    parser.add_argument(
        "--require-concepts",
        type=float,
        nargs="+",
        help="concept probabilities to name; 0 = off (default: the checkpoint's stored choice)",
    )
    parser.add_argument("--max-length", type=int, default=20)
    parser.add_argument("--select", default="CIDEr", choices=["CIDEr", "BLEU-4"], help="score that picks the best")
    parser.add_argument("--apply", action="store_true", help="store the best setting in the checkpoint")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", type=Path, help="JSON grid (default: <checkpoint>.<split>.decoding.json)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    captioner = Captioner.load(args.checkpoint)
    requires = args.require_concepts or [captioner.default_decoding["require_concepts"]]
    corpus = load_corpus(args.data, annotations=args.annotations)
    images = [image for image in corpus if image.split == args.split]
    names = [image.name for image in images]
    features = checkpoint_inputs(captioner.checkpoint, args.features, [i.name for i in corpus], names)
    references = {image.name: list(image.captions) for image in images}
    reference_length = float(np.mean([len(tokenize(c)) for caps in references.values() for c in caps]))
    grid = []
    settings = [(1, 0.0, 0, r) for r in requires] if 1 in args.beams else []
    settings += [
        setting
        for setting in itertools.product(args.beams, args.length_penalties, args.no_repeat_ngrams, requires)
        if setting[0] > 1
    ]
    for beam, penalty, no_repeat, require in tqdm(settings, desc="settings"):
        results = [
            r
            for start in range(0, len(images), 100)
            for r in captioner.caption_features(
                features[start : start + 100],
                beam_size=beam,
                length_penalty=penalty,
                no_repeat_ngram=no_repeat,
                require_concepts=require,
                max_length=args.max_length,
                top_k=1,
            )
        ]
        predictions = {image.name: r.caption for image, r in zip(images, results)}
        length = float(np.mean([len(r.steps) for r in results]))
        row = {
            "beam_size": beam,
            "length_penalty": penalty,
            "no_repeat_ngram": no_repeat,
            "require_concepts": require,
            "mean_length": round(length, 2),
            "length_ratio": round(length / reference_length, 3),
            **score_captions(predictions, references, use_java=False, metrics=("BLEU", "CIDEr")),
            "unfinished": len(unfinished(predictions)),
            "invented_subjects": invented_subjects(predictions, references)["share"],
        }
        grid.append(row)
        tqdm.write(json.dumps(row))
    print(markdown(grid, args.split, args.select))
    if args.apply:
        _store_default(args.checkpoint, max(grid, key=lambda row: row[args.select]), args.split)
    out = args.out or Path(f"{args.checkpoint or 'checkpoint'}.{args.split}.decoding.json")
    out.write_text(json.dumps(grid, indent=2))
    print(f"wrote {out}")
    return grid


def _store_default(path: Path | None, best: dict, split: str) -> None:
    """Rewrite the checkpoint with ``best`` as its default decoding (weights unchanged)."""
    if path is None:
        raise SystemExit("--apply needs --checkpoint (the shipped file is written by training.export)")
    checkpoint = load_checkpoint(path)
    chosen = {k: best[k] for k in ("beam_size", "length_penalty", "no_repeat_ngram", "require_concepts")}
    metrics = {**checkpoint.metrics, f"{split}_decoding_choice": best}
    dataclasses.replace(checkpoint, metrics=metrics, decoding={**checkpoint.decoding, **chosen}).save(path)
    print(f"stored default decoding {chosen} in {path}")


def markdown(grid: list[dict], split: str, select: str = "CIDEr") -> str:
    """The grid as a Markdown table, the best ``select`` score marked."""
    best = max(grid, key=lambda row: row[select])
    lines = [
        f"| beam ({split}) | length penalty | no-repeat n-gram | concepts named from | words | length ratio "
        "| BLEU-1 | BLEU-4 | CIDEr | unfinished | invented subjects |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in grid:
        mark = " **best**" if row is best else ""
        setting = f"| {row['beam_size']} | {row['length_penalty']} | {row['no_repeat_ngram'] or '-'} "
        lines.append(
            f"{setting}| {row.get('require_concepts') or '-'} | {row['mean_length']} | {row['length_ratio']} | "
            f"{row['BLEU-1']:.1f} | {row['BLEU-4']:.1f} | {row['CIDEr']:.3f}{mark} | "
            f"{row.get('unfinished', '-')} | {row.get('invented_subjects', '-')} % |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
