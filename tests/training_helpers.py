"""Tiny training runs on the committed mini corpus, in-process or as command lines."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from training.config_cli import config_from_settings
from training.train import TrainConfig

__all__ = ["ROOT", "read_log", "tiny_scst_settings", "tiny_settings", "tiny_train_config", "train_command"]

ROOT = Path(__file__).resolve().parent.parent


def tiny_settings(mini_corpus: Path, run: Path, features: Path, **overrides) -> dict:
    """A model small enough to train in seconds (Show and Tell unless ``decoder`` overrides it, with
    the settings the tests were written for); ``overrides`` set any other TrainConfig field."""
    settings = dict(
        data=str(mini_corpus),
        run_dir=str(run),
        features=str(features),
        decoder="show_and_tell",
        image_dropout=0.5,
        lr_decay=0.8,
        patience=5,
        min_count=1,
        embed_dim=32,
        hidden_dim=48,
        batch_size=16,
    )
    settings.update(overrides)
    return settings


def tiny_scst_settings(mini_corpus: Path, init: Path, features: Path, **overrides) -> dict:
    """A self-critical run from ``init`` small enough for seconds; ``overrides`` set any other ScstConfig field."""
    settings = dict(data=str(mini_corpus), init=str(init), features=str(features), batch_size=8, samples=3, lr=1e-3)
    settings.update(overrides)
    return settings


def tiny_train_config(mini_corpus: Path, run: Path, features: Path, **overrides) -> TrainConfig:
    return config_from_settings(TrainConfig, tiny_settings(mini_corpus, run, features, **overrides))


def train_command(settings: dict, *, processes: int = 1) -> list[str]:
    """``python -m training.train`` (under torchrun when ``processes`` > 1) with ``settings`` as flags."""
    launcher = [sys.executable, "-m", "training.train"]
    if processes > 1:
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={processes}",
            "-m",
            "training.train",
        ]
    flags = []
    for name, value in settings.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is not False:
            flags += [flag, str(value)]
    return launcher + flags


def read_log(run: Path) -> list[dict]:
    """The rows of a run's ``log.csv`` (empty while it does not exist yet)."""
    try:
        with open(run / "log.csv") as handle:
            return list(csv.DictReader(handle))
    except (FileNotFoundError, csv.Error):
        return []
