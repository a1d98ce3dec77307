"""An image captioner: CNN encoder -> linear glue -> LSTM decoder (Show and Tell)."""

from captioner.captioner import Captioner, CaptionResult, VideoCaptionResult, WordStep
from captioner.checkpoint import CheckpointError
from captioner.media import MediaError

__all__ = ["Captioner", "CaptionResult", "VideoCaptionResult", "WordStep", "CheckpointError", "MediaError"]
