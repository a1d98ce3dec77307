"""Files handed to the captioner: what counts as a clip, what a folder holds, and the error
every reading failure becomes."""

from __future__ import annotations

import stat
from pathlib import Path

from PIL import Image

__all__ = ["MAX_PIXELS", "MediaError", "VIDEO_EXTENSIONS", "checked_file", "described", "is_video_path"]

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".webm", ".mov", ".avi", ".mkv", ".m4v", ".mpg", ".mpeg", ".ogv", ".flv", ".wmv", ".3gp", ".ts"}
)
# The most pixels a photo or a video frame may have: where Pillow refuses a decompression bomb
# (twice Image.MAX_IMAGE_PIXELS, ~179 megapixels, a 537 MB RGB picture).
MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS


class MediaError(ValueError):
    """An input image or video cannot be used; the message says why, for the user."""


def is_video_path(path: str | Path) -> bool:
    """True when the file extension is a known video container."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def checked_file(path: str | Path) -> Path:
    """``path`` if it is a regular, non-empty file; else a :class:`MediaError` that says what it is."""
    path = Path(path)
    try:
        status = path.stat()
    except FileNotFoundError as error:
        raise MediaError("no such file") from error
    except OSError as error:
        raise MediaError(f"cannot read the file ({error.strerror or error})") from error
    if stat.S_ISDIR(status.st_mode):
        raise MediaError("this is a folder, not a file")
    if not stat.S_ISREG(status.st_mode):
        raise MediaError("not a regular file (a pipe, socket or device); give a photo or video file")
    if status.st_size == 0:
        raise MediaError("the file is empty")
    return path


def described(error: BaseException) -> str:
    """An exception as a short message: its text, or its type where it has none."""
    text = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    return text or type(error).__name__
