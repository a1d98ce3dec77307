"""What the stages that refit a few rows of a checkpoint's word classifier share (``fit_copy``,
``fit_end``): their command line and how it is recorded, and the classifier's inputs under
teacher forcing."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

__all__ = ["classifier_inputs", "recorded_settings", "row_fit_parser"]


def row_fit_parser(description: str | None) -> argparse.ArgumentParser:
    """``--checkpoint`` in, ``--out`` written, the corpus (``--data``), its cached maps
    (``--features``) and ``--threads``; each stage adds its own settings."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--features", type=Path, default=Path("runs/features"))
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--threads", type=int, default=0)
    return parser


def recorded_settings(args: argparse.Namespace) -> dict:
    """The parsed settings as a checkpoint's training metadata records them (paths as strings)."""
    return {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}


def classifier_inputs(
    model: nn.Module, features: torch.Tensor, tokens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoder's logits (B, T-1, V) for ``tokens`` under teacher forcing, and what its word
    classifier (``model.head``) read at each of those steps (B, T-1, H): the rows' fixed inputs."""
    captured: list[torch.Tensor] = []
    hook = model.head.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0]))
    try:
        logits = model(features, tokens)
    finally:
        hook.remove()
    # attention decoders call the classifier once a step, Show and Tell once over the caption
    hidden = captured[0] if captured[0].dim() == 3 else torch.stack(captured, dim=1)
    return logits, hidden
