"""torchrun DDP (gloo, CPU) on the fixture: trains, checkpoints once, matches one process."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
from training_helpers import ROOT, read_log, tiny_settings, train_command

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

SETTINGS = dict(dropout=0, image_dropout=0, lr=3e-3, epochs=3, seed=2, threads=1)


def _run(settings: dict, *, processes: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        train_command(settings, processes=processes), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def test_torchrun_two_processes_match_a_single_process(tmp_path, mini_corpus):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    assert _run(tiny_settings(mini_corpus, single, tmp_path / "f1", **SETTINGS), processes=1).returncode == 0
    ddp_settings = tiny_settings(mini_corpus, ddp, tmp_path / "f2", **SETTINGS)
    result = _run(ddp_settings, processes=2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es) on cpu, global batch 16 (8 per process)" in result.stdout
    assert result.stdout.count("best checkpoint:") == 2  # each rank returns; only rank 0 logs epochs
    assert result.stdout.count("epoch=3 ") == 1
    assert (ddp / "best.safetensors").is_file() and (ddp / "last.pt").is_file()
    # the sharded feature extraction wrote the same features as one process
    a = np.load(tmp_path / "f1" / "efficientnet_lite0" / "features.npy")
    b = np.load(tmp_path / "f2" / "efficientnet_lite0" / "features.npy")
    assert np.allclose(a.astype(np.float32), b.astype(np.float32), atol=1e-2)
    single_loss = [float(r["val_loss"]) for r in read_log(single)]
    ddp_loss = [float(r["val_loss"]) for r in read_log(ddp)]
    assert len(ddp_loss) == 3
    assert ddp_loss == pytest.approx(single_loss, rel=0.02)
    # resume under DDP: one more epoch from rank 0's last.pt, on both ranks
    resumed = _run({**ddp_settings, "epochs": 4, "resume": True}, processes=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and resumed.stdout.count("epoch=4 ") == 1
    assert [int(r["epoch"]) for r in read_log(ddp)] == [1, 2, 3, 4]
