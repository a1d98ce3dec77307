"""Start-up of a one-photo CLI run against a bare ``python -c "import torch"``, timed in alternation.

Each round runs, in a shuffled order, three fresh processes: ``python -c "import torch"``,
``python -m captioner caption PHOTO`` and this module's ``--split`` child, which times the same
run's three parts inside one process (importing the CLI, ``Captioner.load``, the caption).
Caches are warm: a first, untimed round builds whatever is built once (the native kernels).
The target is a CLI run of at most 1.6 times the bare import.

    python -m benchmarks.cli_startup --rounds 7 --out benchmarks/cli_startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.timing import measure_interleaved

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "demo" / "chelsea.jpg"
TARGET_RATIO = 1.6


def _split(photo: Path) -> dict[str, float]:
    """Seconds spent importing the CLI, loading the shipped checkpoint and captioning ``photo``."""
    start = time.perf_counter()
    from captioner.cli import Captioner

    imported = time.perf_counter()
    captioner = Captioner.load()
    loaded = time.perf_counter()
    captioner.caption(photo)
    done = time.perf_counter()
    return {"import": imported - start, "load": loaded - imported, "caption": done - loaded}


def _run(command: Sequence[str]) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (each runs every command once)")
    parser.add_argument("--photo", type=Path, default=PHOTO)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--split", action="store_true", help=argparse.SUPPRESS)  # the child's mode
    args = parser.parse_args(argv)
    if args.split:
        print(json.dumps(_split(args.photo)))
        return 0

    python = sys.executable
    splits: list[dict[str, float]] = []
    commands = {
        "python -c 'import torch'": lambda: _run([python, "-c", "import torch"]),
        "python -m captioner caption PHOTO": lambda: _run([python, "-m", "captioner", "caption", str(args.photo)]),
        "split": lambda: splits.append(json.loads(_run([python, "-m", "benchmarks.cli_startup", "--split"]))),
    }
    timings = measure_interleaved(commands, warmup=1, repeats=args.rounds)
    splits = splits[1:]  # the warm-up round's
    bare, cli = timings["python -c 'import torch'"], timings["python -m captioner caption PHOTO"]
    ratio = cli.median_ms / bare.median_ms
    parts = {name: round(statistics.median(s[name] for s in splits), 3) for name in ("import", "load", "caption")}
    result = {
        "import_torch_s": round(bare.median_ms / 1000, 3),
        "cli_one_photo_s": round(cli.median_ms / 1000, 3),
        "ratio": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "cli_split_s": parts,
        "rounds": args.rounds,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
