"""The floor of an app round trip: a Gradio app whose ``/caption`` takes the same photo upload
and returns a fixed string without any model. ``benchmarks.run`` times it beside ``app.py``,
so the table shows what Gradio and ``gradio_client`` cost by themselves on this machine.

    python benchmarks/noop_app.py
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402


def build_noop_demo() -> gr.Blocks:
    """A photo in, a constant caption out, queued like the real app."""
    with gr.Blocks() as demo:
        photo = gr.Image(type="filepath")
        caption = gr.Textbox()
        gr.Button("Caption").click(lambda path: "no model", photo, caption, api_name="caption")
    return demo.queue(default_concurrency_limit=2, max_size=64)


if __name__ == "__main__":
    build_noop_demo().launch(ssr_mode=False)
