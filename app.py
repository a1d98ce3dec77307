"""Gradio demo: caption a photo or a short clip and see, for every word, what the model weighed.

    python app.py            # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT)

Set CAPTIONER_CHECKPOINT to serve another checkpoint. All inference goes through
:class:`captioner.Captioner`; this file only builds the UI. Run as a script, the page is built
from the checkpoint's metadata and served first, and the model (torch and all) loads after:
requests that come before it wait for it.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# The app runs on the CPU and compiles no GPU kernels, yet torchvision's import reaches
# torch._dynamo, which imports Triton (the GPU kernel compiler CUDA builds of torch ship with):
# 74 MB of the app's memory. Marked absent, torch goes without it as on its CPU-only builds.
# CAPTIONER_ALLOW_TRITON=1 leaves it importable; a process that has imported it keeps it.
if not os.environ.get("CAPTIONER_ALLOW_TRITON"):
    sys.modules.setdefault("triton", None)

from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from captioner.checkpoint_metadata import default_checkpoint_path, read_metadata  # noqa: E402
from captioner.config import ModelConfig  # noqa: E402
from captioner.malloc import bound_heap_growth, release_free_memory  # noqa: E402
from captioner.media import MediaError, check_photo, load_image, register_image_plugins  # noqa: E402
from captioner.options import DEFAULT_MAX_LENGTH, DEFAULT_TOP_K, stored_decoding  # noqa: E402
from captioner.presentation import (  # noqa: E402
    attention_overlays,
    concept_summary,
    highlighted_words,
    step_chart,
    steps_table,
)

if TYPE_CHECKING:  # torch comes with these; the app imports them once its page is served
    from captioner import Captioner, CaptionResult, VideoCaptionResult

DEMO_DIR = Path(__file__).parent / "demo"
DECODER_TITLES = {  # the page's name for each registered decoder (others: "LSTM decoder")
    "show_and_tell": "LSTM decoder",
    "soft_attention": "soft-attention LSTM decoder",
    "concept_attention": "soft-attention LSTM decoder that reads the encoder's ImageNet concepts",
}
MAX_FILE_SIZE = "20mb"
MAX_VIDEO_FRAMES = 1800  # a clip's frames are sampled from its first 1,800 (a minute at 30 fps)
VIDEO_SEGMENTS = 4
OVERLAY_SIZE = 256  # width of each attention heatmap picture
_EXIF_IMAGE_UNIQUE_ID = 0xA420
THEME = gr.themes.Soft(
    font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
)  # system fonts only: nothing is fetched from the web


class PhotoInput(gr.Image):
    """An image input whose unreadable uploads become a clear message, not a server error."""

    @classmethod
    def get_block_name(cls) -> str:
        return "image"

    def preprocess(self, payload):  # noqa: ANN001, ANN201 - Gradio's signature
        if payload is not None:  # Gradio opens uploads with every format Pillow has: check ours first
            try:
                url = payload.url or ""
                check_photo(base64.b64decode(url.partition(",")[2]) if url.startswith("data:") else payload.path)
            except MediaError as error:
                raise gr.Error(f"Could not read this image: {error}.") from error
            except (ValueError, TypeError) as error:  # a data URL that is not base64, no path
                raise gr.Error("This upload is not an image file.") from error
        try:
            return super().preprocess(payload)
        except Image.DecompressionBombError as error:
            raise gr.Error(f"This image is too large to process ({error}).") from error
        except Exception as error:  # the decoder's own error types
            raise gr.Error("This file is not an image we can read (JPEG, PNG, WebP, HEIC, GIF, ...).") from error


GREEDY, BEAM = "greedy", "beam search"
# A step of the page's own: resolves once the browser has drawn a frame, so that the caption
# shows before the events chained after it send their outputs and draw their progress
_AFTER_PAINT = "() => new Promise((done) => requestAnimationFrame(() => setTimeout(done, 0)))"
# The page's name for the photo it shows (its upload's address), sent with the photo when it
# arrives and returned with its caption, so that a caption made for another photo is never shown
_PHOTO_KEY = "((photo) => (photo && (photo.url || photo.path)) || null)"
_WITH_PHOTO_KEY = f"(photo, key, ...settings) => [photo, {_PHOTO_KEY}(photo), ...settings]"
# A click's first step, in the page: the caption made as the photo arrived, where it was made for
# the photo shown and with the settings shown (the same options as _options); otherwise the
# caption box as it is, and the server's answer, which always follows, brings the caption
_SHOW_READY = f"""(ready, photo, shown, decoding, beamSize, topK, maxLength, requireConcepts) => {{
    if (!ready) return shown;
    const made = JSON.parse(ready);
    const now = {{
        beam_size: decoding === "{BEAM}" ? Math.trunc(beamSize) : 1,
        top_k: Math.trunc(topK),
        max_length: Math.trunc(maxLength),
        require_concepts: Number(requireConcepts),
    }};
    const same = Object.keys(now).every((key) => Number(made.options[key]) === now[key]);
    return same && made.photo !== null && made.photo === {_PHOTO_KEY}(photo) ? made.caption : shown;
}}"""


def _options(decoding: str, beam_size: float, top_k: float, max_length: float, require_concepts: float) -> dict:
    return {
        "beam_size": int(beam_size) if decoding == BEAM else 1,
        "top_k": int(top_k),
        "max_length": int(max_length),
        "require_concepts": float(require_concepts),
    }


@dataclass(frozen=True)
class Shown:
    """A session's last result and what it was made from: the chained events and the word
    chart read it instead of running the model again."""

    source: str  # the photo's or clip's file (Gradio names an upload by its content)
    options: dict
    result: CaptionResult

    def matches(self, source: str | None, options: dict) -> bool:
        return source == self.source and options == self.options


def _shown_for(
    result_of: Callable[[str | None, dict], CaptionResult], source: str | None, options: dict, kept: Shown | None
) -> Shown:
    """``kept`` where it is this photo's or clip's result with these options, else ``result_of`` it."""
    if kept is not None and kept.matches(source, options):
        return kept
    return Shown(source, options, result_of(source, options))


def _own_copy(picture: Image.Image) -> Image.Image:
    """The picture tagged with a fresh EXIF ImageUniqueID. Gradio caches an output picture under
    the hash of its bytes and writes that file non-atomically, so two concurrent requests with
    the same picture (the same clip) could otherwise serve each other a half-written file."""
    copy = picture.copy()
    exif = copy.getexif()
    exif[_EXIF_IMAGE_UNIQUE_ID] = uuid.uuid4().hex
    copy.info["exif"] = exif.tobytes()
    return copy


def _word_choices(result: CaptionResult) -> list[tuple[str, int]]:
    return [(f"{n + 1}. {step.word}", n) for n, step in enumerate(result.steps)]


def _timeline(result: VideoCaptionResult) -> list[tuple[Image.Image, str]]:
    return [(_own_copy(s.thumbnail), f"{s.start:.1f}-{s.end:.1f} s: {s.result.caption}") for s in result.segments]


def _details(result: CaptionResult) -> tuple:
    """What the app shows besides the caption: coloured words, step table, chart, word picker, concepts."""
    return (
        highlighted_words(result),
        steps_table(result),
        step_chart(result, 0),
        gr.Dropdown(choices=_word_choices(result), value=0 if result.steps else None),
        concept_summary(result),
    )


class LoadingCaptioner:
    """The app's captioner, loaded once (:meth:`load`); requests that come before it wait for it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._ready = threading.Event()
        self._captioner: Captioner | None = None
        self._error: BaseException | None = None

    def load(self) -> Captioner:
        """Import the library (and torch) and load the checkpoint; a failure is kept for the requests."""
        try:
            from captioner.captioner import Captioner

            self._captioner = Captioner.load(self.path, trace_encoder=False)
            return self._captioner
        except BaseException as error:
            self._error = error
            raise
        finally:
            self._ready.set()

    def get(self) -> Captioner:
        """The captioner, once loaded."""
        self._ready.wait()
        if self._captioner is None:
            raise gr.Error(f"The model could not be loaded ({self._error}).")
        return self._captioner


def build_demo(model: LoadingCaptioner) -> gr.Blocks:
    """The Blocks app around a captioner (loaded once, shared by all requests), built from its
    checkpoint's metadata alone: the page can be served while the model loads."""
    register_image_plugins()  # Gradio opens uploaded photos with Pillow before we see them: HEIC too
    metadata = read_metadata(model.path)
    stored = stored_decoding(metadata.get("decoding", {}))
    # the checkpoint's own default decoding (chosen on val) is the app's default, as the library's and the CLI's
    default_decoding, default_beam = (BEAM, stored["beam_size"]) if stored["beam_size"] > 1 else (GREEDY, 3)
    default_require = stored["require_concepts"]

    def photo_result(image: str | None, options: dict) -> CaptionResult:
        if image is None:
            raise gr.Error("Add a photo first (upload, drag and drop, paste or webcam).")
        try:
            return model.get().caption(image, **options)
        except MediaError as error:
            raise gr.Error(f"Could not read this image: {error}.") from error

    def clip_result(video: str | None, options: dict) -> VideoCaptionResult:
        if video is None:
            raise gr.Error("Add a video clip first.")
        try:
            return model.get().caption_video(
                video, num_frames=2 * VIDEO_SEGMENTS, segments=VIDEO_SEGMENTS, max_frames=MAX_VIDEO_FRAMES, **options
            )
        except MediaError as error:
            raise gr.Error(f"Could not read this video: {error}.") from error
        finally:
            release_free_memory()  # the clip's decoded frames were freed: give their pages back

    def photo_for(image: str | None, options: dict, kept: Shown | None = None) -> Shown:
        return _shown_for(photo_result, image, options, kept)

    def clip_for(video: str | None, options: dict, kept: Shown | None = None) -> Shown:
        return _shown_for(clip_result, video, options, kept)

    def photo_caption(image: str | None, ready: Shown | None, *settings: Any) -> tuple[str, Shown]:
        """A click's first answer: the caption alone (so that it shows at once) and the session's
        result; the one captioned when the photo arrived, where its settings are still these."""
        shown = photo_for(image, _options(*settings), ready)
        return shown.result.caption, shown

    def photo_arrived(image: str | None, key: str | None, *settings: Any) -> tuple[Shown | None, str]:
        """Caption a photo as it arrives, with the current settings, for the click to show: the
        session's result, and for the page its caption, options and the page's name for the
        photo (``key``; JSON, "" for none)."""
        if image is None:
            return None, ""
        try:
            shown = photo_for(image, _options(*settings))
        except (gr.Error, ValueError):
            return None, ""  # the click reports it
        return shown, json.dumps({"photo": key, "options": shown.options, "caption": shown.result.caption})

    def clip_caption(video: str | None, *settings: Any) -> tuple[str, Shown]:
        shown = clip_for(video, _options(*settings))
        return shown.result.caption, shown

    def photo_details(shown: Shown) -> tuple:
        return _details(shown.result)

    def clip_details(shown: Shown) -> tuple:
        """The clip's details and its timeline of segment captions, shown (it is hidden until then)."""
        return *_details(shown.result), gr.update(value=_timeline(shown.result), visible=True)

    def caption_image(
        image: str | None,
        decoding: str = default_decoding,
        beam_size: float = default_beam,
        top_k: float = DEFAULT_TOP_K,
        max_length: float = DEFAULT_MAX_LENGTH,
        require_concepts: float = default_require,
    ) -> tuple:
        """The API's /caption: the caption and everything shown with it, in one answer."""
        caption, shown = photo_caption(image, None, decoding, beam_size, top_k, max_length, require_concepts)
        return caption, *_details(shown.result), shown

    def caption_video(
        video: str | None,
        decoding: str = default_decoding,
        beam_size: float = default_beam,
        top_k: float = DEFAULT_TOP_K,
        max_length: float = DEFAULT_MAX_LENGTH,
        require_concepts: float = default_require,
    ) -> tuple:
        """The API's /caption_video: as /caption, and the timeline of segment captions."""
        caption, shown = clip_caption(video, decoding, beam_size, top_k, max_length, require_concepts)
        return caption, *_details(shown.result), shown, _timeline(shown.result)

    def image_attention(
        image: str | None,
        decoding: str = default_decoding,
        beam_size: float = default_beam,
        top_k: float = DEFAULT_TOP_K,
        max_length: float = DEFAULT_MAX_LENGTH,
        require_concepts: float = default_require,
        shown: Shown | None = None,
    ) -> list:
        """Per-word heatmaps over the photo for its caption with these settings (the session's
        result when it is that one, as after a click; otherwise captioned here)."""
        options = _options(decoding, beam_size, top_k, max_length, require_concepts)
        result = photo_for(image, options, shown).result
        try:
            picture = load_image(image, min_size=OVERLAY_SIZE)
        except MediaError as error:
            raise gr.Error(f"Could not read this image: {error}.") from error
        overlays = attention_overlays(picture, result, size=OVERLAY_SIZE)
        return [(_own_copy(overlay), label) for overlay, label in overlays]

    def video_attention(
        video: str | None,
        decoding: str = default_decoding,
        beam_size: float = default_beam,
        top_k: float = DEFAULT_TOP_K,
        max_length: float = DEFAULT_MAX_LENGTH,
        require_concepts: float = default_require,
        shown: Shown | None = None,
    ) -> list:
        """Per-word heatmaps over the clip's middle frame (its caption attends to all frames' mean)."""
        options = _options(decoding, beam_size, top_k, max_length, require_concepts)
        result = clip_for(video, options, shown).result
        if not getattr(result, "segments", None):  # a clip's result has its segments' middle frames
            return []
        middle = result.segments[len(result.segments) // 2].thumbnail
        return [(_own_copy(picture), label) for picture, label in attention_overlays(middle, result)]

    def show_step(shown: Shown | None, index: int | None) -> pd.DataFrame | None:
        if shown is None or index is None:
            return None
        return step_chart(shown.result, int(index))

    def with_this_model() -> tuple:
        """What the page shows only for some decoders (attention heatmaps, required concepts), set
        once the model is loaded."""
        captioner = model.get()
        attends, reads_concepts = captioner.has_attention, captioner.checkpoint.model.reads_concepts
        return gr.update(visible=attends), gr.update(visible=not attends), gr.update(visible=reads_concepts)

    encoder_name = metadata["encoder"]["name"].replace("efficientnet_lite", "EfficientNet-Lite")
    decoder_name = DECODER_TITLES.get(ModelConfig.from_dict(metadata["config"]).decoder, "LSTM decoder")
    # delete_cache: result images Gradio writes to its cache are removed after an hour
    with gr.Blocks(title="LSTM image captioner", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(
            f"# Image captioner\n{encoder_name} encoder → linear glue → {decoder_name}, trained on "
            "Flickr8k. Upload a photo or a short clip; every word comes with the top-k words the "
            "model weighed. Research demo: the training data is for research use only."
        )
        with gr.Row():
            with gr.Column(scale=1):
                with gr.Tabs():
                    with gr.Tab("Photo"):
                        photo = PhotoInput(
                            type="filepath",
                            sources=["upload", "clipboard", "webcam"],
                            label="Photo",
                            elem_id="photo",
                        )
                        photo_button = gr.Button("Caption photo", variant="primary", elem_id="caption_photo")
                        gr.Examples(sorted(str(p) for p in DEMO_DIR.glob("*.jpg")), inputs=photo)
                    with gr.Tab("Video"):
                        video = gr.Video(sources=["upload"], label="Clip", elem_id="video")
                        video_button = gr.Button("Caption clip", variant="primary")
                        gr.Examples(sorted(str(p) for p in DEMO_DIR.glob("*.mp4")), inputs=video)
                        timeline = gr.Gallery(  # shown once a clip is captioned
                            label="Clip timeline (segment captions)",
                            columns=2,
                            height="auto",
                            visible=False,
                            elem_id="timeline",
                            format="jpeg",
                        )
                with gr.Accordion("Decoding", open=True):
                    decoding = gr.Radio([GREEDY, BEAM], value=default_decoding, label="Decoding")
                    beam_size = gr.Slider(2, 8, value=default_beam, step=1, label="Beam size (beam search)")
                    top_k = gr.Slider(1, 10, value=DEFAULT_TOP_K, step=1, label="Top-k words shown per step")
                    max_length = gr.Slider(5, 30, value=DEFAULT_MAX_LENGTH, step=1, label="Maximum words")
                    require_concepts = gr.Slider(  # constrained beam search (concept decoders)
                        0,
                        1,
                        value=default_require,
                        step=0.05,
                        label="Name every concept at least this probable (0 = off)",
                        visible=default_require > 0,  # and for every concept decoder, once it is loaded
                    )
            with gr.Column(scale=1):
                caption = gr.Textbox(label="Caption", elem_id="caption", interactive=False)
                concepts = gr.Markdown(elem_id="concepts")  # the ImageNet concepts behind the caption
                coloured = gr.HighlightedText(
                    label="Words coloured by probability (darker = more probable)",
                    show_legend=False,
                    elem_id="coloured",
                )
                with gr.Row():
                    word = gr.Dropdown(label="Top-k of word", choices=[], interactive=True)
                chart = gr.BarPlot(x="word", y="probability", sort="-y", y_lim=[0, 1], label="Top-k at the chosen word")
                attention = gr.Gallery(
                    label="Where the model looked for each word (attention)",
                    columns=4,
                    height="auto",
                    elem_id="attention",
                    format="jpeg",  # cheaper to encode than PNG
                )
                no_attention = gr.Markdown(
                    "*Attention heatmaps:* this checkpoint has no attention (the image enters the "
                    "LSTM once, Show-and-Tell style), so there is no per-word map to show.",
                    visible=False,
                )
        table = gr.Dataframe(label="Every step: chosen word, its probability, top-k", elem_id="steps")
        last = gr.State(time_to_live=3600)  # the session's last result (a Shown), freed after an hour
        ready = gr.State(time_to_live=3600)  # the photo's caption, made as the photo arrived (a Shown)
        ready_caption = gr.Textbox(visible=False)  # the same caption and its options, for the page
        photo_key = gr.Textbox(visible=False)  # the page's name for the photo (_WITH_PHOTO_KEY)

        settings = [decoding, beam_size, top_k, max_length, require_concepts]
        details = [coloured, table, chart, word, concepts]
        # The API's endpoints answer everything at once (no trigger: API only). A click answers
        # the caption alone, which the browser shows at once; the details follow from the
        # session's result in a chained event, then the heatmaps (an image per word). A click and
        # an API call of the same kind share one concurrency limit (the queue's default, 2).
        gr.on(
            [], caption_image, [photo, *settings], [caption, *details, last], api_name="caption", concurrency_id="photo"
        )
        gr.on(
            [],
            caption_video,
            [video, *settings],
            [caption, *details, last, timeline],
            api_name="caption_video",
            concurrency_id="clip",
        )
        ui = {"api_visibility": "private"}  # what the page runs, in steps; the API has the endpoints above
        # a photo is captioned as it arrives (16 ms of CPU), so that the click has only to show it
        photo.change(
            photo_arrived,
            [photo, photo_key, *settings],
            [ready, ready_caption],
            js=_WITH_PHOTO_KEY,
            api_name="photo_arrived",
            concurrency_id="photo",
            show_progress="hidden",
            **ui,
        )
        # a click shows that caption from the page, then the server's answer (the same caption,
        # or the one these settings give) brings the session's result for the details
        photo_shown = photo_button.click(
            None, [ready_caption, photo, caption, *settings], caption, js=_SHOW_READY, api_name="photo_ready", **ui
        )
        photo_shown = photo_shown.then(
            photo_caption,
            [photo, ready, *settings],
            [caption, last],
            api_name="photo",
            concurrency_id="photo",
            show_progress="minimal",  # a small spinner: the full overlay's drawing delayed the caption
            **ui,
        )
        photo_shown = photo_shown.success(None, js=_AFTER_PAINT, api_name="photo_painted", **ui)
        photo_shown = photo_shown.then(photo_details, last, details, api_name="photo_details", **ui)
        clip_shown = video_button.click(
            clip_caption, [video, *settings], [caption, last], api_name="clip", concurrency_id="clip", **ui
        )
        clip_shown = clip_shown.success(None, js=_AFTER_PAINT, api_name="clip_painted", **ui)
        clip_shown = clip_shown.then(clip_details, last, [*details, timeline], api_name="clip_details", **ui)
        # heatmaps: none (an empty gallery, hidden) for a decoder that does not attend
        photo_shown.success(image_attention, [photo, *settings, last], attention, api_name="attention")
        clip_shown.success(video_attention, [video, *settings, last], attention, api_name="video_attention")
        word.input(show_step, [last, word], chart, api_name="step_chart", **ui)
        demo.load(with_this_model, None, [attention, no_attention, require_concepts], show_progress="hidden", **ui)
    return demo


bound_heap_growth()  # a public demo runs for weeks: keep its memory flat (see captioner/malloc.py)
model = LoadingCaptioner(os.environ.get("CAPTIONER_CHECKPOINT") or default_checkpoint_path())
demo = build_demo(model)
demo.queue(default_concurrency_limit=2, max_size=64)

if __name__ == "__main__":
    demo.launch(max_file_size=MAX_FILE_SIZE, ssr_mode=False, theme=THEME, prevent_thread_lock=True)
    try:
        model.load()  # the page is served meanwhile; requests wait for the model
    except BaseException:
        demo.close()
        raise
    model.get().trace_encoder()  # once the app answers: the same captions, less time per image
    demo.block_thread()
else:  # imported (tests, Gradio's reload mode): the model first
    model.load()
