"""Decoding options checked once, where they come in (the CLI and :class:`~captioner.Captioner`).

A value outside its range is refused with a message that names the option and its range,
before any file is read: a temperature of 0 would divide by zero, ``nan`` or ``inf`` would
give empty or "the the the ..." captions, a negative n-gram size would index out of range,
and a seed past 64 bits would fail once per file.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "DEFAULT_MAX_LENGTH",
    "DEFAULT_TOP_K",
    "MAX_BEAM",
    "MAX_FRAMES",
    "MAX_LENGTH",
    "TEMPERATURES",
    "check_decoding_options",
    "check_frame_count",
    "stored_decoding",
]

# Defaults that Captioner, the CLI and the app share (the beam size and temperature come from
# the checkpoint: Captioner.default_decoding), so a photo gets the same caption from all three.
DEFAULT_TOP_K = 5  # alternatives recorded per word
DEFAULT_MAX_LENGTH = 20  # words per caption

MAX_BEAM = 64  # beams kept per step
MAX_LENGTH = 100  # words per caption
MAX_FRAMES = 64  # frames sampled from one clip (each held as a picture of up to 1920 x 1080)
TEMPERATURES = (0.01, 100.0)  # softmax temperatures: past these, probabilities are 0/1 or uniform
_SEEDS = (0, 2**64 - 1)  # what torch's generators take


def check_decoding_options(
    *,
    beam_size: Any = None,
    top_k: Any = DEFAULT_TOP_K,
    max_length: Any = DEFAULT_MAX_LENGTH,
    length_penalty: Any = None,
    no_repeat_ngram: Any = None,
    temperature: Any = None,
    top_p: Any = 1.0,
    seed: Any = None,
    require_concepts: Any = None,
    vocab_size: int | None = None,
) -> None:
    """Raise ``ValueError`` naming the first option out of its range (None: the default, allowed).

    ``vocab_size``: the most ``top_k`` may be (None: not checked above)."""
    _integer("beam_size", beam_size, 1, MAX_BEAM, "1 = greedy")
    _integer("top_k", top_k, 1, vocab_size, "alternatives shown per word")
    _integer("max_length", max_length, 1, MAX_LENGTH, "words")
    _integer("no_repeat_ngram", no_repeat_ngram, 0, None, "0 = off")
    _integer("seed", seed, *_SEEDS, "any whole number in that range")
    _number("length_penalty", length_penalty, -10.0, 10.0, "0 = none, 1 = divide by the length")
    _number("temperature", temperature, *TEMPERATURES, "1 = the model's own probabilities", low_open=False)
    _number("top_p", top_p, 0.0, 1.0, "the nucleus's share of probability", low_open=True)
    _number("require_concepts", require_concepts, 0.0, 1.0, "0 = off; concepts this probable must be named")


def stored_decoding(stored: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's decoding defaults from its stored ``decoding`` metadata (``training.tune_decoding
    --apply``, ``training.calibrate --apply``): greedy at temperature 1, nothing required, where it
    stores none."""
    return {
        "beam_size": int(stored.get("beam_size", 1)),
        "length_penalty": float(stored.get("length_penalty", 0.0)),
        "no_repeat_ngram": int(stored.get("no_repeat_ngram", 0)),
        "temperature": float(stored.get("temperature", 1.0)),
        "require_concepts": float(stored.get("require_concepts", 0.0)),
    }


def check_frame_count(num_frames: Any) -> None:
    """Raise ``ValueError`` unless ``num_frames`` is a whole number from 1 to :data:`MAX_FRAMES`."""
    _integer("num_frames", num_frames, 1, MAX_FRAMES, "frames sampled from each clip")


def _integer(name: str, value: Any, low: int, high: int | None, meaning: str) -> None:
    if value is None:
        return
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise ValueError(f"{name} must be a whole number {span} ({meaning}), not {value!r}")


def _number(name: str, value: Any, low: float, high: float, meaning: str, *, low_open: bool = False) -> None:
    if value is None:
        return
    valid = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not valid or value > high or value < low or (low_open and value == low):
        above = "above" if low_open else "from"
        raise ValueError(f"{name} must be a number {above} {low:g} to {high:g} ({meaning}), not {value!r}")
