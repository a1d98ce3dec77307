"""Training killed with SIGKILL mid-run resumes to exactly the weights of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from training_helpers import ROOT, read_log, tiny_settings, train_command

pytestmark = pytest.mark.slow

EPOCHS = 30


def _command(mini_corpus: Path, run: Path, features: Path, **extra) -> list[str]:
    settings = dict(embed_dim=64, hidden_dim=96, batch_size=4, epochs=EPOCHS, patience=1000, seed=7, threads=1)
    return train_command(tiny_settings(mini_corpus, run, features, **settings, **extra))


def _resume_epoch(run: Path) -> int:
    try:
        return torch.load(run / "last.pt", weights_only=True)["epoch"]
    except (FileNotFoundError, RuntimeError, EOFError):
        return 0


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, mini_corpus):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    features = tmp_path / "features"
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    subprocess.run(_command(mini_corpus, straight, features), cwd=ROOT, env=env, check=True, capture_output=True)

    process = subprocess.Popen(
        _command(mini_corpus, interrupted, features),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while _resume_epoch(interrupted) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)  # now somewhere inside a later epoch
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = torch.load(interrupted / "last.pt", weights_only=True)["epoch"]
    assert 3 <= killed_at < EPOCHS, "the run must be killed part-way"

    subprocess.run(
        _command(mini_corpus, interrupted, features, resume=True), cwd=ROOT, env=env, check=True, capture_output=True
    )
    a = torch.load(straight / "last.pt", weights_only=True)
    b = torch.load(interrupted / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == EPOCHS
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert len(read_log(interrupted)) == EPOCHS
