"""Hostile and odd inputs through the Captioner, the CLI and the app's API."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from app_server import running_app
from gradio_client import handle_file
from hostile_inputs import HostileCase, make_corpus
from media_helpers import mentions_dog
from PIL import Image

from captioner import Captioner, MediaError
from captioner.cli import main as cli_main
from captioner.media import load_image


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, dog_photo) -> list[HostileCase]:
    return make_corpus(tmp_path_factory.mktemp("hostile"), dog_photo)


def _caption(captioner: Captioner, case: HostileCase) -> str:
    if case.is_video:
        return captioner.caption_video(case.path, max_frames=1800).caption
    return captioner.caption(case.path).caption


def test_corpus_has_at_least_twenty_kinds(corpus):
    assert len({case.kind for case in corpus}) >= 20


def test_captioner_gives_a_caption_or_a_specific_message(shipped: Captioner, corpus):
    for case in corpus:
        if case.error is None:
            assert _caption(shipped, case), case.kind
        else:
            with pytest.raises(MediaError) as error:
                _caption(shipped, case)
            assert re.search(case.error, str(error.value)), (case.kind, str(error.value))
            assert "Traceback" not in str(error.value)


def test_exif_rotated_photo_is_read_upright(corpus, dog_photo):
    rotated = next(case for case in corpus if case.kind == "EXIF-rotated JPEG")
    upright = np.asarray(Image.open(dog_photo).convert("RGB"), dtype=np.float32)
    loaded = np.asarray(load_image(rotated.path), dtype=np.float32)
    assert loaded.shape == upright.shape
    assert np.abs(loaded - upright).mean() < 4  # JPEG re-encoding noise only
    sideways = np.asarray(Image.open(rotated.path).convert("RGB"), dtype=np.float32)
    assert np.abs(sideways - upright).mean() > 20  # the stored pixels really are rotated


@pytest.mark.slow
def test_cli_reports_each_bad_input_and_continues(corpus, capsys):
    code = cli_main(["caption", "--json", *(str(case.path) for case in corpus)])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1 and len(lines) == len(corpus)
    for case, line in zip(corpus, lines):
        if case.error is None:
            assert line.get("caption"), case.kind
        else:
            assert re.search(case.error, line["error"]), (case.kind, line)


@pytest.mark.slow
def test_app_answers_with_messages_and_keeps_serving(corpus, dog_photo):
    from gradio_client import Client

    with running_app() as url:
        client = Client(url, verbose=False)
        for case in corpus:
            endpoint = "/caption_video" if case.is_video else "/caption"
            if case.error is None:
                caption, *_ = client.predict(handle_file(str(case.path)), api_name=endpoint)
                assert caption, case.kind
            else:
                with pytest.raises(Exception) as error:
                    client.predict(handle_file(str(case.path)), api_name=endpoint)
                message = str(error.value)
                assert re.search(case.error + "|not an image|too large", message), (case.kind, message)
                assert "Traceback" not in message
            caption, *_ = client.predict(handle_file(str(dog_photo)), api_name="/caption")
            assert mentions_dog(caption)
