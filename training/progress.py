"""A training run's progress on disk, as the epoch loop (:mod:`training.loop`) writes it:
the resume file (``last.pt``, written atomically), the CSV log with its plot, and the
one-line epoch summary.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import torch

from training.plots import plot_curves

__all__ = ["format_row", "restore_progress", "save_progress", "write_log"]


def save_progress(
    path: Path,
    *,
    epoch: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    best_score: float,
    stale: int,
    history: list[dict],
    **extra: Any,
) -> None:
    """Write everything a resumed run needs (plus ``extra`` entries) to a temp file, then rename:
    a kill during the save never leaves a broken ``path``."""
    state = {
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "best_score": best_score,
        "stale": stale,
        "history": json.dumps(history),
        **extra,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def restore_progress(
    state: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[int, float, int, list[dict]]:
    """Load a :func:`save_progress` state into ``model``, ``optimizer`` and the torch RNG.

    Returns (epochs done, best score, epochs without improvement, history)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    return state["epoch"], state["best_score"], state["stale"], json.loads(state["history"])


def write_log(run_dir: Path, history: list[dict]) -> None:
    """``log.csv`` (one row per epoch) and ``curves.png`` in ``run_dir``."""
    with open(run_dir / "log.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    plot_curves(history, run_dir / "curves.png")


def format_row(row: dict) -> str:
    """An epoch's log row as one ``key=value`` line."""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
