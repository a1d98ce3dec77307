"""Turn caption results into what the demo shows: coloured words, a step table, a top-k chart.

Pure functions over :class:`~captioner.captioner.CaptionResult` (no Gradio import), so the
UI stays thin and these are tested directly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from PIL import Image

if TYPE_CHECKING:
    from captioner.captioner import CaptionResult

__all__ = ["highlighted_words", "steps_table", "step_chart", "attention_overlays", "concept_summary", "STEP_COLUMNS"]

CONCEPT_MARK = " ◆"  # after a word copied from the image's concepts

STEP_COLUMNS = ("#", "word", "p(word)")


def highlighted_words(result: CaptionResult) -> list[tuple[str, float]]:
    """(word, probability) pairs; Gradio's HighlightedText colours a word by its number."""
    return [(step.word + " ", round(step.prob, 3)) for step in result.steps]


def steps_table(result: CaptionResult) -> pd.DataFrame:
    """One row per generated word: position, word, its probability, then the top-k as "word p"."""
    k = max((len(step.alternatives) for step in result.steps), default=0)
    columns = [*STEP_COLUMNS, *(f"top {i + 1}" for i in range(k))]
    rows = [
        [
            n + 1,
            step.word + (CONCEPT_MARK if step.concept else ""),
            round(step.prob, 4),
            *(f"{word} {prob:.4f}" for word, prob in step.alternatives),
        ]
        for n, step in enumerate(result.steps)
    ]
    return pd.DataFrame(rows, columns=columns)


def concept_summary(result: CaptionResult) -> str:
    """Markdown: the concepts behind the caption, from the encoder's ImageNet head, one per line
    ("Egyptian cat 0.80, tabby 0.07 → cat 0.96"), those offered to the decoder marked; empty
    for a decoder that reads no concepts."""
    if not result.concepts:
        return ""
    used = {step.concept for step in result.steps}
    lines = []
    for concept in result.concepts:
        if concept.word in used:
            status = "in the caption" + CONCEPT_MARK
        elif concept.in_slot:
            status = "offered, not used"
        else:
            status = "too unsure to offer"
        lines.append(f"- {concept.describe()} — {status}")
    return "**Concepts (ImageNet classes → words)**\n" + "\n".join(lines)


def step_chart(result: CaptionResult, index: int) -> pd.DataFrame:
    """The top-k (word, probability) of step ``index`` (0-based, clamped), best first."""
    if not result.steps:
        return pd.DataFrame({"word": [], "probability": []})
    step = result.steps[min(max(index, 0), len(result.steps) - 1)]
    return pd.DataFrame({"word": [w for w, _ in step.alternatives], "probability": [p for _, p in step.alternatives]})


def attention_overlays(image: Image.Image, result: CaptionResult, *, size: int = 256) -> list[tuple[Image.Image, str]]:
    """One picture per word: the image with that word's attention weights as a heatmap.

    Empty when the model has no attention (nothing is invented).
    """
    if result.attention_grid is None or not result.steps or result.steps[0].attention is None:
        return []
    import matplotlib

    colormap = matplotlib.colormaps["inferno"]
    height, width = result.attention_grid
    base = image.convert("RGB").resize((size, size * image.height // max(image.width, 1) or 1))
    overlays = []
    for step in result.steps:
        weights = np.asarray(step.attention, dtype=np.float32).reshape(height, width)
        weights = weights / max(float(weights.max()), 1e-8)
        heat = Image.fromarray(np.uint8(weights * 255)).resize(base.size, Image.Resampling.BICUBIC)
        coloured = Image.fromarray(np.uint8(colormap(np.asarray(heat) / 255.0)[..., :3] * 255))
        overlays.append((Image.blend(base, coloured, 0.55), f"{step.word} ({step.prob:.2f})"))
    return overlays
