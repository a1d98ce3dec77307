"""Start ``app.py`` in its own process and time round trips through ``gradio_client``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["AppProcess"]

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


class AppProcess:
    """``python app.py`` (or another Gradio script) on a free loopback port, with a client and memory readings."""

    def __init__(self, *, threads: int, script: Path = ROOT / "app.py") -> None:
        env = {
            **os.environ,
            "GRADIO_SERVER_NAME": "127.0.0.1",
            "GRADIO_SERVER_PORT": str(_free_port()),
            "GRADIO_ANALYTICS_ENABLED": "False",
            "OMP_NUM_THREADS": str(threads),
        }
        self.url = f"http://127.0.0.1:{env['GRADIO_SERVER_PORT']}/"
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, str(script)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.client = self._connect(timeout=120)
        self.startup_s = time.perf_counter() - started

    def _connect(self, *, timeout: float):
        from gradio_client import Client

        deadline = time.monotonic() + timeout
        while True:
            try:
                return Client(self.url, verbose=False)
            except Exception:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.5)

    def rss_mb(self) -> float:
        return _rss_mb(self.process.pid)

    def peak_rss_mb(self) -> float:
        return _rss_mb(self.process.pid, "VmHWM")

    def caption(self, image: Path, *inputs: object) -> object:
        """One ``/caption`` request on ``image``; ``inputs`` are the optional settings after the file."""
        from gradio_client import handle_file

        return self.client.predict(handle_file(str(image)), *inputs, api_name="/caption")

    def close(self) -> None:
        """Stop the app (a second call does nothing)."""
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
