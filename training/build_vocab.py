"""Build the vocabulary from a corpus's train split and write it as a JSON token list.

    python -m training.build_vocab --data ../shared/flickr8k --out runs/vocab.json

``training.train`` builds the same vocabulary itself (and stores it in the checkpoint);
this script is for inspecting it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from captioner.vocab import Vocabulary
from training.datasets import load_corpus

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--annotations", type=Path)
    parser.add_argument("--min-count", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("runs/vocab.json"))
    args = parser.parse_args(argv)
    corpus = load_corpus(args.data, annotations=args.annotations)
    captions = [c for image in corpus if image.split == "train" for c in image.captions]
    vocab = Vocabulary.build(captions, min_count=args.min_count)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(vocab.tokens, indent=0))
    print(f"{len(vocab)} tokens from {len(captions)} train captions -> {args.out}")


if __name__ == "__main__":
    main()
