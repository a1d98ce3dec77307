"""A clip's frames at chosen positions: decoded in one pass, or by seeking over long gaps.

A clip sampled at a few evenly spaced frames needs only those; decoding every frame in between
costs most of the reading of a long phone clip (docs/speed.md, long clips).
:func:`frames_at` decodes in order while the next wanted frame is near, and where it is more
than ``seek_ahead`` frames on, asks the demuxer for the keyframe before it and decodes from
there. Positions are counted frame by frame; where a seek lands, its frame's position is its
timestamp at the stream's average rate, so both ways pick the same frames of a constant-rate
clip (and of a variable-rate one read in one pass, which is every clip sampled densely).
Frame times are the frames' timestamps. Each taken frame is handed to ``convert`` as soon as it
is decoded, so a caller that turns frames into small pictures never holds decoded frames.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from av.container import InputContainer
    from av.video.frame import VideoFrame
    from av.video.stream import VideoStream

__all__ = ["frames_at"]

T = TypeVar("T")


def frames_at(
    container: InputContainer,
    stream: VideoStream,
    positions: Sequence[int],
    *,
    seek_ahead: int | None,
    convert: Callable[[VideoFrame], T] | None = None,
) -> list[tuple[float, T]]:
    """``(seconds from the first frame, convert(frame))`` for each of ``positions`` (0 = the first
    frame) of a PyAV ``stream``: the first frame at or after each position, each frame once
    (``convert`` None: the frames themselves).

    ``seek_ahead``: seek where the next position is more than this many frames past the last
    decoded one (None: never). Seeking stops for the rest of the clip once it lands where
    decoding had already been (keyframes further apart than the gap: it would decode twice).
    """
    rate = float(stream.average_rate or 25.0)
    pending = sorted(set(positions))
    taken: list[tuple[float, T]] = []
    frames: Iterator[VideoFrame] = container.decode(stream)
    start: float | None = None  # the first frame's time
    position = -1  # the last decoded frame's
    sought = -1  # the position last sought: each is sought once
    while pending:
        jumped = False
        if seek_ahead is not None and start is not None and pending[0] - position > seek_ahead and pending[0] != sought:
            sought = pending[0]
            container.seek(int((start + sought / rate) / stream.time_base), stream=stream, backward=True)
            frames, jumped = container.decode(stream), True
        frame = next(frames, None)
        if frame is None:
            break
        if position < 0:  # the first frame
            start = frame.time  # None for a stream without timestamps: counted, never sought
            if start is None:
                seek_ahead = None
        stamped = start is not None and frame.time is not None
        previous = position
        if jumped and stamped:
            position = round((frame.time - start) * rate)  # where the seek landed, by its timestamp
            if position <= previous:
                seek_ahead = None  # landed behind: keyframes too far apart for seeking to pay
        else:
            position += 1  # counted, as a variable-rate clip's frames must be
        if position >= pending[0]:
            taken.append((frame.time - start if stamped else position / rate, convert(frame) if convert else frame))
            pending = [p for p in pending if p > position]
    return taken
