"""Speed benchmark of the shipped captioner against references, in one run, same threads.

    python -m benchmarks.run --threads 2 --out benchmarks/results.json

Prints a Markdown table (medians, p95) and the target ratios, and writes everything as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from benchmarks.references import resnet50_lstm, transformer_captioners
from benchmarks.timing import measure, measure_interleaved
from captioner import Captioner
from captioner.media import load_image

__all__ = ["main", "photos_for_batch"]

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "demo" / "flickr8k_dogs.jpg"
# app round trips (benchmarks.app_load): gradio_client as it comes, and sharing one SSL context
FLOOR = "Gradio floor: no-op /caption, same upload"
APP = "app round trip /caption, app's default decoding"
FAST_FLOOR = "Gradio floor, client with one SSL context"
FAST_APP = "app round trip, client with one SSL context"
BESIDE_TRANSFORMERS = "caption greedy, in turn with the transformer references"
BESIDE_RESNET = "caption greedy, in turn with the ResNet-50 reference"
CALLS_BESIDE = 5
CONCEPT_BRANCH = "concept branch (ImageNet head -> concept slots)"
# a photo whose greedy caption leaves out the concept the head is sure of (coffee, 0.9)
CONCEPT_PHOTO = ROOT / "demo" / "coffee.jpg"
SEARCHED = f"caption greedy, a required concept searched again ({CONCEPT_PHOTO.name})"
NOT_SEARCHED = f"caption greedy, concepts not required ({CONCEPT_PHOTO.name})"


def photos_for_batch(count: int) -> list[Path]:
    """``count`` photos of the test fixture's Flickr8k images, repeated as needed."""
    pool = sorted((ROOT / "tests" / "fixtures" / "flickr8k_mini" / "images").glob("*.jpg"))
    return [pool[i % len(pool)] for i in range(count)]


def clip_for_benchmark(path: Path, frames: int) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from media_helpers import write_clip

    return write_clip(path, PHOTO, frames=frames, fps=8)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--app-requests", type=int, default=200, help="timed app round trips")
    parser.add_argument("--rss-requests", type=int, default=500, help="requests before reading app RSS")
    parser.add_argument("--skip-app", action="store_true")
    parser.add_argument("--skip-transformers", action="store_true", help="leave out BLIP and ViT-GPT2")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows: dict[str, dict] = {}

    def record(name: str, timing, *, images: int = 1, samples: bool = False) -> None:
        rows[name] = {**timing.to_dict(samples=samples), "images_per_s": round(images * 1000 / timing.median_ms, 1)}
        print(f"{name:42s} {timing.median_ms:9.2f} ms  p95 {timing.p95_ms:9.2f} ms", flush=True)

    captioner = Captioner.load()
    encoder, transform = captioner.encoder, captioner.transform
    image = Image.open(PHOTO).convert("RGB")
    one = transform(image)[None].contiguous(memory_format=torch.channels_last)
    many = transform(image)[None].repeat(args.batch, 1, 1, 1).contiguous(memory_format=torch.channels_last)
    photos = photos_for_batch(args.batch)
    scratch = tempfile.TemporaryDirectory(prefix="captioner-benchmark-")  # removed at exit, errors included
    phone = _phone_photo(Path(scratch.name) / "phone.jpg")
    reference = resnet50_lstm(captioner)

    def bare_encoder(batch: torch.Tensor, chunk_size: int | None = None):
        with torch.inference_mode():
            return encoder.encode_in_chunks(batch, chunk_size) if chunk_size else encoder(batch)

    # Each group's rows are timed in alternation, so the ratios between them are fair; the
    # heavy rows (ResNet-50, 12-megapixel decodes) have groups of their own, so that they do not
    # leave cold caches to the encoder and ours beside them.
    single = {
        "encoder forward, batch 1": lambda: bare_encoder(one),
        "caption greedy (file -> words)": lambda: captioner.caption(PHOTO, beam_size=1),
        "caption beam 3": lambda: captioner.caption(PHOTO, beam_size=3),
        "caption beam 5": lambda: captioner.caption(PHOTO, beam_size=5),
    }
    phone_photo = {
        "caption greedy, 12-megapixel phone JPEG": lambda: captioner.caption(phone, beam_size=1),
        # the same with every pixel decoded first (what load_image's min_size saves)
        "caption greedy, 12-megapixel phone JPEG decoded whole": lambda: captioner.caption(
            load_image(phone), beam_size=1
        ),
    }
    beside_resnet = {
        BESIDE_RESNET: lambda: captioner.caption(PHOTO, beam_size=1),
        "reference: ResNet-50 + LSTM greedy": lambda: reference.caption(PHOTO, beam_size=1),
    }
    decoder = captioner.checkpoint.model
    if decoder.reads_concepts:  # the concept branch on its own: ImageNet head, concept words, slots
        with torch.inference_mode():
            maps = bare_encoder(one)

        def concept_branch():
            with torch.inference_mode():
                return decoder.concepts(maps)

        single[CONCEPT_BRANCH] = concept_branch
        if captioner.default_decoding["require_concepts"]:  # what constrained search adds where it runs
            single[SEARCHED] = lambda: captioner.caption(CONCEPT_PHOTO, beam_size=1)
            single[NOT_SEARCHED] = lambda: captioner.caption(CONCEPT_PHOTO, beam_size=1, require_concepts=0)
    for group in (single, phone_photo, beside_resnet):
        for name, timing in measure_interleaved(group, repeats=args.repeats).items():
            record(name, timing)
    # caption_batch runs the encoder a few images at a time (Captioner.encode): one forward of
    # the whole batch is the floor the issue names, the same chunks the captioner's own floor
    chunk = captioner.encode_chunk_size or args.batch
    batched = {
        f"encoder forward, batch {args.batch}": lambda: bare_encoder(many),
        _chunked_row(args.batch, chunk): lambda: bare_encoder(many, chunk),
        f"caption_batch {args.batch} greedy": lambda: captioner.caption_batch(photos, beam_size=1),
    }
    for name, timing in measure_interleaved(batched, repeats=max(5, args.repeats // 5)).items():
        record(name, timing, images=args.batch)
    clip = clip_for_benchmark(Path(scratch.name) / "clip16.mp4", 16)
    record(
        "video clip, 16 frames, greedy",
        measure(lambda: captioner.caption_video(clip, num_frames=16, beam_size=1), repeats=max(5, args.repeats // 5)),
    )
    scratch.cleanup()
    transformers_note = "skipped" if args.skip_transformers else "not installed"
    references = {} if args.skip_transformers else transformer_captioners(image)
    if references:
        # Each round runs every reference once and ours CALLS_BESIDE times in a row (timed per call:
        # the first after seconds of theirs starts with cold caches, the rest do not), so the
        # ratios see the same machine load on both sides.
        transformers_note = "ran"
        beside = {BESIDE_TRANSFORMERS: lambda: [captioner.caption(PHOTO, beam_size=1) for _ in range(CALLS_BESIDE)]}
        beside |= {f"reference: {name}": run for name, run in references.items()}
        timings = measure_interleaved(beside, warmup=1, repeats=7)
        timings[BESIDE_TRANSFORMERS] = timings[BESIDE_TRANSFORMERS].per_call(CALLS_BESIDE)
        for name, timing in timings.items():
            record(name, timing)

    app = {} if args.skip_app else _app_rows(args, record)
    ratios = _ratios(rows, args.batch, chunk)
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": platform.platform(),
        "processor": platform.processor(),
        "threads": args.threads,
        "torch": torch.__version__,
        "rows": rows,
        "app": app,
        "transformers": transformers_note,
        "ratios": ratios,
    }
    args.out.write_text(json.dumps(report, indent=2))
    print("\n" + markdown(report))
    return report


def _phone_photo(path: Path) -> Path:
    """The demo photo as a 4000 x 3000 JPEG, the size a phone camera uploads."""
    Image.open(PHOTO).convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC).save(path, quality=92)
    return path


def _app_rows(args: argparse.Namespace, record: Callable) -> dict:
    """Round trips to the app and to a no-op Gradio app, alternated; then the app's memory."""
    from gradio_client import handle_file

    from benchmarks.app_load import AppProcess

    floor = AppProcess(threads=args.threads, script=ROOT / "benchmarks" / "noop_app.py")
    server = AppProcess(threads=args.threads)
    try:
        server.caption(PHOTO)  # the app serves its page before its model loads: wait for the model
        rss_start = server.rss_mb()
        rounds = measure_interleaved(
            {
                FLOOR: lambda: floor.caption(PHOTO),
                APP: lambda: server.caption(PHOTO),
                FAST_FLOOR: lambda: floor.caption(PHOTO, fast=True),
                FAST_APP: lambda: server.caption(PHOTO, fast=True),
            },
            repeats=args.app_requests,
        )
        for name, timing in rounds.items():
            record(name, timing, samples=True)  # round trips bunch at 50 ms steps (see _bunching)
        floor.close()
        done = 1 + 2 * (3 + args.app_requests)  # the app's requests so far, warm-ups included
        for photo in photos_for_batch(max(0, args.rss_requests - done)):
            server.fast_client.predict(handle_file(str(photo)), api_name="/caption")
        app = {
            "startup_s": round(server.startup_s, 1),
            "rss_start_mb": round(rss_start, 1),
            "rss_end_mb": round(server.rss_mb(), 1),
            "peak_rss_mb": round(server.peak_rss_mb(), 1),
            "requests": max(args.rss_requests, done),
        }
        print(f"app: {app}")
        return app
    finally:
        floor.close()
        server.close()


def _chunked_row(batch: int, chunk: int) -> str:
    return f"encoder forward, batch {batch} in chunks of {chunk}"


def _ratios(rows: dict, batch: int, chunk: int) -> dict[str, float]:
    def ms(name: str) -> float:
        return rows[name]["median_ms"]

    def throughput(name: str) -> float:
        return rows[name]["images_per_s"]

    ratios = {
        "greedy / encoder batch 1 (target <= 1.5)": ms("caption greedy (file -> words)")
        / ms("encoder forward, batch 1"),
        "beam 5 / greedy (target <= 1.5)": ms("caption beam 5") / ms("caption greedy (file -> words)"),
        f"batch {batch} throughput / encoder throughput (target >= 0.85)": throughput(f"caption_batch {batch} greedy")
        / throughput(f"encoder forward, batch {batch}"),
        f"batch {batch} throughput / encoder throughput in chunks of {chunk}": throughput(
            f"caption_batch {batch} greedy"
        )
        / throughput(_chunked_row(batch, chunk)),
        "ResNet-50+LSTM / ours (target >= 4)": ms("reference: ResNet-50 + LSTM greedy") / ms(BESIDE_RESNET),
    }
    if CONCEPT_BRANCH in rows:
        ratios["concept branch / encoder batch 1"] = ms(CONCEPT_BRANCH) / ms("encoder forward, batch 1")
    if SEARCHED in rows:
        searched_again = f"a required concept searched again / greedy alone ({CONCEPT_PHOTO.name})"
        ratios[searched_again] = ms(SEARCHED) / ms(NOT_SEARCHED)
        ratios["a required concept searched again / encoder batch 1"] = ms(SEARCHED) / ms("encoder forward, batch 1")
    if APP in rows:
        ratios["app round trip / Gradio's no-op floor"] = ms(APP) / ms(FLOOR)
        ratios["app round trip / no-op floor, one SSL context"] = ms(FAST_APP) / ms(FAST_FLOOR)
        ratios["app round trip p50 ms, one SSL context (target <= 150)"] = ms(FAST_APP)
    for name in rows:
        if name.startswith("reference: ") and "random weights" in name:
            ratios[f"{name.removeprefix('reference: ')} / ours (target >= 60)"] = ms(name) / ms(BESIDE_TRANSFORMERS)
    return {k: round(v, 2) for k, v in ratios.items()}


def _bunching(name: str, samples_ms: list[float], window_ms: float = 25.0) -> str:
    """How many round trips took within ``window_ms`` of the fastest. gradio_client's result
    stream looks for new messages every 50 ms, so round trips bunch at the fastest one plus
    whole steps of 50 ms, and the median says which step most of them reached."""
    fastest = samples_ms[0]
    near = sum(t <= fastest + window_ms for t in samples_ms)
    return f"{name}: fastest {fastest:.1f} ms, {near} of {len(samples_ms)} within {window_ms:.0f} ms of it."


def markdown(report: dict) -> str:
    lines = [
        f"Benchmark {report['date']}, {report['machine']}, {report['threads']} threads, torch {report['torch']}",
        "",
        "| measurement | median ms | p95 ms | images/s |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {n} | {r['median_ms']:.1f} | {r['p95_ms']:.1f} | {r['images_per_s']:.1f} |"
        for n, r in report["rows"].items()
    ]
    lines += ["", "| ratio (or target) | value |", "|---|---:|"] + [
        f"| {k} | {v} |" for k, v in report["ratios"].items()
    ]
    bunched = [_bunching(name, r["samples_ms"]) for name, r in report["rows"].items() if "samples_ms" in r]
    lines += ["", *(f"- {line}" for line in bunched)] if bunched else []
    if report["app"]:
        a = report["app"]
        lines += [
            "",
            f"App: start-up {a['startup_s']} s; RSS {a['rss_start_mb']} MB at start, {a['rss_end_mb']} MB "
            f"after {a['requests']} requests, peak {a['peak_rss_mb']} MB.",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
