"""The Gradio app in-process, called through ``gradio_client`` like any API user would."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest
from app_server import running_app
from gradio_client import Client, handle_file
from media_helpers import mentions_dog, write_clip
from PIL import Image

from benchmarks.app_load import loopback_client
from captioner.cli import main as cli_main

DEMO = Path(__file__).resolve().parent.parent / "demo"


# the settings after the decoding radio, as the page sends them: beam size, top-k, maximum words and
# the probability from which a concept must be named (the checkpoint's default)
SETTINGS = (3, 5, 20, 0.8)


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


def _event(api_name: str):
    """The app's event of that API name (the app is imported by the ``client`` fixture)."""
    import app

    return next(event for event in app.demo.fns.values() if event.api_name == api_name)


def _heatmap_words(heatmaps: list[dict]) -> list[str]:
    return [item["caption"].split()[0] for item in heatmaps]


def test_attention_heatmaps_are_those_of_the_photo_asked_for(client, dog_photo):
    """/attention takes the photo and settings and draws one heatmap per word of their caption,
    from a client that never called /caption as from one whose last caption was another photo's."""
    fresh = Client(client.src, verbose=False)
    caption, *_ = fresh.predict(handle_file(str(dog_photo)), "beam search", 3, api_name="/caption")
    assert (
        _heatmap_words(
            Client(client.src, verbose=False).predict(
                handle_file(str(dog_photo)), "beam search", 3, api_name="/attention"
            )
        )
        == caption.split()
    )
    fresh.predict(handle_file(str(DEMO / "chelsea.jpg")), api_name="/caption")
    greedy, *_ = fresh.predict(handle_file(str(dog_photo)), api_name="/caption")
    fresh.predict(handle_file(str(DEMO / "chelsea.jpg")), api_name="/caption")  # the session's last result
    assert _heatmap_words(fresh.predict(handle_file(str(dog_photo)), api_name="/attention")) == greedy.split()


def test_a_click_answers_the_caption_alone_and_the_details_follow(client, dog_photo):
    """A click's event answers the caption (which the browser then shows at once) and the session's
    result; chained on its success, once the caption is drawn, the details are built from that
    result, as the API's /caption gives them in one answer; then the heatmaps."""
    click, painted, details = _event("photo"), _event("photo_painted"), _event("photo_details")
    assert [block.elem_id for block in click.outputs] == ["caption", None]  # the caption and the state
    # a step in the page alone waits for the frame that shows the caption; then the details
    assert painted.trigger_after == click._id and painted.trigger_only_on_success
    assert painted.fn is None and "requestAnimationFrame" in painted.js
    assert details.trigger_after == painted._id
    heatmaps = _event("attention")
    assert heatmaps.trigger_after == details._id and heatmaps.trigger_only_on_success
    caption, shown = click.fn(str(dog_photo), None, "greedy", *SETTINGS)
    words, table, *_ = details.fn(shown)
    api_caption, api_words, api_table, *_ = _event("caption").fn(str(dog_photo))
    assert caption == api_caption and mentions_dog(caption)
    assert words == api_words and table.equals(api_table)


def test_a_photo_is_captioned_as_it_arrives_and_the_click_shows_that_caption(client, dog_photo):
    """The photo's change event captions it with the current settings, for the session and, with
    its options and the page's name for the photo, for the page; a click first shows that caption
    from the page (tests/test_browser.py), then its server step answers that result where the
    settings are the same, and captions again where they are not."""
    arrived, ready_step, click = _event("photo_arrived"), _event("photo_ready"), _event("photo")
    assert arrived.show_progress == "hidden" and "photo.url" in arrived.js
    assert ready_step.fn is None and "made.caption" in ready_step.js and click.trigger_after == ready_step._id
    ready, for_page = arrived.fn(str(dog_photo), "blob:photo-1", "greedy", *SETTINGS)
    assert ready is not None and mentions_dog(ready.result.caption)
    assert json.loads(for_page) == {"photo": "blob:photo-1", "options": ready.options, "caption": ready.result.caption}
    caption, shown = click.fn(str(dog_photo), ready, "greedy", *SETTINGS)
    assert shown is ready and caption == ready.result.caption
    _, other = click.fn(str(dog_photo), ready, "beam search", *SETTINGS)
    assert other is not ready and other.options["beam_size"] == 3
    assert arrived.fn(None, None, "greedy", *SETTINGS) == (None, "")
    assert arrived.fn(str(dog_photo.with_name("missing.jpg")), "x", "greedy", *SETTINGS) == (None, "")


def test_the_clip_timeline_shows_only_for_clips(client, dog_photo, tmp_path):
    """Hidden until a clip is captioned (no empty box beside a photo), then shown with its segments."""
    import app

    (timeline,) = [c for c in app.demo.config["components"] if c["props"].get("elem_id") == "timeline"]
    assert timeline["props"]["visible"] is False
    for name in ("photo", "photo_details", "caption"):
        assert "timeline" not in {block.elem_id for block in _event(name).outputs}
    _, shown = _event("clip").fn(str(write_clip(tmp_path / "dog.mp4", dog_photo)), "greedy", *SETTINGS)
    *_, update = _event("clip_details").fn(shown)
    assert update["visible"] is True and len(update["value"]) == 4


def test_the_app_the_cli_and_the_library_give_one_caption_by_default(client, shipped, capsys):
    """The checkpoint's decoding (beam search, chosen on val) is everyone's default: the same photo,
    the same words; under greedy, one click away, each chosen word is the top of its row."""
    photo = DEMO / "flickr8k_dogs.jpg"
    stored = shipped.default_decoding
    assert stored["beam_size"] > 1
    library = shipped.caption(photo).caption
    assert cli_main(["caption", str(photo)]) == 0
    cli = capsys.readouterr().out.rstrip("\n").split("\t")[1]
    caption, *_ = client.predict(handle_file(str(photo)), api_name="/caption")
    assert caption == cli == library
    parameters = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/caption"]["parameters"]
    defaults = {p["parameter_name"]: p["parameter_default"] for p in parameters}
    assert defaults["decoding"] == "beam search" and defaults["beam_size"] == stored["beam_size"]
    caption, _, table, *_ = client.predict(handle_file(str(photo)), "greedy", api_name="/caption")
    assert caption == shipped.caption(photo, beam_size=1).caption
    assert all(row[3].split()[0] == row[1].removesuffix(" ◆") for row in table["data"])


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


def test_the_concepts_behind_a_caption_come_with_it(client, mini_corpus):
    chelsea = Path(__file__).resolve().parent.parent / "demo" / "chelsea.jpg"
    *_, concepts = client.predict(handle_file(str(chelsea)), api_name="/caption")
    assert "Egyptian cat" in concepts and "→ cat" in concepts  # the evidence, whether or not it is used
    copying = mini_corpus / "images" / "2495931537_9b8d4474b6.jpg"  # the shipped decoder copies its dog
    caption, _, table, *_, concepts = client.predict(handle_file(str(copying)), api_name="/caption")
    assert "dog" in caption.split() and "→ dog" in concepts and "in the caption" in concepts
    assert any(row[1] == "dog ◆" for row in table["data"])  # the copied word is marked in the table


def test_a_photo_click_shows_a_small_spinner_not_the_overlay(client):
    """Drawing the full progress overlay over the caption delayed it (benchmarks.browser_click)."""
    assert _event("photo").show_progress == "minimal"
    assert _event("photo_arrived").show_progress == "hidden"


def test_a_confident_concept_is_named_and_can_be_switched_off(client):
    """By default (the checkpoint's 0.9) the espresso's caption names the coffee the head is sure of
    and marks it; at 0 the decoder's own caption, which puts the man on water, is back. Chelsea's
    cat the decoder copies by itself, required or not."""
    demo = Path(__file__).resolve().parent.parent / "demo"
    caption, _, table, *_, concepts = client.predict(handle_file(str(demo / "coffee.jpg")), api_name="/caption")
    assert "coffee" in caption.split() and "coffee ◆" in [row[1] for row in table["data"]]
    assert "in the caption" in concepts
    free, *_ = client.predict(handle_file(str(demo / "coffee.jpg")), "greedy", 3, 5, 20, 0, api_name="/caption")
    assert "coffee" not in free.split()
    free, _, table, *_ = client.predict(
        handle_file(str(demo / "chelsea.jpg")), "greedy", 3, 5, 20, 0, api_name="/caption"
    )
    assert "cat ◆" in [row[1] for row in table["data"]]


def test_the_page_is_built_without_torch_and_requests_wait_for_the_model(tmp_path):
    """What app.py imports before it serves the page needs no torch; a request that comes before
    the model is loaded waits for it, and a model that failed to load is a message."""
    import subprocess
    import sys

    modules = "checkpoint_metadata config malloc media options presentation".split()
    check = f"import sys, gradio, {', '.join('captioner.' + m for m in modules)}; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", check], capture_output=True, text=True).stdout.strip() == "False"
    import gradio as gr

    import app

    waiting = app.LoadingCaptioner(app.model.path)
    threading.Timer(0.2, waiting.load).start()
    assert waiting.get().checkpoint.config == app.model.get().checkpoint.config  # waited for the load
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    failed = app.LoadingCaptioner(broken)
    with pytest.raises(Exception, match="not a readable safetensors checkpoint"):
        failed.load()
    with pytest.raises(gr.Error, match="could not be loaded"):
        failed.get()


def test_the_page_shows_what_this_model_has(client):
    """Built from the checkpoint's metadata, the page learns from the loaded model whether to show
    heatmaps and the required-concepts slider (the shipped decoder has both)."""
    attention, no_attention, slider = _event("with_this_model").fn()
    assert attention["visible"] and not no_attention["visible"] and slider["visible"]
