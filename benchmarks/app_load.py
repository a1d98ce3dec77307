"""Start ``app.py`` in its own process and time round trips through ``gradio_client``.

gradio_client opens a fresh ``httpx`` client for each HTTP request of a call (the upload, the
queue join, the result stream), and each builds an SSL context from certifi's CA bundle, even
for a plain ``http://`` address, three per call (see docs/speed.md).
:func:`loopback_client` hands the client one context built once instead (certificates are
still checked on ``https``), so a round trip measures the app, not that set-up.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

__all__ = ["AppProcess", "loopback_client"]

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


def loopback_client(url: str, *, shared_ssl_context: bool = True, **options: object):
    """A ``gradio_client.Client`` for ``url``; with ``shared_ssl_context`` its requests reuse one
    SSL context (httpx's default one, with verification) instead of building one each."""
    import httpx
    from gradio_client import Client

    ssl_verify = httpx.create_ssl_context() if shared_ssl_context else True
    return Client(url, verbose=False, ssl_verify=ssl_verify, **options)


class AppProcess:
    """``python app.py`` (or another Gradio script) on a free loopback port, with memory readings and two
    clients: ``client`` as gradio_client comes, ``fast_client`` sharing one SSL context (see above)."""

    def __init__(
        self,
        *,
        threads: int,
        script: Path = ROOT / "app.py",
        python: str = sys.executable,
        env: Mapping[str, str] | None = None,
        log: Path | None = None,
        startup_timeout: float = 120,
    ) -> None:
        """Run ``script`` with ``python`` from the script's folder, in ``env`` (default: this process's
        environment), its output in ``log`` (default: discarded)."""
        env = {
            **(os.environ if env is None else env),
            "GRADIO_SERVER_NAME": "127.0.0.1",
            "GRADIO_SERVER_PORT": str(_free_port()),
            "GRADIO_ANALYTICS_ENABLED": "False",
            "OMP_NUM_THREADS": str(threads),
        }
        self.url = f"http://127.0.0.1:{env['GRADIO_SERVER_PORT']}/"
        self.log = log
        output = log.open("wb") if log else subprocess.DEVNULL
        started = self.started = time.perf_counter()  # perf_counter when the process was started
        try:
            self.process = subprocess.Popen(
                [python, str(script)], cwd=script.parent, env=env, stdout=output, stderr=subprocess.STDOUT
            )
        finally:
            if log:
                output.close()  # the child holds its own copy
        self.client = self._connect(timeout=startup_timeout)
        self.startup_s = time.perf_counter() - started
        self.fast_client = loopback_client(self.url)

    def _connect(self, *, timeout: float):
        deadline = time.monotonic() + timeout
        while True:
            try:
                return loopback_client(self.url, shared_ssl_context=False)
            except Exception as error:
                if self.process.poll() is not None:
                    output = self.log.read_text(errors="replace")[-3000:] if self.log else "(output discarded)"
                    raise RuntimeError(f"the app exited with status {self.process.returncode}:\n{output}") from error
                if time.monotonic() > deadline:
                    self.close()
                    raise
                time.sleep(0.5)

    def rss_mb(self) -> float:
        return _rss_mb(self.process.pid)

    def peak_rss_mb(self) -> float:
        return _rss_mb(self.process.pid, "VmHWM")

    def caption(self, image: Path, *inputs: object, fast: bool = False) -> object:
        """One ``/caption`` request on ``image`` (``inputs``: the optional settings after the file),
        through ``fast_client`` when ``fast``, else through ``client``."""
        from gradio_client import handle_file

        client = self.fast_client if fast else self.client
        return client.predict(handle_file(str(image)), *inputs, api_name="/caption")

    def close(self) -> None:
        """Stop the app (a second call does nothing)."""
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
