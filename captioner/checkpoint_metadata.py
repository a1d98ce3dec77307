"""A checkpoint's JSON metadata, read without torch (the app builds its page from it while the
model loads). :mod:`captioner.checkpoint` loads the weights; see there for the keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

__all__ = ["FORMAT", "CheckpointError", "default_checkpoint_path", "read_metadata"]

FORMAT = "captioner-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or does not fit the model / data given."""


def default_checkpoint_path() -> Path:
    """The checkpoint shipped in the repository's ``checkpoints/`` folder."""
    return Path(__file__).resolve().parent.parent / "checkpoints" / "captioner.safetensors"


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The decoded JSON metadata of a checkpoint, without loading weights."""
    path = existing(path)
    try:
        with safe_open(str(path), framework="numpy") as handle:
            raw = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise unreadable(path, error) from error
    if raw.get("format") != FORMAT:
        raise CheckpointError(
            f"{path.name} is a safetensors file but not a captioner checkpoint "
            f"(format {raw.get('format')!r}, expected {FORMAT!r})"
        )
    try:
        return {key: json.loads(value) for key, value in raw.items() if key != "format"}
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path.name}: the checkpoint metadata is corrupt ({error})") from error


def existing(path: str | Path) -> Path:
    """``path`` as a Path; a CheckpointError where no file is there."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return path


def unreadable(path: Path, error: Exception) -> CheckpointError:
    """The error for a file safetensors cannot read, saying so where it looks like a pickle."""
    hint = ""
    with open(path, "rb") as handle:
        head = handle.read(2)
    if head in (b"PK", b"\x80\x02", b"\x80\x04", b"\x80\x05"):
        hint = " It looks like a pickle / torch.save file, which is refused because unpickling can run code."
    return CheckpointError(f"{path.name} is not a readable safetensors checkpoint ({error}).{hint}")
