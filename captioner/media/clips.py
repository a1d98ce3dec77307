"""Clips: a few evenly spaced frames, upright, within the photos' pixel budget."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from captioner.media.files import MAX_PIXELS, MediaError, checked_file, described
from captioner.media.frame_sampling import frames_at

if TYPE_CHECKING:
    import av

__all__ = ["KEPT_FRAME_PIXELS", "SEEK_AHEAD_SECONDS", "VideoFrame", "read_video_frames"]

# Video frames above this are scaled down as they are converted to RGB (full HD): the encoder
# sees a few hundred pixels a side and timelines 320, and Pillow holds 4 bytes a pixel, so
# eight 4K frames would hold 265 MB a request, sixty-four (the most a clip gives) 2.1 GB.
KEPT_FRAME_PIXELS = 1920 * 1080


@dataclass(frozen=True)
class VideoFrame:
    """A decoded video frame and its time in seconds from the start of the clip."""

    time: float
    image: Image.Image


def read_video_frames(
    path: str | Path, *, num_frames: int = 8, max_frames: int = 3000, seek: bool = True
) -> list[VideoFrame]:
    """Decode ``num_frames`` evenly spaced frames of a clip (reading at most ``max_frames``),
    turned upright as the clip's display matrix says (a phone's portrait clip is stored
    sideways with a rotation to show it by, as a photo's EXIF orientation is).

    Frames have the photos' pixel budget, :data:`MAX_PIXELS`: checked on the stream's declared
    size before anything is decoded, and on each decoded frame. Frames over
    :data:`KEPT_FRAME_PIXELS` are scaled down as they are converted, so a request holds at
    most ``num_frames`` full-HD pictures.

    ``seek``: skip gaps of more than :data:`SEEK_AHEAD_SECONDS` between sampled frames by
    seeking to the keyframe before the next one (the same frames, see
    :mod:`captioner.media.frame_sampling`); False decodes every frame up to the last sampled one.
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
        raise MediaError(f"not a readable video ({type(error).__name__}: {described(error)})") from error
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
