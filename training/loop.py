"""The epoch loop of every training run, whatever it optimises.

:func:`train_epochs` runs an :class:`Objective` (:class:`~training.cross_entropy.CrossEntropy`
for ``training.train``, :class:`~training.self_critical.SelfCritical` for ``training.scst``):
it resumes from ``last.pt``, takes the optimiser steps with gradient clipping (and the LR
schedule after each epoch), scores greedy captions on ``val`` after every epoch, keeps the best
weights as ``best.safetensors``, stops after ``patience`` epochs without a better score, and
writes ``last.pt`` (atomically), ``log.csv`` and ``curves.png`` every epoch. Under ``torchrun``
every process trains on its share of each batch; rank 0 alone validates, logs and writes files.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from training.distributed import Distributed
from training.progress import format_row, restore_progress, save_progress, write_log

__all__ = ["BEST_FILE", "RESUME_FILE", "Objective", "train_epochs"]

RESUME_FILE = "last.pt"
BEST_FILE = "best.safetensors"


class Objective(ABC):
    """What a run optimises and what it keeps; :func:`train_epochs` does the rest.

    Attributes:
        model: The module the optimiser trains; ``last.pt`` holds its weights.
        optimizer: The optimiser of ``model``'s parameters.
        scheduler: An LR schedule stepped after every epoch, or None.
        clip: The gradient norm every step is clipped to.
        columns: The log's training columns, in order (the values :meth:`epoch_columns` returns).
        batch_count: Batches an epoch (for the progress bar).
        validates_start: Score the weights before the first epoch, as the log's epoch 0 and the
            score to beat (a run that continues a trained checkpoint).
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    clip: float
    columns: tuple[str, ...]
    batch_count: int
    validates_start: bool = False

    @abstractmethod
    def batches(self, epoch: int) -> Iterable[Any]:
        """This process's batches of ``epoch``, the same ones again when a run resumes."""

    @abstractmethod
    def backward(self, batch: Any) -> dict[str, float]:
        """Compute the batch's loss and its gradients (``.grad`` comes zeroed); return the batch's
        sums for the log (summed over the epoch's batches and handed to :meth:`epoch_columns`)."""

    @abstractmethod
    def epoch_columns(self, sums: dict[str, float]) -> dict[str, float]:
        """The epoch's training columns (``columns``) from its batches' summed statistics."""

    @abstractmethod
    def validate(self) -> tuple[dict[str, float], dict[str, float]]:
        """Greedy scores on ``val`` of the weights :meth:`save_best` would write, and any further
        columns for the log (both logged with a ``val_`` prefix)."""

    @abstractmethod
    def save_best(self, path: Path, scores: dict[str, float], *, epoch: int, seconds: float) -> None:
        """Write the checkpoint of the weights that scored ``scores`` after ``epoch`` epochs
        (``seconds`` of training so far)."""

    def resume_state(self) -> dict[str, Any]:
        """Entries of ``last.pt`` beyond the loop's own (weights, optimiser, schedule, progress)."""
        return {}

    def resume(self, state: dict[str, Any], path: Path) -> None:
        """Check that this run can continue the ``last.pt`` state at ``path``; load its own entries."""
        return None


def train_epochs(
    objective: Objective,
    *,
    run_dir: Path,
    epochs: int,
    patience: int,
    select_metric: str,
    resume: bool,
    settings: dict[str, Any],
    job: Distributed,
) -> Path:
    """Train ``objective`` in ``run_dir`` until ``epochs`` epochs are done or ``patience`` epochs
    passed without a higher ``val`` ``select_metric``; ``settings`` go to ``config.json``.

    Returns:
        The path of the best checkpoint (written only when an epoch scored higher than the start).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    resume_path, best_path = run_dir / RESUME_FILE, run_dir / BEST_FILE
    history: list[dict] = []
    start_epoch, best_score, stale = 0, float("-inf"), 0
    if resume and resume_path.is_file():
        state = torch.load(resume_path, map_location="cpu", weights_only=True)
        objective.resume(state, resume_path)
        start_epoch, best_score, stale, history = restore_progress(state, objective.model, objective.optimizer)
        if objective.scheduler is not None:
            objective.scheduler.load_state_dict(state["scheduler"])
        job.log(f"resumed from {resume_path} after epoch {start_epoch}")
    elif objective.validates_start and job.is_main:
        scores, more = objective.validate()
        zeros = dict.fromkeys(objective.columns, 0.0)
        history.append({"epoch": 0, **zeros, "seconds": 0.0, **_val_columns(scores), **_val_columns(more)})
        best_score = _selected(select_metric, history[-1])
        job.log(format_row(history[-1]))
    if job.is_main:
        (run_dir / "config.json").write_text(json.dumps(settings, indent=2))

    progress = tqdm(  # the whole run's batches: its ETA is the run's (less any early stop)
        total=objective.batch_count * max(0, epochs - start_epoch), unit="batch", disable=not job.is_main
    )
    for epoch in range(start_epoch, epochs):
        if stale >= patience:
            break
        progress.set_description(f"epoch {epoch + 1}/{epochs}")
        started = time.perf_counter()
        sums: dict[str, float] = {}
        for batch in objective.batches(epoch):
            progress.update()
            objective.optimizer.zero_grad(set_to_none=True)
            for key, value in objective.backward(batch).items():
                sums[key] = sums.get(key, 0.0) + value
            torch.nn.utils.clip_grad_norm_(objective.model.parameters(), objective.clip)
            objective.optimizer.step()
        if objective.scheduler is not None:
            objective.scheduler.step()
        if job.is_main:
            scores, more = objective.validate()
            row = {
                "epoch": epoch + 1,
                **objective.epoch_columns(sums),
                "seconds": time.perf_counter() - started,
                **_val_columns(scores),
                **_val_columns(more),
            }
            history.append(row)
            stale = 0 if _selected(select_metric, row) > best_score else stale + 1
            if stale == 0:
                best_score = _selected(select_metric, row)
                objective.save_best(best_path, scores, epoch=epoch + 1, seconds=sum(h["seconds"] for h in history))
            job.log(format_row(row) + (" *" if stale == 0 else ""))
            write_log(run_dir, history)
            schedule = {"scheduler": objective.scheduler.state_dict()} if objective.scheduler is not None else {}
            save_progress(
                resume_path,
                epoch=epoch + 1,
                model=objective.model,
                optimizer=objective.optimizer,
                best_score=best_score,
                stale=stale,
                history=history,
                **schedule,
                **objective.resume_state(),
            )
        stale = job.broadcast(stale)  # every rank stops early together
        job.barrier()
    progress.close()
    return best_path


# Validation columns where less is better: kept by their negation.
LOWER_IS_BETTER = frozenset({"loss", "unfinished"})


# A score kept only where no val caption stops mid-phrase: "<score>_finished".
FINISHED_SUFFIX = "_finished"


def _selected(select_metric: str, row: dict[str, float]) -> float:
    """A log row's value of ``select_metric``, higher is better: a ``val`` score, or the negated
    ``val_loss`` (a few validation photos give noisy BLEU and CIDEr) or ``unfinished`` (captions
    that stop mid-phrase; of equal counts the earliest epoch is kept). ``CIDEr_finished`` is
    ``CIDEr`` where no caption is unfinished, and never kept otherwise."""
    name = select_metric.removeprefix("val_")
    if name.endswith(FINISHED_SUFFIX):
        finished = row["val_unfinished"] == 0
        return _selected(name.removesuffix(FINISHED_SUFFIX), row) if finished else float("-inf")
    value = row[f"val_{name}"]
    return -value if name in LOWER_IS_BETTER else value


def _val_columns(scores: dict[str, float]) -> dict[str, float]:
    return {f"val_{name}": value for name, value in scores.items()}
