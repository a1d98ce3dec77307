"""Photos: opened with an allow-list of formats, upright, RGB, within a pixel budget."""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from captioner.media.files import MAX_PIXELS, VIDEO_EXTENSIONS, MediaError, checked_file, described

__all__ = ["ImageSource", "PHOTO_FORMATS", "check_photo", "load_image", "media_files", "register_image_plugins"]

ImageSource = str | Path | Image.Image | np.ndarray | bytes

# Photo formats opened, by Pillow's names: what cameras, phones and the web produce. Every
# other format Pillow knows (PostScript through Ghostscript, DDS, QOI, PSD, FITS, ...) is
# refused unread: each decoder is attack surface, and a mislabelled file is sniffed by content.
PHOTO_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF")
_FORMAT_NAMES = "JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC/HEIF or AVIF"


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
        raise MediaError(f"the image is corrupt ({described(error)})") from error


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
        raise MediaError(f"the image is corrupt ({described(error)})") from error


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
        raise MediaError(f"the image is corrupt or truncated ({described(error)})") from error
    except Exception as error:  # decoders raise many types (IndexError, RuntimeError, struct.error, ...)
        raise MediaError(f"the image is corrupt ({described(error)})") from error
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
