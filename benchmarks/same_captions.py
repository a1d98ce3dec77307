"""Captions of a corpus split with this checkout, to check that a change keeps every caption.

    python -m benchmarks.same_captions --data ../shared/flickr8k --split val --out after.json
    python -m benchmarks.same_captions --compare before.json after.json

Run the first command in each of two checkouts (e.g. a ``git worktree`` of the commit before a
refactor), then compare: the greedy and beam-3 captions of every image, and the ones that differ.
Use ``val``: ``test`` is read once per shipped model.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

__all__ = ["main"]

BATCH = 32


def captions(data: str, split: str) -> dict[str, list[str]]:
    """Each image of ``split``: its greedy and beam-3 captions with the shipped checkpoint."""
    from captioner import Captioner
    from training.datasets import load_corpus

    images = [image for image in load_corpus(data) if image.split == split]
    captioner = Captioner.load()
    found: dict[str, list[str]] = {}
    for start in tqdm(range(0, len(images), BATCH), unit="batch"):
        batch = images[start : start + BATCH]
        paths = [image.path for image in batch]
        greedy, beam = captioner.caption_batch(paths, beam_size=1), captioner.caption_batch(paths, beam_size=3)
        for image, one, other in zip(batch, greedy, beam):
            found[image.name] = [one.caption, other.caption]
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="corpus folder")
    parser.add_argument("--split", default="val")
    parser.add_argument("--out", type=Path, help="write the captions here")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args(argv)
    if args.compare:
        before, after = (json.loads(path.read_text()) for path in args.compare)
        differ = {name: (before[name], after.get(name)) for name in before if before[name] != after.get(name)}
        print(f"{len(before) - len(differ)} of {len(before)} images: the same greedy and beam-3 captions")
        for name, (old, new) in differ.items():
            print(f"{name}: {old} -> {new}")
        return 1 if differ or set(after) != set(before) else 0
    if not args.data or not args.out:
        parser.error("--data and --out (or --compare BEFORE AFTER)")
    args.out.write_text(json.dumps(captions(args.data, args.split), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
