"""The ablation table: ``training.evaluate`` reports on ``val`` and ``test``, side by side, and a chart.

    python -m training.ablation --dir runs/ablation --names st_lite0_ce att_lite0_ce ... \\
        --plot docs/ablation.png

Reads ``<dir>/val/<name>_<decoding>.json`` and ``<dir>/test/<name>_<decoding>.json`` (the files
``python -m training.evaluate --split val|test --out ...`` writes) for each name and decoding
(default ``greedy`` and ``beam3``), prints one Markdown row per pair with the ``val`` and
``test`` scores, and draws ``test`` CIDEr per model and decoding, ``val`` beside it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["AblationRow", "markdown_table", "plot_ablation", "read_rows"]

SPLITS = ("val", "test")
TEST_COLUMNS = ("BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


@dataclass(frozen=True)
class AblationRow:
    """One model under one decoding, with its ``val`` and ``test`` metrics."""

    name: str
    decoding: str
    val: dict[str, float]
    test: dict[str, float]


def read_rows(folder: Path, names: list[str], decodings: list[str]) -> list[AblationRow]:
    """The reports of every name and decoding; a missing report is an error that names it."""
    rows = []
    for name in names:
        for decoding in decodings:
            metrics = {}
            for split in SPLITS:
                path = folder / split / f"{name}_{decoding}.json"
                if not path.is_file():
                    raise FileNotFoundError(f"no report {path} (python -m training.evaluate --split {split} --out ...)")
                metrics[split] = json.loads(path.read_text())["metrics"]
            rows.append(AblationRow(name, decoding, metrics["val"], metrics["test"]))
    return rows


def _score(metrics: dict[str, float], key: str) -> str:
    value = metrics.get(key)
    if value is None:
        return "–"
    return f"{value:.3f}" if key == "CIDEr" else f"{value:.1f}"


def markdown_table(rows: list[AblationRow]) -> str:
    """``val`` BLEU-4 and CIDEr, then every ``test`` score, one row per model and decoding."""
    header = ["model", "decoding", "val BLEU-4", "val CIDEr", *(f"test {c}" for c in TEST_COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    for row in rows:
        cells = [row.name, row.decoding, _score(row.val, "BLEU-4"), _score(row.val, "CIDEr")]
        cells += [_score(row.test, c) for c in TEST_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_ablation(rows: list[AblationRow], path: Path) -> None:
    """Horizontal bars of CIDEr, ``test`` solid and ``val`` hatched, one pair per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{row.name}, {row.decoding}" for row in rows]
    places = range(len(rows))
    fig, axis = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
    axis.barh([p + 0.2 for p in places], [row.test["CIDEr"] for row in rows], height=0.4, label="test")
    axis.barh(
        [p - 0.2 for p in places], [row.val["CIDEr"] for row in rows], height=0.4, hatch="//", fill=False, label="val"
    )
    axis.set_yticks(list(places), labels, fontsize=8)
    axis.invert_yaxis()
    axis.set(xlabel="CIDEr (pycocoevalcap)", title="Flickr8k: each stage of training, greedy and beam 3")
    axis.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, required=True, help="folder with val/ and test/ reports")
    parser.add_argument("--names", nargs="+", required=True, help="models, in the table's order")
    parser.add_argument("--decodings", nargs="+", default=["greedy", "beam3"])
    parser.add_argument("--plot", type=Path, help="also draw the chart (PNG)")
    args = parser.parse_args(argv)
    rows = read_rows(args.dir, args.names, args.decodings)
    table = markdown_table(rows)
    print(table)
    if args.plot:
        plot_ablation(rows, args.plot)
        print(f"wrote {args.plot}")
    return table


if __name__ == "__main__":
    main()
