"""Reading a long clip's sampled frames: seeking over the gaps against decoding every frame.

    python -m benchmarks.long_clip --out benchmarks/long_clip.json

Writes a phone-like clip (by default 25 s of 1080p at 30 fps, a keyframe a second, panning
across the demo photo with sensor-like noise, so it has a phone's bitrate), then times
``read_video_frames`` of ``--frames`` evenly spaced frames in alternation: as it runs by
default (seeking to the keyframe before each sampled frame where the gap is long, see
:mod:`captioner.media.frame_sampling`) and with ``seek=False`` (decoding every frame up to the last
one). Reports both, their ratio and whether they gave the same frames (times and pixels).
PyAV's decoder picks its own threads (torch's thread count plays no part here).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.run import PHOTO
from benchmarks.timing import measure_interleaved
from captioner.media import read_video_frames

__all__ = ["main", "write_phone_like_clip"]


def write_phone_like_clip(
    path: Path, *, seconds: float, fps: int, width: int, height: int, keyframe_seconds: float
) -> Path:
    """An H.264 clip panning across the demo photo, with noise that moves from frame to frame."""
    import av

    frames = round(seconds * fps)
    photo = np.asarray(Image.open(PHOTO).convert("RGB").resize((width * 5 // 4, height * 5 // 4)))
    photo = (photo * 0.9).astype(np.uint8)  # room for the noise without wrapping round
    noise = np.random.default_rng(0).integers(0, 24, (height, width, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "g": str(max(1, round(keyframe_seconds * fps)))}
        for i in range(frames):
            x = i * (photo.shape[1] - width) // max(1, frames - 1)
            y = i * (photo.shape[0] - height) // max(1, frames - 1)
            picture = photo[y : y + height, x : x + width] + np.roll(noise, 7 * i, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=25.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--keyframe-seconds", type=float, default=1.0)
    parser.add_argument("--frames", type=int, default=8, help="frames sampled, as the app's default")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, help="also write the report as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="captioner-long-clip-") as scratch:
        clip = write_phone_like_clip(
            Path(scratch) / "clip.mp4",
            seconds=args.seconds,
            fps=args.fps,
            width=args.width,
            height=args.height,
            keyframe_seconds=args.keyframe_seconds,
        )
        megabytes = clip.stat().st_size / 1e6
        seeking = read_video_frames(clip, num_frames=args.frames)
        one_pass = read_video_frames(clip, num_frames=args.frames, seek=False)
        same = [f.time for f in seeking] == [f.time for f in one_pass] and all(
            np.array_equal(np.asarray(a.image), np.asarray(b.image)) for a, b in zip(seeking, one_pass)
        )
        rows = {
            f"read {args.frames} frames, seeking (default)": lambda: read_video_frames(clip, num_frames=args.frames),
            f"read {args.frames} frames, every frame decoded": lambda: read_video_frames(
                clip, num_frames=args.frames, seek=False
            ),
        }
        timings = measure_interleaved(rows, warmup=1, repeats=args.repeats)
    seek_ms, pass_ms = (t.median_ms for t in timings.values())
    report = {
        "clip": {
            "seconds": args.seconds,
            "fps": args.fps,
            "size": f"{args.width}x{args.height}",
            "keyframe_seconds": args.keyframe_seconds,
            "megabytes": round(megabytes, 1),
        },
        "rows": {name: timing.to_dict() for name, timing in timings.items()},
        "every frame decoded / seeking": round(pass_ms / seek_ms, 2),
        "same frames": same,
    }
    clip_line = f"{args.seconds:g} s, {args.width}x{args.height}, {args.fps} fps, {megabytes:.1f} MB"
    print(f"| {clip_line} | median ms | p95 ms |\n|---|---:|---:|")
    for name, timing in timings.items():
        print(f"| {name} | {timing.median_ms:.1f} | {timing.p95_ms:.1f} |")
    print(f"\nevery frame decoded / seeking: {report['every frame decoded / seeking']}; same frames: {same}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
