"""A corpus of hostile and odd inputs, generated at test time (nothing downloaded).

Each case says whether a caption is expected or an error, and which words the error
message must contain.
"""

from __future__ import annotations

import io
import random
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fuzz import mutate, photo_seeds
from media_helpers import write_clip, write_rotated_clip
from PIL import Image

from captioner.media import register_image_plugins

__all__ = ["HostileCase", "make_corpus"]


@dataclass(frozen=True)
class HostileCase:
    kind: str
    path: Path
    error: str | None  # None: a caption is expected; else a regex the message must match

    @property
    def is_video(self) -> bool:
        return self.path.suffix in {".mp4", ".mkv", ".webm", ".avi", ".flv", ".mov"}


def _jpeg_bytes(photo: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def make_corpus(folder: Path, photo_path: Path) -> list[HostileCase]:
    """Write every case into ``folder``; ``photo_path`` is a real photo to derive them from."""
    import av

    folder.mkdir(parents=True, exist_ok=True)
    photo = Image.open(photo_path).convert("RGB")
    cases: list[HostileCase] = []

    def add(kind: str, name: str, data: bytes | None, error: str | None) -> None:
        path = folder / name
        if data is not None:
            path.write_bytes(data)
        cases.append(HostileCase(kind, path, error))

    def save(kind: str, name: str, image: Image.Image, error: str | None = None, **options) -> None:
        image.save(folder / name, **options)
        add(kind, name, None, error)

    jpeg = _jpeg_bytes(photo)
    buffer = io.BytesIO()
    photo.save(buffer, format="PNG")
    png = buffer.getvalue()
    add("truncated JPEG", "truncated.jpg", jpeg[: len(jpeg) // 3], "corrupt or truncated")
    add("truncated PNG", "truncated.png", png[: len(png) // 3], "corrupt or truncated")
    add("corrupt JPEG header", "corrupt.jpg", jpeg[:2] + bytes(200) + jpeg[202:], "not an image|corrupt")
    add("text renamed .jpg", "notes.jpg", b"Dear diary, today I uploaded a text file.\n" * 20, "not an image")
    add("executable renamed .jpg", "program.jpg", Path(sys.executable).read_bytes()[:65536], "not an image")
    add("zero-byte file", "empty.jpg", b"", "empty|not an image")
    save("1x1 image", "one_pixel.png", Image.new("RGB", (1, 1), (200, 30, 30)))
    bomb = Image.new("1", (14000, 14000))  # 196 Mpx, over twice Pillow's limit
    save("decompression bomb", "bomb.png", bomb, "too large")
    sixteen = Image.fromarray((np.asarray(photo.convert("L"), dtype=np.uint16) * 257).astype(np.uint16))
    save("16-bit greyscale PNG", "grey16.png", sixteen)
    save("CMYK JPEG", "cmyk.jpg", photo.convert("CMYK"))
    save("palette PNG", "palette.png", photo.convert("P", palette=Image.Palette.ADAPTIVE))
    save("LA PNG", "la.png", photo.convert("LA"))
    rgba = photo.convert("RGBA")
    rgba.putalpha(180)
    save("RGBA PNG", "rgba.png", rgba)
    frames = [photo, photo.rotate(10), photo.rotate(20)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    add("animated GIF (first frame)", "animated.gif", None, None)
    exif = Image.Exif()
    exif[0x0112] = 8  # displayed rotated 90 degrees counter-clockwise
    save("EXIF-rotated JPEG", "rotated.jpg", photo.rotate(-90, expand=True), exif=exif, quality=95)
    save("greyscale JPEG", "grey.jpg", photo.convert("L"))
    save("WebP", "photo.webp", photo)
    register_image_plugins()  # pillow-heif, for Pillow to write HEIC as it reads it
    save("HEIC photo (iPhones' format)", "photo.heic", photo, format="HEIF")
    save("float TIFF", "float.tiff", Image.fromarray(np.asarray(photo.convert("L"), dtype=np.float32)))
    save("huge but allowed (6000x6000)", "huge.jpg", photo.resize((6000, 6000)))
    # formats outside the allow-list, refused unread (PostScript went to Ghostscript)
    outside = "not an image file in a format we read"
    postscript = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nshowpage\n"
    add("PostScript named .jpg", "postscript.jpg", postscript, outside)
    for fmt, name in (("QOI", "photo.qoi.jpg"), ("DDS", "photo.dds.jpg"), ("TGA", "photo.tga.jpg")):
        buffer = io.BytesIO()
        photo.resize((64, 48)).save(buffer, format=fmt)
        add(f"{fmt} named .jpg", name, buffer.getvalue(), outside)
    # found by tests/fuzz.py: decoders' own exceptions that escaped load_image
    seeds = photo_seeds()
    for kind, seed, rng_seed, name in (
        ("AVIF: RuntimeError 'Missing or empty image item'", "avif", 11, "fuzz11.avif"),
        ("AVIF: RuntimeError 'Decoding of color planes failed'", "avif", 178, "fuzz178.avif"),
        ("HEIC: EOFError 'Unexpected end of file'", "heic", 1900, "fuzz1900.heic"),
        ("HEIC: RuntimeError 'Security limit exceeded'", "heic", 6901, "fuzz6901.heic"),
    ):
        add(kind, name, mutate(seeds[seed], random.Random(rng_seed)), "corrupt|too large|not an image")

    container = av.open(str(folder / "noframes.mkv"), "w")
    stream = container.add_stream("libx264", rate=8)
    stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
    container.start_encoding()
    container.close()
    add("0-frame video", "noframes.mkv", None, "no frames|before its first frame")
    clip = write_clip(folder / "clip.mp4", photo_path, frames=16, fps=8).read_bytes()
    add(
        "corrupt video",
        "corrupt.mp4",
        clip[:48] + bytes(4096) + clip[4144:],
        "not a readable video|no frames",
    )
    add(
        "truncated video",
        "truncated.mp4",
        clip[: len(clip) // 4],
        "not a readable video|no frames|first frame",
    )
    add("zero-byte video", "empty.mp4", b"", "empty")
    container = av.open(str(folder / "audio.mp4"), "w")
    audio = container.add_stream("aac", rate=8000)
    tone = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
    tone.sample_rate = 8000
    for packet in [*audio.encode(tone), *audio.encode()]:
        container.mux(packet)
    container.close()
    add("audio-only video", "audio.mp4", None, "no video stream")
    long_clip = np.zeros((4000, 32, 32, 3), dtype=np.uint8)
    long_clip[:, 8:24, 8:24] = 200
    import imageio.v3 as iio

    iio.imwrite(folder / "long.mp4", long_clip, plugin="pyav", codec="libx264", fps=25)
    add("very long video (frame cap)", "long.mp4", None, None)
    write_rotated_clip(folder / "portrait.mp4", photo.resize((192, 256)), 90)
    add("phone clip stored sideways (display matrix)", "portrait.mp4", None, None)
    write_rotated_clip(folder / "iphone.mov", photo.resize((192, 256)), -90, codec="libx265")
    add("HEVC clip in a QuickTime .mov (iPhones' format)", "iphone.mov", None, None)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("clip.mp4", clip)
    add(
        "unsupported container (zip named .mkv)",
        "zipped.mkv",
        archive.getvalue(),
        "not a readable video|first frame",
    )
    return cases
