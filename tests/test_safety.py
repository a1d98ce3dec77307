"""Safe loading: pickles are never executed; the app never opens a path a user names."""

from __future__ import annotations

import os
import pickle

import httpx
import pytest
from app_server import running_app
from gradio_client import Client, handle_file

from captioner.checkpoint import CheckpointError, load_checkpoint


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_checkpoint_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "captioner.safetensors"
    path.write_bytes(pickle.dumps(_Exploit(str(marker)), protocol=4))
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(path)
    assert not marker.exists()


def test_app_refuses_paths_outside_its_upload_folder(dog_photo):
    """A raw API call naming a server path (not an upload) is refused; nothing is captioned."""
    with running_app() as url:
        for path in ("/etc/hostname", str(dog_photo)):
            payload = {"data": [{"path": path, "meta": {"_type": "gradio.FileData"}}, "greedy", 3, 5, 20]}
            event = httpx.post(f"{url}/gradio_api/call/caption", json=payload).json()["event_id"]
            stream = httpx.get(f"{url}/gradio_api/call/caption/{event}", timeout=60).text
            assert "event: error" in stream and "event: complete" not in stream
        # an honest upload of the same photo works
        caption, *_ = Client(url, verbose=False).predict(handle_file(str(dog_photo)), api_name="/caption")
        assert caption
