from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from media_helpers import write_clip, write_rotated_clip
from PIL import Image

from captioner.media import (
    MediaError,
    check_photo,
    clips,
    is_video_path,
    load_image,
    media_files,
    read_video_frames,
    register_image_plugins,
)


def _photo() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8))


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "I;16", "I", "F", "1"])
def test_odd_colour_modes_become_rgb(tmp_path, mode):
    image = _photo().convert(mode) if mode not in ("I;16", "F") else _photo().convert("L").convert(mode)
    suffix = ".tiff" if mode in ("I;16", "I", "F", "CMYK") else ".png"
    path = tmp_path / f"image{suffix}"
    image.save(path)
    loaded = load_image(path)
    assert loaded.mode == "RGB" and loaded.size == (60, 40)


def test_transparent_pixels_become_white():
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    assert load_image(rgba).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (60, 40))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif)
    assert load_image(path).size == (40, 60)


@pytest.mark.slow
def test_heic_photos_open(tmp_path, dog_photo):
    import pillow_heif  # a requirement

    photo = Image.open(dog_photo).convert("RGB").resize((96, 64))
    path = tmp_path / "iphone.heic"
    pillow_heif.from_pillow(photo).save(path, quality=90)  # written without Pillow's registry
    # a fresh process: load_image registers the HEIF opener itself, whatever ran before it
    script = (
        "import sys, numpy; from captioner.media import load_image; numpy.save(sys.argv[2], load_image(sys.argv[1]))"
    )
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-c", script, str(path), str(tmp_path / "loaded.npy")], check=True, cwd=root)
    loaded = np.load(tmp_path / "loaded.npy")
    assert loaded.shape == (64, 96, 3)
    assert np.abs(loaded.astype(np.int16) - np.asarray(photo, dtype=np.int16)).mean() < 6
    assert register_image_plugins() and load_image(path).size == photo.size


def test_arrays_and_bytes(tmp_path):
    assert load_image(np.zeros((8, 9, 3), dtype=np.uint8)).size == (9, 8)
    assert load_image(np.ones((8, 9), dtype=np.float32)).size == (9, 8)
    buffer = io.BytesIO()
    _photo().save(buffer, format="JPEG")
    assert load_image(buffer.getvalue()).size == (60, 40)
    with pytest.raises(MediaError, match="HxW"):
        load_image(np.zeros((2, 3, 5)))


def test_bad_files_give_clear_errors(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello, not an image")
    buffer = io.BytesIO()
    _photo().save(buffer, format="PNG")
    (tmp_path / "truncated.png").write_bytes(buffer.getvalue()[:200])
    with pytest.raises(MediaError, match="empty"):
        load_image(tmp_path / "empty.jpg")
    with pytest.raises(MediaError, match="not an image"):
        load_image(tmp_path / "text.jpg")
    with pytest.raises(MediaError, match="corrupt or truncated"):
        load_image(tmp_path / "truncated.png")
    with pytest.raises(MediaError, match="no such file"):
        load_image(tmp_path / "missing.png")


def test_video_frames_evenly_spaced(tmp_path, dog_photo):
    clip = write_clip(tmp_path / "clip.mp4", dog_photo, frames=16, fps=8)
    assert is_video_path(clip) and not is_video_path(dog_photo)
    frames = read_video_frames(clip, num_frames=4)
    assert [round(f.time, 3) for f in frames] == [0.0, 0.625, 1.25, 1.875]  # frames 0, 5, 10, 15
    assert all(f.image.mode == "RGB" and f.image.size == (192, 192) for f in frames)
    assert len(read_video_frames(clip, num_frames=50)) == 16
    assert len(read_video_frames(clip, num_frames=4, max_frames=8)) == 4


@pytest.mark.parametrize("rotation", [90, 180, -90])
def test_video_frames_are_turned_upright_by_the_display_matrix(tmp_path, dog_photo, rotation):
    picture = Image.open(dog_photo).convert("RGB").resize((192, 128))  # landscape: a turn shows in the size
    clip = write_rotated_clip(tmp_path / "phone.mp4", picture, rotation)
    frame = read_video_frames(clip, num_frames=1)[0].image
    assert frame.size == picture.size
    error = np.abs(np.asarray(frame, dtype=np.int16) - np.asarray(picture, dtype=np.int16)).mean()
    assert error < 8  # H.264's loss; a frame left as stored differs by far more (or in size)


def test_broken_videos_give_clear_errors(tmp_path, dog_photo):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "junk.mp4").write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(MediaError, match="empty"):
        read_video_frames(tmp_path / "empty.mp4")
    with pytest.raises(MediaError, match="not a readable video"):
        read_video_frames(tmp_path / "junk.mp4")
    with pytest.raises(MediaError, match="no such file"):
        read_video_frames(tmp_path / "missing.mp4")


def _jpeg(tmp_path, size: tuple[int, int], name: str = "photo.jpg"):
    path = tmp_path / name
    _photo().resize(size).save(path, quality=90)
    return path


def test_large_jpeg_decodes_at_a_reduced_scale_that_keeps_min_size(tmp_path):
    path = _jpeg(tmp_path, (2000, 1500))
    reduced = load_image(path, min_size=224)
    assert min(reduced.size) >= 224 and reduced.size == (500, 375)  # 1/4: 1/8 would be 250 x 188
    assert load_image(path).size == (2000, 1500)  # without min_size: every pixel
    assert load_image(path.read_bytes(), min_size=224).size == (500, 375)  # uploads as bytes too


def test_min_size_leaves_small_jpegs_and_other_formats_whole(tmp_path):
    assert load_image(_jpeg(tmp_path, (500, 375)), min_size=224).size == (500, 375)  # Flickr-sized: not 2x
    png = tmp_path / "photo.png"
    _photo().resize((2000, 1500)).save(png)
    assert load_image(png, min_size=224).size == (2000, 1500)  # only JPEG's codec can scale while decoding


def test_reduced_jpeg_keeps_exif_orientation(tmp_path):
    image = _photo().resize((2000, 1000))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif)
    assert load_image(path, min_size=224).size == (250, 500)  # 1/4 scale, then upright


def test_media_files_are_the_photos_and_videos_of_a_folder(tmp_path):
    for name in ["b.heic", "a.PNG", "c.mov", "d.webp", "notes.txt", "e.pdf", "f.jpeg"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "g.jpg").mkdir()  # a folder, whatever its name
    assert [p.name for p in media_files(tmp_path)] == ["a.PNG", "b.heic", "c.mov", "d.webp", "f.jpeg"]


_EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nnewpath 0 0 moveto 16 16 lineto stroke\nshowpage\n"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF"])
def test_every_allowed_photo_format_is_read(tmp_path, fmt):
    register_image_plugins()
    path = tmp_path / f"photo.{fmt.lower()}"
    _photo().save(path, format=fmt)
    assert load_image(path).size == (60, 40)


@pytest.mark.parametrize(
    ("name", "write"),
    [
        ("postscript.jpg", lambda path: path.write_bytes(_EPS)),
        ("photo.qoi", lambda path: _photo().save(path, format="QOI")),
        ("photo.dds", lambda path: _photo().convert("RGBA").save(path, format="DDS")),
        ("photo.tga", lambda path: _photo().save(path, format="TGA")),
        ("photo.pcx", lambda path: _photo().save(path, format="PCX")),
    ],
)
def test_formats_outside_the_allow_list_are_refused_unread(tmp_path, name, write):
    path = tmp_path / name
    write(path)
    with pytest.raises(MediaError, match="not an image file in a format we read"):
        load_image(path)
    for source in (path, path.read_bytes()):
        with pytest.raises(MediaError, match="not an image file in a format we read"):
            check_photo(source)


def test_a_fifo_is_not_reported_as_a_missing_file(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    for read in (load_image, read_video_frames):
        with pytest.raises(MediaError, match="not a regular file"):
            read(fifo)
    with pytest.raises(MediaError, match="folder"):
        load_image(tmp_path)


def test_clip_frames_over_the_pixel_budget_are_refused_before_decoding(tmp_path, dog_photo, monkeypatch):
    clip = write_clip(tmp_path / "clip.mp4", dog_photo, frames=4, size=64)
    monkeypatch.setattr(clips, "MAX_PIXELS", 64 * 64 - 1)  # a 16000 x 16000 frame, scaled to the test
    monkeypatch.setattr(clips, "_picture", None)  # nothing may reach the decoded-frame stage
    with pytest.raises(MediaError, match="too large.*64 x 64"):
        read_video_frames(clip)


def test_decoded_frames_over_the_pixel_budget_are_refused(tmp_path, dog_photo, monkeypatch):
    """A frame larger than its stream declared (the header lied) is checked again when decoded."""
    clip = write_clip(tmp_path / "clip.mp4", dog_photo, frames=4, size=64)
    monkeypatch.setattr(clips, "MAX_PIXELS", 64 * 64 - 1)
    monkeypatch.setattr(clips, "_count_frames", lambda path, most: 4)  # where the header is checked
    with pytest.raises(MediaError, match="frames are too large"):
        read_video_frames(clip)


def test_large_clip_frames_are_kept_scaled_down(tmp_path, dog_photo, monkeypatch):
    clip = write_clip(tmp_path / "clip.mp4", dog_photo, frames=4, size=128)
    monkeypatch.setattr(clips, "KEPT_FRAME_PIXELS", 64 * 64)
    frames = read_video_frames(clip, num_frames=2)
    assert [frame.image.size for frame in frames] == [(64, 64), (64, 64)]
