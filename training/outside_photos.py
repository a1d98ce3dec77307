"""Photos from outside Flickr8k: does the caption name the main subject?

    python -m training.outside_photos --checkpoints before.safetensors checkpoints/captioner.safetensors

Captions every photo listed in ``demo/outside_flickr8k/subjects.csv`` with each checkpoint's
default decoding and counts the captions that use one of the photo's accepted words for its
main subject. A check, never a tuning set: nothing is chosen on it.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from captioner.captioner import Captioner
from captioner.vocab import tokenize

__all__ = ["main", "named_subjects", "read_subjects"]

DEFAULT_FOLDER = Path(__file__).resolve().parent.parent / "demo" / "outside_flickr8k"


def read_subjects(folder: Path) -> list[dict[str, str]]:
    """The set's rows (``file``, ``subject``, ``accepted_words``, ...) with ``file`` resolved in ``folder``."""
    with open(folder / "subjects.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [{**row, "file": str((folder / row["file"]).resolve())} for row in rows]


def named_subjects(captioner: Captioner, rows: list[dict[str, str]]) -> list[dict]:
    """Each photo's caption and whether it names the subject (one of its accepted words)."""
    report = []
    for row in rows:
        result = captioner.caption(row["file"])
        named = not set(row["accepted_words"].split()).isdisjoint(tokenize(result.caption))
        concepts = [concept.describe() for concept in result.concepts if concept.in_slot]
        report.append({"file": Path(row["file"]).name, "caption": result.caption, "named": named, "concepts": concepts})
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", nargs="+", type=Path, required=True)
    parser.add_argument("--photos", type=Path, default=DEFAULT_FOLDER, help="folder with subjects.csv")
    parser.add_argument("--out", type=Path, help="report JSON")
    args = parser.parse_args(argv)
    rows = read_subjects(args.photos)
    report: dict = {"photos": len(rows), "checkpoints": {}}
    for checkpoint in args.checkpoints:
        captions = named_subjects(Captioner.load(checkpoint), rows)
        named = sum(c["named"] for c in captions)
        report["checkpoints"][str(checkpoint)] = {"named": named, "captions": captions}
        print(f"{checkpoint}: {named} of {len(rows)} captions name the main subject")
        for row, caption in zip(rows, captions):
            print(
                f"  {'✓' if caption['named'] else '✗'} {caption['file']:24s} {caption['caption']}  [{row['subject']}]"
            )
    if args.out:
        args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False))
        print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
