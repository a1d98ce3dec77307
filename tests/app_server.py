"""Start the real demo (shipped checkpoint) on a free loopback port for the app tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@contextmanager
def running_app() -> Iterator[str]:
    """Import ``app`` (loads the model once), serve it on 127.0.0.1, yield its URL."""
    import app

    _, url, _ = app.demo.launch(
        server_name="127.0.0.1",
        prevent_thread_lock=True,
        ssr_mode=False,
        max_file_size=app.MAX_FILE_SIZE,
        quiet=True,
    )
    try:
        yield url.rstrip("/")
    finally:
        app.demo.close()
