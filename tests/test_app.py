"""The Gradio app in-process, called through ``gradio_client`` like any API user would."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from app_server import running_app
from gradio_client import Client, handle_file
from media_helpers import mentions_dog, write_clip
from PIL import Image

from benchmarks.app_load import loopback_client


@pytest.fixture(scope="module")
def client():
    with running_app() as url:
        yield Client(url, verbose=False)


def _check_step_table(table: dict, k: int) -> None:
    assert table["headers"][:3] == ["#", "word", "p(word)"]
    assert len(table["headers"]) == 3 + k
    assert table["data"]
    for row in table["data"]:
        alternatives = [re.fullmatch(r"(\S+) ([0-9.]+)", cell).groups() for cell in row[3:]]
        probs = [float(p) for _, p in alternatives]
        assert len(alternatives) == k
        assert probs == sorted(probs, reverse=True) and all(0 <= p <= 1 for p in probs)
        assert 0 <= row[2] <= 1


def test_endpoints_are_named(client):
    assert {"/caption", "/caption_video", "/attention", "/video_attention"} <= set(
        client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    )


def test_caption_with_only_the_file(client, dog_photo):
    caption, coloured, table, *_ = client.predict(handle_file(str(dog_photo)), api_name="/caption")
    assert mentions_dog(caption)
    assert [item["token"].strip() for item in coloured] == caption.split()
    _check_step_table(table, k=5)
    assert [row[1] for row in table["data"]] == caption.split()


def test_a_client_sharing_one_ssl_context_gets_the_same_answer(client, dog_photo):
    """The benchmarks' client (benchmarks.app_load.loopback_client) changes set-up cost, not results."""
    fast = loopback_client(client.src)
    assert (
        fast.predict(handle_file(str(dog_photo)), api_name="/caption")[:3]
        == client.predict(handle_file(str(dog_photo)), api_name="/caption")[:3]
    )


def test_attention_heatmaps_follow_the_caption(client, dog_photo):
    """/caption answers first; the chained /attention draws one heatmap per word of that caption."""
    caption, *_ = client.predict(handle_file(str(dog_photo)), "beam search", 3, api_name="/caption")
    heatmaps = client.predict(handle_file(str(dog_photo)), api_name="/attention")
    assert [item["caption"].split()[0] for item in heatmaps] == caption.split()


def test_caption_with_beam_search_and_top_k(client, dog_photo):
    caption, _, table, *_ = client.predict(handle_file(str(dog_photo)), "beam search", 4, 7, 12, api_name="/caption")
    assert 0 < len(caption.split()) <= 12
    _check_step_table(table, k=7)


def test_caption_video_with_timeline(client, tmp_path, dog_photo):
    clip = write_clip(tmp_path / "dog.mp4", dog_photo)
    caption, _, table, *_, timeline = client.predict(handle_file(str(clip)), api_name="/caption_video")
    assert mentions_dog(caption)
    _check_step_table(table, k=5)
    assert len(timeline) == 4
    assert all(re.match(r"\d+\.\d-\d+\.\d s: \w+", item["caption"]) for item in timeline)
    # the same clip again: its pictures get files of their own (never one being rewritten by a
    # concurrent identical request), and they are complete JPEGs
    *_, again = client.predict(handle_file(str(clip)), api_name="/caption_video")
    first, second = ([item["image"] for item in t] for t in (timeline, again))
    assert not set(first) & set(second)
    for path in first + second:
        with Image.open(path) as picture:
            assert picture.format == "JPEG" and picture.size[0] > 0
            picture.load()


@pytest.mark.parametrize(
    ("name", "content", "endpoint", "message"),
    [
        ("notes.jpg", b"just text, not a photo", "/caption", "not an image"),
        ("empty.png", b"", "/caption", "the file is empty"),
        ("junk.mp4", b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64, "/caption_video", "not a readable video"),
        ("empty.mp4", b"", "/caption_video", "empty"),
    ],
)
def test_bad_inputs_are_messages_and_the_next_call_works(client, tmp_path, dog_photo, name, content, endpoint, message):
    bad = tmp_path / name
    bad.write_bytes(content)
    with pytest.raises(Exception, match=message):
        client.predict(handle_file(str(bad)), api_name=endpoint)
    caption, *_ = client.predict(handle_file(str(dog_photo)), api_name="/caption")
    assert caption


def test_the_concepts_behind_a_caption_come_with_it(client):
    chelsea = Path(__file__).resolve().parent.parent / "demo" / "chelsea.jpg"
    caption, _, table, *_, concepts = client.predict(handle_file(str(chelsea)), api_name="/caption")
    assert "cat" in caption.split()
    assert "→ cat" in concepts and "in the caption" in concepts
    assert any(row[1] == "cat ◆" for row in table["data"])  # the copied word is marked in the table
