"""Test media generated at run time from the committed fixture photos."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image


def write_clip(path: Path, image_path: Path, *, frames: int = 16, fps: int = 8, size: int = 192) -> Path:
    """Write a short H.264 clip (``size`` x ``size`` frames) panning slowly across a real photo."""
    import imageio.v3 as iio
    from PIL import Image

    side = size * 4 // 3
    photo = np.asarray(Image.open(image_path).convert("RGB").resize((side, side)))
    offsets = np.linspace(0, side - size, frames).astype(int)
    top = (side - size) // 2
    clip = np.stack([photo[top : top + size, x : x + size] for x in offsets])
    iio.imwrite(path, clip, plugin="pyav", codec="libx264", fps=fps)
    return path


def write_video(
    path: Path,
    pictures: Iterable[np.ndarray],
    *,
    rate: int = 8,
    codec: str = "libx264",
    options: dict[str, str] | None = None,
    rotation: int = 0,
) -> Path:
    """Write RGB ``pictures`` (H x W x 3, all one size) as a clip; ``rotation``: the display
    matrix's counter-clockwise turn (a phone's portrait clip)."""
    import av

    pictures = iter(pictures)
    first = next(pictures)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {**({"x265-params": "log-level=error"} if codec == "libx265" else {}), **(options or {})}
        if rotation:
            stream.set_display_rotation(rotation)
        for picture in (first, *pictures):
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_rotated_clip(
    path: Path, picture: Image.Image, rotation: int, *, frames: int = 4, codec: str = "libx264"
) -> Path:
    """Write a clip (H.264, or ``codec``) that shows ``picture`` upright as a phone's would: each
    frame stored turned ``rotation`` degrees clockwise, with a display matrix that turns it back."""
    stored = np.asarray(picture.convert("RGB").rotate(-rotation, expand=True))
    return write_video(path, [stored] * frames, codec=codec, rotation=rotation)


def mentions_dog(caption: str) -> bool:
    """True when a caption names a dog ("dog" or "dogs" as a word)."""
    return any(word in ("dog", "dogs") for word in caption.split())
