"""Image and video loading with clear errors for unreadable, odd or oversized input."""

from __future__ import annotations

import functools
import io
import stat
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
    "MAX_PIXELS",
    "check_photo",
    "checked_file",
    "MediaError",
    "PHOTO_FORMATS",
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


# Photo formats opened, by Pillow's names: what cameras, phones and the web produce. Every
# other format Pillow knows (PostScript through Ghostscript, DDS, QOI, PSD, FITS, ...) is
# refused unread: each decoder is attack surface, and a mislabelled file is sniffed by content.
PHOTO_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF")
_FORMAT_NAMES = "JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC/HEIF or AVIF"
# The most pixels a photo or a video frame may have: where Pillow refuses a decompression bomb
# (twice Image.MAX_IMAGE_PIXELS, ~179 megapixels, a 537 MB RGB picture).
MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS
# Video frames above this are scaled down as they are converted to RGB (4K UHD): the encoder
# sees a few hundred pixels a side, and eight 8K frames would otherwise hold 800 MB.
KEPT_FRAME_PIXELS = 3840 * 2160


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
    """The photos (:data:`PHOTO_FORMATS`) and videos directly in ``folder``, by extension,
    sorted by name."""
    register_image_plugins()
    images = {extension for extension, name in Image.registered_extensions().items() if name in PHOTO_FORMATS}
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

    The formats of :data:`PHOTO_FORMATS`, HEIC/HEIF through pillow-heif (see
    :func:`register_image_plugins`); any other content is refused unread. EXIF
    orientation is applied; palette, grey, 16-bit, CMYK and alpha images are
    converted to RGB (alpha composited on white); animated images give their first frame.
    Pillow's decompression-bomb limit is kept. With ``min_size``, a JPEG file is decoded at
    the smallest scale its codec offers (1/2, 1/4 or 1/8) that keeps both sides at least
    ``min_size`` pixels: a 12-megapixel phone photo decodes several times faster, and
    pictures less than twice that size are decoded whole.

    Raises:
        MediaError: the input is missing, not an image, truncated or too large; every failure
            of a decoder becomes one, with a message.
    """
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, np.ndarray):
        image = _array_to_image(source)
    elif isinstance(source, bytes):
        if not source:
            raise MediaError("the file is empty")
        image = _open(io.BytesIO(source), min_size)
    elif isinstance(source, (str, Path)):
        image = _open(checked_file(source), min_size)
    else:
        raise MediaError(f"cannot read an image from a {type(source).__name__}")
    try:
        return _to_rgb(image)
    except MediaError:
        raise
    except MemoryError as error:
        raise MediaError("the image is too large to process (out of memory)") from error
    except Exception as error:  # a decoder's or a malformed EXIF block's own error types
        raise MediaError(f"the image is corrupt ({_described(error)})") from error


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


def check_photo(source: str | Path | bytes) -> None:
    """Raise :class:`MediaError` unless ``source`` (a path or a file's bytes) is a photo in one of
    :data:`PHOTO_FORMATS` within :data:`MAX_PIXELS`; reads the header only (for a framework
    that decodes uploads itself, after this check)."""
    try:
        if isinstance(source, bytes) and not source:
            raise MediaError("the file is empty")
        with _opened(io.BytesIO(source) if isinstance(source, bytes) else checked_file(source)):
            pass
    except MediaError:
        raise
    except Exception as error:
        raise MediaError(f"the image is corrupt ({_described(error)})") from error


def _opened(file: io.BytesIO | Path) -> Image.Image:
    """``file`` opened (header read, pixels not decoded) with the allowed formats' decoders only."""
    register_image_plugins()
    Image.init()  # every plugin registered (once), so that the names below are found
    formats = [name for name in PHOTO_FORMATS if name in Image.OPEN]
    try:
        image = Image.open(file, formats=formats)
    except Image.DecompressionBombError as error:
        raise MediaError(f"the image is too large to process ({error})") from error
    except UnidentifiedImageError as error:
        raise MediaError(f"not an image file in a format we read ({_FORMAT_NAMES})") from error
    if image.width * image.height > MAX_PIXELS:  # Pillow checks only some formats' headers
        image.close()
        raise MediaError(f"the image is too large to process ({image.width} x {image.height} pixels)")
    return image


def _open(file: io.BytesIO | Path, min_size: int | None = None) -> Image.Image:
    try:
        image = _opened(file)
        image.seek(0)
        if min_size and image.format in ("JPEG", "MPO"):
            image.draft(None, (min_size, min_size))  # DCT-domain downscaling, before decoding
        image.load()
    except MediaError:
        raise
    except Image.DecompressionBombError as error:
        raise MediaError(f"the image is too large to process ({error})") from error
    except MemoryError as error:
        raise MediaError("the image is too large to process (out of memory)") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise MediaError(f"the image is corrupt or truncated ({_described(error)})") from error
    except Exception as error:  # decoders raise many types (IndexError, RuntimeError, struct.error, ...)
        raise MediaError(f"the image is corrupt ({_described(error)})") from error
    return image


def _described(error: BaseException) -> str:
    """An exception as a short message: its text, or its type where it has none."""
    text = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    return text or type(error).__name__


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

    Frames have the photos' pixel budget, :data:`MAX_PIXELS`: checked on the stream's declared
    size before anything is decoded, and on each decoded frame. Frames over
    :data:`KEPT_FRAME_PIXELS` are scaled down as they are converted, so a request holds at
    most ``num_frames`` 4K pictures.

    ``seek``: skip gaps of more than :data:`SEEK_AHEAD_SECONDS` between sampled frames by
    seeking to the keyframe before the next one (the same frames, see
    :mod:`captioner.frame_sampling`); False decodes every frame up to the last sampled one.
    Where seeking finds fewer frames than wanted (timestamps that do not fit the frame count,
    such as a clip whose timestamps claim hours), the clip is read through, frame by frame.

    Raises:
        MediaError: missing, empty, corrupt, audio-only, frameless or oversized video.
    """
    if num_frames < 1:
        raise ValueError("num_frames must be at least 1")
    path = checked_file(path)
    try:
        total = _count_frames(path, max_frames)
        if total == 0:
            raise MediaError("the video has no frames")
        wanted = np.round(np.linspace(0, total - 1, num=min(num_frames, total))).astype(int).tolist()
        sampled = []
        if seek:
            try:
                sampled = _sample(path, wanted, seek=True)
            except MediaError:
                raise
            except Exception:  # PyAV's errors, or a stream without the time base a seek needs
                sampled = []
        if len(sampled) < len(wanted):  # no seeking, a container that cannot seek, or implausible timestamps
            sampled = _sample(path, wanted, seek=False)
        frames = [VideoFrame(time, image) for time, image in sampled]
        if not frames:
            raise MediaError("the video has no decodable frames")
    except MediaError:
        raise
    except MemoryError as error:
        raise MediaError("the video is too large to process (out of memory)") from error
    except Exception as error:  # PyAV raises many types for broken containers
        raise MediaError(f"not a readable video ({type(error).__name__}: {_described(error)})") from error
    return frames


SEEK_AHEAD_SECONDS = 2.0  # seek past gaps longer than this between sampled frames (phones: a keyframe a second or two)


def _sample(path: Path, positions: list[int], *, seek: bool) -> list[tuple[float, Image.Image]]:
    """The upright pictures of the frames at ``positions``, with their times (see :func:`frames_at`)."""
    import av

    # PyAV directly (imageio's video backend): imageio's reader runs gc.collect() when it
    # closes, which is slow in a process holding torch and Gradio.
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or 25.0)
        plausible = 1.0 <= rate <= 1000.0  # frames per second; else timestamps do not fit the frames
        seek_ahead = round(SEEK_AHEAD_SECONDS * rate) if seek and plausible else None
        return frames_at(container, stream, positions, seek_ahead=seek_ahead, convert=_picture)


def _picture(frame: av.VideoFrame) -> Image.Image:
    """A decoded frame as an upright RGB picture of at most :data:`KEPT_FRAME_PIXELS` (scaled in
    the conversion, so no full-size RGB copy of a larger frame is made)."""
    pixels = frame.width * frame.height
    if pixels > MAX_PIXELS:
        raise MediaError(f"the video's frames are too large to process ({frame.width} x {frame.height} pixels)")
    if pixels > KEPT_FRAME_PIXELS:
        scale = (KEPT_FRAME_PIXELS / pixels) ** 0.5
        size = {"width": max(1, int(frame.width * scale)), "height": max(1, int(frame.height * scale))}
        image = frame.to_image(**size)
    else:
        image = frame.to_image()
    return _upright(image, frame.rotation)


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
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > MAX_PIXELS:  # declared in the header: refused before any decoding
            raise MediaError(f"the video's frames are too large to process ({width} x {height} pixels)")
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
