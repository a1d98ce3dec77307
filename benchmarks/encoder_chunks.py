"""How many images per encoder forward: the time to encode one batch at each chunk size.

    python -m benchmarks.encoder_chunks --threads 2 --out benchmarks/encoder_chunks.json

On a CPU a forward of a few images keeps their activations in the caches, and a batch
encoded a few images at a time takes far less time than the same batch in one forward;
this sweep is what :data:`captioner.encoders.CPU_CHUNK_SIZE` was chosen by. Chunk sizes are
timed in alternation (:func:`~benchmarks.timing.measure_interleaved`) on the shipped
checkpoint's encoder, and the JSON's plot shows milliseconds per image against chunk size.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from benchmarks.run import photos_for_batch
from benchmarks.timing import measure_interleaved
from captioner import Captioner

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32, help="images encoded per timed call")
    parser.add_argument("--chunks", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6, 8, 16, 32])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "encoder_chunks.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    captioner = Captioner.load()
    batch = captioner.preprocess.batch(photos_for_batch(args.batch))
    chunks = sorted({min(chunk, args.batch) for chunk in args.chunks})

    def encode(chunk: int) -> torch.Tensor:
        with torch.inference_mode():
            return captioner.encoder.encode_in_chunks(batch, chunk)

    timings = measure_interleaved({str(c): lambda c=c: encode(c) for c in chunks}, repeats=args.repeats)
    rows = {
        name: {**timing.to_dict(), "ms_per_image": round(timing.median_ms / args.batch, 2)}
        for name, timing in timings.items()
    }
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": platform.platform(),
        "threads": args.threads,
        "batch": args.batch,
        "encoder": captioner.checkpoint.encoder.name,
        "chunks": rows,
    }
    args.out.write_text(json.dumps(report, indent=2))
    _plot(report, args.out.with_suffix(".png"))
    print(markdown(report))
    return report


def markdown(report: dict) -> str:
    lines = [
        f"{report['encoder']}, {report['batch']} images, {report['threads']} threads, {report['date']}",
        "",
        "| images per forward | median ms (all images) | p95 ms | ms per image |",
        "|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {chunk} | {r['median_ms']:.1f} | {r['p95_ms']:.1f} | {r['ms_per_image']:.2f} |"
        for chunk, r in report["chunks"].items()
    ]
    return "\n".join(lines)


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    chunks = [int(c) for c in report["chunks"]]
    per_image = [r["ms_per_image"] for r in report["chunks"].values()]
    figure, axes = plt.subplots(figsize=(6, 3.5))
    axes.plot(chunks, per_image, marker="o")
    axes.set_xscale("log", base=2)
    axes.set_xticks(chunks, [str(c) for c in chunks])
    axes.set_xlabel("images per encoder forward")
    axes.set_ylabel("ms per image (median)")
    axes.set_title(f"{report['encoder']}: {report['batch']} images, {report['threads']} threads")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
