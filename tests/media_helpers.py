"""Test media generated at run time from the committed fixture photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np


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


def mentions_dog(caption: str) -> bool:
    """True when a caption names a dog ("dog" or "dogs" as a word)."""
    return any(word in ("dog", "dogs") for word in caption.split())
