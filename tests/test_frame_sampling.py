"""Sampling a clip's frames by seeking over long gaps picks the frames one pass would."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from media_helpers import write_video

from captioner.media import read_video_frames
from captioner.media.frame_sampling import frames_at


def _numbered_clip(path: Path, frames: int, *, keyframe_interval: int) -> Path:
    """A 30 fps clip whose frame i shows a bright bar at a height that says i (so frames differ)."""
    pictures = []
    for i in range(frames):
        picture = np.full((48, 64, 3), 40, dtype=np.uint8)
        picture[(i * 7) % 44 : (i * 7) % 44 + 4] = 230
        picture[:, : i % 64] += 10
        pictures.append(picture)
    options = {"g": str(keyframe_interval), "keyint_min": str(keyframe_interval)}
    return write_video(path, pictures, rate=30, options=options)


class _Counting:
    """A PyAV container that counts its seeks and the frames it decodes."""

    def __init__(self, container) -> None:
        self.container, self.seeks, self.decoded = container, 0, 0

    def seek(self, *args, **kwargs) -> None:
        self.seeks += 1
        self.container.seek(*args, **kwargs)

    def decode(self, stream):
        for frame in self.container.decode(stream):
            self.decoded += 1
            yield frame


def _sample(path: Path, positions: list[int], seek_ahead: int | None) -> tuple[list, _Counting]:
    with av.open(str(path)) as container:
        counting = _Counting(container)
        sampled = frames_at(counting, container.streams.video[0], positions, seek_ahead=seek_ahead)
        return [(round(time, 4), frame.to_ndarray(format="rgb24")) for time, frame in sampled], counting


@pytest.mark.parametrize(("keyframe_interval", "seeks"), [(15, 7), (300, 1)])
def test_seeking_picks_the_frames_one_pass_picks(tmp_path, keyframe_interval, seeks):
    clip = _numbered_clip(tmp_path / "numbered.mp4", 300, keyframe_interval=keyframe_interval)
    positions = np.round(np.linspace(0, 299, 8)).astype(int).tolist()
    one_pass, read_through = _sample(clip, positions, None)
    sought, seeking = _sample(clip, positions, 30)
    assert [t for t, _ in one_pass] == [round(p / 30, 4) for p in positions]
    assert [t for t, _ in sought] == [t for t, _ in one_pass]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(sought, one_pass))
    assert read_through.seeks == 0 and read_through.decoded == 300
    # keyframes every 15 frames: a seek to each gap, and a fraction of the decoding; one keyframe
    # only: the first seek lands back at the start, and the rest of the clip is read through
    assert seeking.seeks == seeks
    if keyframe_interval == 15:
        assert seeking.decoded < 150


def test_read_video_frames_of_a_long_clip_are_its_evenly_spaced_frames(tmp_path):
    clip = _numbered_clip(tmp_path / "long.mp4", 300, keyframe_interval=30)
    frames = read_video_frames(clip, num_frames=5)
    assert [round(f.time, 4) for f in frames] == [0.0, 2.5, 5.0, 7.4667, 9.9667]  # frames 0, 75, 150, 224, 299
    one_pass, _ = _sample(clip, [0, 75, 150, 224, 299], None)
    assert all(np.array_equal(np.asarray(f.image), pixels) for f, (_, pixels) in zip(frames, one_pass))


def test_a_variable_rate_clip_gives_every_sampled_frame_at_its_own_time(tmp_path):
    stamps_ms = [0, 40, 80, 500, 540, 1500, 1540, 3000]  # bursts and pauses, as a phone records
    path = tmp_path / "variable.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        for i, stamp in enumerate(stamps_ms):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 25 * i, dtype=np.uint8), format="rgb24")
            frame.pts, frame.time_base = stamp, Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    frames = read_video_frames(path, num_frames=8)
    assert [round(f.time, 3) for f in frames] == [stamp / 1000 for stamp in stamps_ms]
    assert [round(float(np.asarray(f.image).mean()) / 25) for f in frames] == list(range(8))


def test_a_clip_whose_timestamps_jump_hours_still_gives_every_requested_frame(tmp_path):
    """Half the frames stamped 20 hours later: the rate the timestamps imply misleads seeking
    (it found 4 of 8 frames); the clip is then read through and sampled by frame count."""
    jump = 20 * 3600 * 8
    stamps = [*range(40), *(jump + i for i in range(40))]
    path = tmp_path / "stretched.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width = stream.height = 64
        stream.pix_fmt, stream.options = "yuv420p", {"g": "12"}
        stream.codec_context.time_base = Fraction(1, 8)
        for i, stamp in enumerate(stamps):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 3, dtype=np.uint8), format="rgb24")
            frame.pts, frame.time_base = stamp, Fraction(1, 8)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    frames = read_video_frames(path, num_frames=8)
    assert len(frames) == 8
    assert [round(frame.time) for frame in frames][-1] > 20 * 3600  # the file's own times are kept
