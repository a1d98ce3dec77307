"""torchrun DDP (gloo, CPU) on the fixture: trains, checkpoints once, matches one process."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _train_args(mini_corpus: Path, run: Path, features: Path) -> list[str]:
    return [
        "--data",
        str(mini_corpus),
        "--run-dir",
        str(run),
        "--features",
        str(features),
        "--min-count",
        "1",
        "--embed-dim",
        "32",
        "--hidden-dim",
        "48",
        "--dropout",
        "0",
        "--image-dropout",
        "0",
        "--batch-size",
        "16",
        "--lr",
        "3e-3",
        "--epochs",
        "3",
        "--seed",
        "2",
        "--threads",
        "1",
    ]


def _log(run: Path) -> list[dict]:
    with open(run / "log.csv") as handle:
        return list(csv.DictReader(handle))


def test_torchrun_two_processes_match_a_single_process(tmp_path, mini_corpus):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    subprocess.run(
        [sys.executable, "-m", "training.train", *_train_args(mini_corpus, single, tmp_path / "f1")],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "training.train",
            *_train_args(mini_corpus, ddp, tmp_path / "f2"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es) on cpu, global batch 16 (8 per process)" in result.stdout
    assert result.stdout.count("best checkpoint:") == 2  # each rank returns; only rank 0 logs epochs
    assert result.stdout.count("epoch=3 ") == 1
    assert (ddp / "best.safetensors").is_file() and (ddp / "last.pt").is_file()
    # the sharded feature extraction wrote the same features as one process
    a = np.load(tmp_path / "f1" / "efficientnet_lite0" / "features.npy")
    b = np.load(tmp_path / "f2" / "efficientnet_lite0" / "features.npy")
    assert np.allclose(a.astype(np.float32), b.astype(np.float32), atol=1e-2)
    single_loss = [float(r["val_loss"]) for r in _log(single)]
    ddp_loss = [float(r["val_loss"]) for r in _log(ddp)]
    assert len(ddp_loss) == 3
    assert ddp_loss == pytest.approx(single_loss, rel=0.02)
    # resume under DDP: one more epoch from rank 0's last.pt, on both ranks
    args = _train_args(mini_corpus, ddp, tmp_path / "f2")
    args[args.index("--epochs") + 1] = "4"
    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "training.train",
            *args,
            "--resume",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and resumed.stdout.count("epoch=4 ") == 1
    assert [int(r["epoch"]) for r in _log(ddp)] == [1, 2, 3, 4]
