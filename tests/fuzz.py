"""Byte-mutation fuzzing of photo and clip reading: every failure must be a ``MediaError``.

Seeds are small photos in every allowed format (:data:`captioner.media.PHOTO_FORMATS`) and
short clips in every container the app accepts (:data:`captioner.media.VIDEO_EXTENSIONS`),
written at start-up; each input is a seed with a few bytes flipped, overwritten with
boundary values, inserted, deleted or cut off (half the time in its header). The short run
is ``tests/test_fuzz.py`` (Hypothesis draws the mutations); the long one is this script::

    python tests/fuzz.py --photos 200000 --clips 10000 --seed 0 --findings /tmp/fuzz

It counts outcomes, groups uncaught exceptions by type and place (each kind's first input is
saved under ``--findings``), and watches the process's peak memory against ``--budget-mb``
above the start (an input that raises the peak past it is recorded as over budget).
"""

from __future__ import annotations

import argparse
import io
import json
import random
import resource
import sys
import tempfile
import time
import traceback
from collections import Counter
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from captioner.media import MediaError, load_image, read_video_frames, register_image_plugins

__all__ = ["clip_seeds", "mutate", "photo_seeds", "uncaught_kind"]

_INTERESTING = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff"]


def photo_seeds() -> dict[str, bytes]:
    """A small photo (48 x 32, noise over a gradient) in each allowed format and variant."""
    register_image_plugins()
    rng = np.random.default_rng(0)
    gradient = np.linspace(0, 200, 48, dtype=np.float32)[None, :, None] + rng.normal(0, 20, (32, 48, 3))
    photo = Image.fromarray(np.clip(gradient, 0, 255).astype(np.uint8))
    variants = {
        "jpeg": (photo, "JPEG", {}),
        "progressive.jpeg": (photo, "JPEG", {"progressive": True}),
        "png": (photo, "PNG", {}),
        "palette.png": (photo.convert("P"), "PNG", {}),
        "rgba.png": (photo.convert("RGBA"), "PNG", {}),
        "webp": (photo, "WEBP", {}),
        "lossless.webp": (photo, "WEBP", {"lossless": True}),
        "gif": (photo, "GIF", {"save_all": True, "append_images": [photo.rotate(5)]}),
        "bmp": (photo, "BMP", {}),
        "tiff": (photo, "TIFF", {}),
        "deflate.tiff": (photo, "TIFF", {"compression": "tiff_deflate"}),
        "heic": (photo, "HEIF", {}),
        "avif": (photo, "AVIF", {}),
    }
    seeds = {}
    for name, (image, fmt, options) in variants.items():
        buffer = io.BytesIO()
        try:
            image.save(buffer, format=fmt, **options)
        except (KeyError, OSError):  # a codec this Pillow build lacks
            continue
        seeds[name] = buffer.getvalue()
    return seeds


# container extension -> the codec written into it (each the app accepts, see VIDEO_EXTENSIONS)
_CLIP_CODECS = {
    ".mp4": "libx264", ".m4v": "libx264", ".mov": "libx264", ".mkv": "libx264", ".ts": "libx264",
    ".webm": "libvpx", ".avi": "mpeg4", ".3gp": "h263", ".flv": "flv", ".wmv": "wmv2",
    ".mpg": "mpeg1video", ".mpeg": "mpeg2video", ".ogv": "libvpx",
}  # fmt: skip


def clip_seeds(folder: Path) -> dict[str, bytes]:
    """A 6-frame clip (128 x 96, the size H.263 needs) in each container."""
    import av

    seeds = {}
    for extension, codec in _CLIP_CODECS.items():
        path = folder / f"seed{extension}"
        try:
            with av.open(str(path), "w", format="ogg" if extension == ".ogv" else None) as container:
                stream = container.add_stream(codec, rate=Fraction(25) if codec.startswith("mpeg") else 8)
                stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
                for i in range(6):
                    picture = np.full((96, 128, 3), 30 * i, dtype=np.uint8)
                    picture[10 * i : 10 * i + 20, :] = 220
                    for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
        except Exception:  # a codec or muxer this FFmpeg build lacks
            continue
        seeds[extension] = path.read_bytes()
    return seeds


def mutate(data: bytes, rng: random.Random) -> bytes:
    """``data`` with 1-8 random mutations, half of them within the first 256 bytes (headers)."""
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if not buffer:
            break
        end = min(len(buffer), 256) if rng.random() < 0.5 else len(buffer)
        at = rng.randrange(end)
        action = rng.randrange(7)
        if action == 0:
            buffer[at] ^= 1 << rng.randrange(8)
        elif action == 1:
            buffer[at] = rng.randrange(256)
        elif action == 2:
            value = rng.choice(_INTERESTING)
            buffer[at : at + len(value)] = value
        elif action == 3:
            buffer[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif action == 4:
            del buffer[at : at + rng.randint(1, 64)]
        elif action == 5:
            start = rng.randrange(len(buffer))
            buffer[at:at] = buffer[start : start + rng.randint(1, 128)]
        else:
            del buffer[max(1, at) :]
    return bytes(buffer)


def uncaught_kind(error: BaseException) -> str:
    """An exception's type and the place it was raised (``file:line``): one "kind" of bug."""
    frame = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
    place = f"{Path(frame.filename).name}:{frame.lineno}" if frame else "?"
    return f"{type(error).__module__}.{type(error).__qualname__} at {place}"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(photos: int, clips: int, seed: int, findings: Path, budget_mb: float, report_every: float = 60.0) -> dict:
    """Fuzz ``photos`` mutated photos and ``clips`` mutated clips; returns the counts."""
    findings.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="fuzz-"))
    photo_pool, clip_pool = list(photo_seeds().items()), list(clip_seeds(work).items())
    for _name, data in photo_pool:  # every seed itself must load
        load_image(data)
    start_mb, started, last_report = _peak_mb(), time.perf_counter(), time.perf_counter()
    outcomes: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    over_budget: list[str] = []
    slowest = (0.0, "")
    plan = [("photo", photos), ("clip", clips)]
    done = 0
    for what, count in plan:
        pool = photo_pool if what == "photo" else clip_pool
        for n in range(count):
            name, data = pool[rng.randrange(len(pool))]
            mutated = mutate(data, rng)
            before, began = _peak_mb(), time.perf_counter()
            try:
                if what == "photo":
                    load_image(mutated)
                else:
                    clip = work / f"input{name}"
                    clip.write_bytes(mutated)
                    read_video_frames(clip, num_frames=8)
                outcomes[f"{what} read"] += 1
            except MediaError:
                outcomes[f"{what} MediaError"] += 1
            except Exception as error:  # the bug this fuzzer hunts
                kind = uncaught_kind(error)
                outcomes[f"{what} uncaught"] += 1
                if not kinds[kind]:
                    suffix = Path(name).suffix or f".{name}"
                    (findings / f"{len(kinds):03d}{suffix}").write_bytes(mutated)
                    (findings / f"{len(kinds):03d}.txt").write_text(f"{kind}\n{error!r}\n")
                kinds[kind] += 1
            took = time.perf_counter() - began
            if took > slowest[0]:
                slowest = (took, f"{what} {name} #{n}")
            if _peak_mb() - start_mb > budget_mb and before - start_mb <= budget_mb:
                over_budget.append(f"{what} {name} #{n}: peak {_peak_mb():.0f} MB")
                (findings / f"over_budget_{len(over_budget)}{Path(name).suffix or '.' + name}").write_bytes(mutated)
            done += 1
            if time.perf_counter() - last_report > report_every:
                last_report = time.perf_counter()
                print(f"{done} inputs, {time.perf_counter() - started:.0f} s, {dict(outcomes)}, "
                      f"{len(kinds)} uncaught kinds, peak {_peak_mb():.0f} MB", flush=True)  # fmt: skip
    return {
        "photos": photos,
        "clips": clips,
        "seed": seed,
        "photo_seeds": [name for name, _ in photo_pool],
        "clip_seeds": [name for name, _ in clip_pool],
        "outcomes": dict(outcomes),
        "uncaught_kinds": dict(kinds),
        "seconds": round(time.perf_counter() - started, 1),
        "start_peak_mb": round(start_mb),
        "peak_mb": round(_peak_mb()),
        "over_budget": over_budget,
        "slowest_input_s": [round(slowest[0], 2), slowest[1]],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=200_000)
    parser.add_argument("--clips", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--findings", type=Path, default=Path(tempfile.gettempdir()) / "captioner-fuzz")
    parser.add_argument("--budget-mb", type=float, default=1024, help="peak memory allowed above the start")
    args = parser.parse_args(argv)
    result = run(args.photos, args.clips, args.seed, args.findings, args.budget_mb)
    print(json.dumps(result, indent=2))
    return 1 if result["uncaught_kinds"] or result["over_budget"] else 0


if __name__ == "__main__":
    sys.exit(main())
