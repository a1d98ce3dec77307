"""The app's memory after clips with 64-megapixel frames: where it settles, and its peak.

    python -m benchmarks.large_clip_memory --clients 2 --clips 2 --side 8000

Writes a short MPEG-4 clip of ``--side`` x ``--side`` frames (the demo photo, enlarged), starts
``app.py`` in its own process, sends one small clip (warm-up), reads the app's resident memory,
then ``--clients`` clients at once each send ``--clips`` large clips through ``/caption_video``
(the app's queue runs two requests at a time), lets the app idle ``--idle`` seconds and reads it
again: ``settled_mb`` (VmRSS) and ``peak_mb`` (VmHWM, the most it held at once since it
started). ``--app`` names another copy of ``app.py`` (another checkout) to compare.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.app_load import ROOT, AppProcess, loopback_client
from benchmarks.run import PHOTO

__all__ = ["main", "measure_large_clips", "write_large_clip"]


def write_large_clip(path: Path, *, side: int = 8000, frames: int = 8, codec: str = "mpeg4") -> Path:
    """A clip (MPEG-4 part 2, or ``codec``) of ``frames`` frames of ``side`` x ``side`` pixels: the
    demo photo enlarged, so it compresses to a few MB (under the app's upload limit)."""
    import av

    picture = av.VideoFrame.from_ndarray(np.asarray(Image.open(PHOTO).convert("RGB").resize((side, side))))
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=4)
        stream.width = stream.height = side
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast"} if codec == "libx264" else {}
        for _ in range(frames):
            for packet in stream.encode(picture):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def measure_large_clips(
    large: Path,
    small: Path,
    *,
    clips: int = 2,
    clients: int = 2,
    idle_s: float = 5.0,
    threads: int = 2,
    script: Path = ROOT / "app.py",
) -> dict[str, float]:
    """Start the app, caption ``small`` once, then ``large`` ``clips`` times from each of ``clients``
    clients at once; the app's memory in MB before (``start_mb``), after an idle (``settled_mb``)
    and at its most (``peak_mb``)."""
    from gradio_client import handle_file

    server = AppProcess(threads=threads, script=script)
    try:
        server.fast_client.predict(handle_file(str(small)), api_name="/caption_video")
        time.sleep(idle_s)
        readings = {"start_mb": server.rss_mb(), "start_peak_mb": server.peak_rss_mb()}

        def send(_: int) -> list[str]:
            client = loopback_client(server.url, download_files=False)
            return [client.predict(handle_file(str(large)), api_name="/caption_video")[0] for _ in range(clips)]

        with ThreadPoolExecutor(clients) as pool:
            captions = [caption for sent in pool.map(send, range(clients)) for caption in sent]
        time.sleep(idle_s)
        readings |= {"settled_mb": server.rss_mb(), "peak_mb": server.peak_rss_mb()}
    finally:
        server.close()
    if not all(captions):
        raise RuntimeError("a large clip got no caption")
    return readings


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=2, help="large clips each client sends, one after another")
    parser.add_argument("--clients", type=int, default=2, help="clients sending at once (the app runs 2 at a time)")
    parser.add_argument("--side", type=int, default=8000, help="frame width and height of the large clip")
    parser.add_argument("--frames", type=int, default=8, help="frames in the large clip (the app samples 8)")
    parser.add_argument("--codec", default="mpeg4", help="the large clip's codec (mpeg4, libx264, ...)")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds the app idles before each reading")
    parser.add_argument("--threads", type=int, default=2, help="the app's OMP_NUM_THREADS")
    parser.add_argument("--app", type=Path, default=ROOT / "app.py", help="the app script to start")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        large = write_large_clip(Path(folder) / "large.mp4", side=args.side, frames=args.frames, codec=args.codec)
        small = write_large_clip(Path(folder) / "small.mp4", side=256, frames=args.frames)
        readings = measure_large_clips(
            large,
            small,
            clips=args.clips,
            clients=args.clients,
            idle_s=args.idle,
            threads=args.threads,
            script=args.app,
        )
    result = {**vars(args), "app": str(args.app), **{key: round(value) for key, value in readings.items()}}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
