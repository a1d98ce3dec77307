"""A short, seeded fuzz run: mutated photos and clips give a caption or a MediaError, never
another exception, through ``load_image``/``read_video_frames``, the Captioner, the CLI and
the app's API. The long run is ``python tests/fuzz.py`` (see its docstring)."""

from __future__ import annotations

import functools
import json
import random
import re
import tempfile
import warnings
from pathlib import Path

import pytest
from app_server import running_app
from fuzz import clip_seeds, mutate, photo_seeds
from gradio_client import Client, handle_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from captioner import Captioner, MediaError
from captioner.cli import main as cli_main
from captioner.media import load_image, read_video_frames

pytestmark = [pytest.mark.fuzz, pytest.mark.slow]
SEEDED = settings(derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))


@functools.cache
def _photos() -> list[tuple[str, bytes]]:
    return sorted(photo_seeds().items())


@functools.cache
def _clips() -> list[tuple[str, bytes]]:
    return sorted(clip_seeds(Path(tempfile.mkdtemp(prefix="fuzz-seeds-"))).items())


def _mutated(rng: random.Random, count: int, folder: Path) -> list[Path]:
    """``count`` mutated photos and clips, alternating, written to ``folder``."""
    paths = []
    for n in range(count):
        name, data = rng.choice(_clips() if n % 4 == 3 else _photos())
        path = folder / f"{n:03d}{Path(name).suffix or '.' + name}"
        path.write_bytes(mutate(data, rng))
        paths.append(path)
    return paths


def test_there_is_a_seed_for_every_allowed_format_and_most_containers():
    assert {Path(name).suffix or "." + name for name, _ in _photos()} >= {".jpeg", ".png", ".webp", ".gif", ".heic"}
    assert len(_clips()) >= 10


@settings(SEEDED, max_examples=1000)
@given(seed=st.integers(0, 10**6), rng=st.randoms(use_true_random=False))
def test_a_mutated_photo_loads_as_rgb_or_raises_a_media_error(seed, rng):
    name, data = _photos()[seed % len(_photos())]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # decoders warn about the damage they read past
        try:
            image = load_image(mutate(data, rng))
        except MediaError as error:
            assert str(error)
            return
    assert isinstance(image, Image.Image) and image.mode == "RGB"


@settings(SEEDED, max_examples=150)
@given(seed=st.integers(0, 10**6), rng=st.randoms(use_true_random=False))
def test_a_mutated_clip_gives_frames_or_raises_a_media_error(tmp_path_factory, seed, rng):
    name, data = _clips()[seed % len(_clips())]
    path = tmp_path_factory.mktemp("clip") / f"clip{name}"
    path.write_bytes(mutate(data, rng))
    try:
        frames = read_video_frames(path, num_frames=4)
    except MediaError as error:
        assert str(error)
        return
    assert 1 <= len(frames) <= 4 and all(frame.image.mode == "RGB" for frame in frames)


def test_mutated_inputs_through_the_captioner_and_the_cli(shipped: Captioner, tmp_path, capsys):
    paths = _mutated(random.Random(7), 24, tmp_path)
    captioned = 0
    for path in paths:
        try:
            result = shipped.caption_video(path) if path.suffix in _video_suffixes() else shipped.caption(path)
            captioned += bool(result.caption)
        except MediaError as error:
            assert str(error)
    assert cli_main(["caption", "--json", *map(str, paths)]) in (0, 1)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == len(paths)
    assert sum("caption" in line for line in lines) == captioned


def test_mutated_inputs_through_the_app_get_a_message_and_it_keeps_serving(dog_photo, tmp_path):
    paths = _mutated(random.Random(11), 8, tmp_path)
    with running_app() as url:
        client = Client(url, verbose=False)
        for path in paths:
            endpoint = "/caption_video" if path.suffix in _video_suffixes() else "/caption"
            try:
                client.predict(handle_file(str(path)), api_name=endpoint)
            except Exception as error:  # gradio_client's AppError carries the gr.Error message
                assert re.search(r"Could not read|not an image|too large|not a video", str(error)), str(error)
        caption, *_ = client.predict(handle_file(str(dog_photo)), api_name="/caption")
        assert caption


def _video_suffixes() -> set[str]:
    from captioner.media import VIDEO_EXTENSIONS

    return set(VIDEO_EXTENSIONS)
