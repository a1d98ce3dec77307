"""The floor of an app round trip: a Gradio app whose ``/caption`` takes the same photo upload
and returns the photo's file name without any model. ``benchmarks.run`` times it beside
``app.py`` through ``gradio_client``, and ``benchmarks.browser_click`` in a browser, so the
tables show what Gradio, ``gradio_client`` and the browser cost by themselves on this machine.

    python benchmarks/noop_app.py
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402


def build_noop_demo() -> gr.Blocks:
    """A photo in, its file name out (a caption that changes with the photo), queued like the
    real app; the same element ids as the app's photo, button and caption."""
    with gr.Blocks() as demo:
        photo = gr.Image(type="filepath", elem_id="photo")
        caption = gr.Textbox(elem_id="caption")
        gr.Button("Caption photo", elem_id="caption_photo").click(
            lambda path: Path(path).name if path else "", photo, caption, api_name="caption"
        )
    return demo.queue(default_concurrency_limit=2, max_size=64)


if __name__ == "__main__":
    build_noop_demo().launch(ssr_mode=False)
