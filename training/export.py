"""Ship a trained checkpoint: attach evaluation reports and write a metrics JSON beside it.

    python -m training.export --checkpoint runs/lite0/best.safetensors \
        --report test_greedy=runs/lite0/test_greedy.json --report test_beam3=runs/lite0/test_beam3.json \
        --out checkpoints/captioner.safetensors

The weights are copied unchanged (fp16); the metadata gains a ``metrics`` entry per report.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from captioner.checkpoint import load_checkpoint

__all__ = ["main"]


def _report(text: str) -> tuple[str, dict]:
    name, _, path = text.partition("=")
    if not path:
        raise argparse.ArgumentTypeError("use NAME=PATH, e.g. test_greedy=runs/x/test.json")
    return name, json.loads(Path(path).read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--report", action="append", type=_report, default=[], help="NAME=evaluate JSON")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    checkpoint = load_checkpoint(args.checkpoint)
    metrics = dict(checkpoint.metrics)
    for name, report in args.report:
        metrics[name] = report["metrics"]
        keys = (
            "split",
            "images",
            "beam_size",
            "length_penalty",
            "no_repeat_ngram",
            "require_concepts",
            "max_length",
            "java",
        )
        metrics[f"{name}_settings"] = {k: report[k] for k in keys if k in report}
    dataclasses.replace(checkpoint, metrics=metrics).save(args.out)
    summary = {
        "checkpoint": args.out.name,
        "encoder": checkpoint.encoder.name,
        "training": checkpoint.training,
        "metrics": metrics,
    }
    metrics_path = args.out.with_suffix(".metrics.json")
    metrics_path.write_text(json.dumps(summary, indent=2))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB) and {metrics_path}")


if __name__ == "__main__":
    main()
