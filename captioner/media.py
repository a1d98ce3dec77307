"""Image and video loading with clear errors for unreadable, odd or oversized input."""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from captioner.frame_sampling import frames_at

if TYPE_CHECKING:
    import av

__all__ = [
    "ImageSource",
    "MediaError",
    "VideoFrame",
    "VIDEO_EXTENSIONS",
    "is_video_path",
    "load_image",
    "media_files",
    "read_video_frames",
    "register_image_plugins",
]

ImageSource = str | Path | Image.Image | np.ndarray | bytes
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".webm", ".mov", ".avi", ".mkv", ".m4v", ".mpg", ".mpeg", ".ogv", ".flv", ".wmv", ".3gp", ".ts"}
)


class MediaError(ValueError):
    """An input image or video cannot be used; the message says why, for the user."""


@dataclass(frozen=True)
class VideoFrame:
    """A decoded video frame and its time in seconds from the start of the clip."""

    time: float
    image: Image.Image


def is_video_path(path: str | Path) -> bool:
    """True when the file extension is a known video container."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def media_files(folder: str | Path) -> list[Path]:
    """The photos (any format Pillow opens, HEIC included) and videos directly in ``folder``,
    by extension, sorted by name."""
    register_image_plugins()
    images = {extension for extension, name in Image.registered_extensions().items() if name in Image.OPEN}
    wanted = images | VIDEO_EXTENSIONS
    return sorted(path for path in Path(folder).iterdir() if path.is_file() and path.suffix.lower() in wanted)


@functools.cache
def register_image_plugins() -> bool:
    """Let Pillow open HEIC/HEIF photos (iPhones' default format) through pillow-heif where it is
    installed (True then). Pillow's registry is process-wide: this registers once, and
    :func:`load_image` calls it; an app whose framework opens uploads itself calls it first."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


def load_image(source: ImageSource, *, min_size: int | None = None) -> Image.Image:
    """Open ``source`` (path, bytes, PIL image or HxW[xC] array) as an upright RGB image.

    Any format Pillow reads, and HEIC/HEIF (see :func:`register_image_plugins`). EXIF
    orientation is applied; palette, grey, 16-bit, CMYK and alpha images are
    converted to RGB (alpha composited on white); animated images give their first frame.
    Pillow's decompression-bomb limit is kept. With ``min_size``, a JPEG file is decoded at
    the smallest scale its codec offers (1/2, 1/4 or 1/8) that keeps both sides at least
    ``min_size`` pixels: a 12-megapixel phone photo decodes several times faster, and
    pictures less than twice that size are decoded whole.

    Raises:
        MediaError: the input is missing, not an image, truncated or too large.
    """
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, np.ndarray):
        image = _array_to_image(source)
    elif isinstance(source, bytes):
        image = _open(io.BytesIO(source), "the uploaded data", min_size)
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise MediaError("no such file")
        if path.stat().st_size == 0:
            raise MediaError("the file is empty")
        image = _open(path, path.name, min_size)
    else:
        raise MediaError(f"cannot read an image from a {type(source).__name__}")
    return _to_rgb(image)


def _open(file: io.BytesIO | Path, label: str, min_size: int | None = None) -> Image.Image:
    register_image_plugins()
    try:
        image = Image.open(file)
        image.seek(0)
        if min_size and image.format == "JPEG":
            image.draft(None, (min_size, min_size))  # DCT-domain downscaling, before decoding
        image.load()
    except Image.DecompressionBombError as error:
        raise MediaError(f"the image is too large to process ({error})") from error
    except UnidentifiedImageError as error:
        raise MediaError("not an image file Pillow can read") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise MediaError(f"the image is corrupt or truncated ({error})") from error
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.width < 1 or image.height < 1:
        raise MediaError("the image has no pixels")
    image = ImageOps.exif_transpose(image) or image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = array.max() if array.max() > 0 else 1.0
        image = Image.fromarray((array / peak * 255).astype(np.uint8), mode="L")
    elif image.mode == "F":
        array = np.nan_to_num(np.asarray(image, dtype=np.float64))
        span = np.ptp(array) or 1.0
        image = Image.fromarray(((array - array.min()) / span * 255).astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image if image.mode == "RGB" else image.convert("RGB")


def _array_to_image(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise MediaError(f"an image array must be HxW, HxWx3 or HxWx4, got shape {array.shape}")
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.size and array.max() <= 1.0:
            array = array * 255.0
        array = np.clip(array, 0, 255).astype(np.uint8)
    return Image.fromarray(array)


def read_video_frames(
    path: str | Path, *, num_frames: int = 8, max_frames: int = 3000, seek: bool = True
) -> list[VideoFrame]:
    """Decode ``num_frames`` evenly spaced frames of a clip (reading at most ``max_frames``),
    turned upright as the clip's display matrix says (a phone's portrait clip is stored
    sideways with a rotation to show it by, as a photo's EXIF orientation is).

    ``seek``: skip gaps of more than :data:`SEEK_AHEAD_SECONDS` between sampled frames by
    seeking to the keyframe before the next one (the same frames, see
    :mod:`captioner.frame_sampling`); False decodes every frame up to the last sampled one.

    Raises:
        MediaError: missing, empty, corrupt, audio-only or frameless video.
    """
    path = Path(path)
    if num_frames < 1:
        raise ValueError("num_frames must be at least 1")
    if not path.is_file():
        raise MediaError("no such file")
    if path.stat().st_size == 0:
        raise MediaError("the file is empty")
    try:
        total = _count_frames(path, max_frames)
        if total == 0:
            raise MediaError("the video has no frames")
        wanted = np.round(np.linspace(0, total - 1, num=min(num_frames, total))).astype(int).tolist()
        try:
            sampled = _sample(path, wanted, seek=seek)
        except Exception:  # PyAV's errors, or a stream without the time base a seek needs
            if not seek:
                raise
            sampled = _sample(path, wanted, seek=False)  # a container that cannot seek: read it through
        frames = [VideoFrame(time, _upright(frame.to_image(), frame.rotation)) for time, frame in sampled]
        if not frames:
            raise MediaError("the video has no decodable frames")
    except MediaError:
        raise
    except Exception as error:  # PyAV raises many types for broken containers
        raise MediaError(f"not a readable video ({type(error).__name__}: {error})") from error
    return frames


SEEK_AHEAD_SECONDS = 2.0  # seek past gaps longer than this between sampled frames (phones: a keyframe a second or two)


def _sample(path: Path, positions: list[int], *, seek: bool) -> list[tuple[float, av.VideoFrame]]:
    """The decoded frames at ``positions``, with their times (see :func:`frames_at`)."""
    import av

    # PyAV directly (imageio's video backend): imageio's reader runs gc.collect() when it
    # closes, which costs ~0.2 s per clip in a process holding torch and Gradio.
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        seek_ahead = round(SEEK_AHEAD_SECONDS * float(stream.average_rate or 25.0)) if seek else None
        return frames_at(container, stream, positions, seek_ahead=seek_ahead)


_QUARTER_TURNS = {  # counter-clockwise degrees -> the transpose that turns the picture by them
    90: Image.Transpose.ROTATE_90,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_270,
}


def _upright(image: Image.Image, rotation: float) -> Image.Image:
    """``image`` (RGB) turned counter-clockwise by ``rotation`` degrees, to the nearest quarter turn."""
    turn = _QUARTER_TURNS.get(round(rotation / 90) % 4 * 90)
    return image.transpose(turn) if turn is not None else image


def _count_frames(path: Path, max_frames: int) -> int:
    """Frames in the clip, capped at ``max_frames``; trusts the header, else counts packets."""
    import av

    try:
        container = av.open(str(path))
    except EOFError as error:  # header only: a clip with no frames, or cut off early
        raise MediaError("the video ends before its first frame (no frames, or the file is cut off)") from error
    with container:
        if not container.streams.video:
            raise MediaError("the file has no video stream")
        stream = container.streams.video[0]
        if stream.frames:
            return min(int(stream.frames), max_frames)
        count = 0
        try:
            for packet in container.demux(stream):
                if packet.size:
                    count += 1
                    if count >= max_frames:
                        break
        except EOFError:  # a container with a video stream but no packets at all
            pass
        return count
