"""The command line shared by the stages that refit a few classifier rows of a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["row_fit_parser"]


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
