"""Caption metrics with pycocoevalcap: BLEU-1..4, METEOR, ROUGE-L, CIDEr (0-100 scale for BLEU etc.)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence

from captioner.vocab import tokenize

__all__ = ["java_available", "score_captions"]


def java_available() -> bool:
    """METEOR and the PTB tokenizer of pycocoevalcap run on Java."""
    return shutil.which("java") is not None


def score_captions(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    *,
    use_java: bool | None = None,
    metrics: Sequence[str] = ("BLEU", "METEOR", "ROUGE_L", "CIDEr"),
) -> dict[str, float]:
    """Score predicted captions against references (both keyed by image id).

    With Java, text is tokenized by the standard PTB tokenizer and METEOR is computed;
    without it (or ``use_java=False``) the project tokenizer is used and METEOR is left out.
    BLEU, METEOR and ROUGE-L are returned on a 0-100 scale, CIDEr as is (e.g. 0.55).
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if set(predictions) != set(references):
        raise ValueError("predictions and references must cover the same image ids")
    use_java = java_available() if use_java is None else use_java
    if use_java:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        tokenizer = PTBTokenizer()
        gts = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in references.items()})
        res = tokenizer.tokenize({k: [{"caption": predictions[k]}] for k in references})
    else:
        gts = {k: [" ".join(tokenize(c)) for c in v] for k, v in references.items()}
        res = {k: [" ".join(tokenize(predictions[k]))] for k in references}
    scores: dict[str, float] = {}
    if "BLEU" in metrics:
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        scores.update({f"BLEU-{n + 1}": 100 * b for n, b in enumerate(bleu)})
    if "METEOR" in metrics and use_java:
        from pycocoevalcap.meteor.meteor import Meteor

        meteor = Meteor()
        scores["METEOR"] = 100 * meteor.compute_score(gts, res)[0]
        del meteor
    if "ROUGE_L" in metrics:
        scores["ROUGE-L"] = 100 * Rouge().compute_score(gts, res)[0]
    if "CIDEr" in metrics:
        scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    return scores
