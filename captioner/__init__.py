"""An image captioner: CNN encoder -> linear glue -> LSTM decoder (Show and Tell).

The names below are imported on first use, so that modules which need no torch (media,
options, presentation, checkpoint metadata) import without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from captioner.captioner import Captioner, CaptionResult, VideoCaptionResult, WordStep
    from captioner.checkpoint_metadata import CheckpointError
    from captioner.media import MediaError

__all__ = ["Captioner", "CaptionResult", "VideoCaptionResult", "WordStep", "CheckpointError", "MediaError"]

_MODULES = {
    "Captioner": "captioner.captioner",
    "CaptionResult": "captioner.captioner",
    "VideoCaptionResult": "captioner.captioner",
    "WordStep": "captioner.captioner",
    "CheckpointError": "captioner.checkpoint_metadata",
    "MediaError": "captioner.media",
}


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module 'captioner' has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULES[name]), name)
