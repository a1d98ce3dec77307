"""Evaluate a checkpoint on a split through the full ``Captioner`` pipeline (images in).

    python -m training.evaluate --checkpoint checkpoints/captioner.safetensors \
        --data ../shared/flickr8k --split test --out metrics.json   # --beam 1 for greedy

Prints BLEU-1..4, METEOR, ROUGE-L and CIDEr (pycocoevalcap), the captions that stop mid-phrase
and the share that invent a person or animal (:mod:`training.mentions`), and writes them, with
the settings used and every caption, as JSON. Without Java, METEOR is skipped and the Java-free scorers are used.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from tqdm import tqdm

from captioner.captioner import Captioner
from captioner.precision import DECODER_PRECISIONS
from training.datasets import SPLITS, load_corpus
from training.mentions import doubled_words, invented_subjects, unfinished
from training.metrics import java_available, score_captions

__all__ = ["evaluate", "main"]


def evaluate(
    captioner: Captioner,
    data: Path,
    *,
    split: str = "test",
    annotations: Path | None = None,
    beam_size: int | None = None,
    length_penalty: float | None = None,
    no_repeat_ngram: int | None = None,
    require_concepts: float | None = None,
    max_length: int = 20,
    batch_size: int = 32,
    limit: int = 0,
    use_java: bool | None = None,
) -> dict:
    """Caption every image of ``split`` and score the captions; returns metrics and samples.

    Decoding settings left at None are the checkpoint's defaults (what the app uses)."""
    chosen = {
        "beam_size": beam_size,
        "length_penalty": length_penalty,
        "no_repeat_ngram": no_repeat_ngram,
        "require_concepts": require_concepts,
    }
    decoding = {k: captioner.default_decoding[k] if v is None else v for k, v in chosen.items()}
    images = [image for image in load_corpus(data, annotations=annotations) if image.split == split]
    if limit:
        images = images[:limit]
    if not images:
        raise ValueError(f"the corpus has no images in split {split!r}")
    predictions = {}
    started = time.perf_counter()
    for start in tqdm(range(0, len(images), batch_size), desc=f"captioning {split}", unit="batch"):
        chunk = images[start : start + batch_size]
        results = captioner.caption_batch(
            [image.path for image in chunk],
            max_length=max_length,
            top_k=1,
            **decoding,
        )
        predictions.update({image.name: result.caption for image, result in zip(chunk, results)})
    seconds = time.perf_counter() - started
    references = {image.name: list(image.captions) for image in images}
    java = java_available() if use_java is None else use_java
    if not java:
        print("Java not found: METEOR skipped, BLEU/ROUGE-L/CIDEr use the Java-free tokenizer")
    metrics = score_captions(predictions, references, use_java=java)
    stopped = unfinished(predictions)
    return {
        "split": split,
        "images": len(images),
        **decoding,
        "max_length": max_length,
        "java": java,
        "seconds": round(seconds, 1),
        "metrics": metrics,
        "unfinished_captions": len(stopped),
        "doubled_words": len(doubled_words(predictions)),
        "invented_subjects": invented_subjects(predictions, references),
        "samples": dict(list(predictions.items())[:10]),
        "unfinished_samples": {key: predictions[key] for key in stopped[:10]},
        "captions": predictions,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="default: the shipped checkpoint")
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--annotations", type=Path)
    parser.add_argument("--split", default="test", choices=SPLITS)
    parser.add_argument("--beam", type=int, help="default: the checkpoint's decoding (what the app uses)")
    parser.add_argument("--length-penalty", type=float)
    parser.add_argument("--no-repeat-ngram", type=int)
    parser.add_argument("--require-concepts", type=float, help="concepts this probable must be named (0 = off)")
    parser.add_argument("--max-length", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit", type=int, default=0, help="evaluate only the first N images")
    parser.add_argument("--precision", choices=DECODER_PRECISIONS, help="decoder weights (default: fp16 on the CPU)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", type=Path, help="metrics JSON (default: <checkpoint>.<split>.json)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    captioner = Captioner.load(args.checkpoint, decoder_precision=args.precision)
    report = evaluate(
        captioner,
        args.data,
        split=args.split,
        annotations=args.annotations,
        beam_size=args.beam,
        length_penalty=args.length_penalty,
        no_repeat_ngram=args.no_repeat_ngram,
        require_concepts=args.require_concepts,
        max_length=args.max_length,
        batch_size=args.batch_size,
        limit=args.limit,
    )
    report["checkpoint"] = str(args.checkpoint or "shipped")
    report["decoder_precision"] = captioner.decoder_precision
    invented = report["invented_subjects"]["share"]
    print(
        f"unfinished captions {report['unfinished_captions']}, invented subjects {invented:.1f} %, "
        f"a word twice in a row {report['doubled_words']}"
    )
    for name, value in report["metrics"].items():
        print(f"{name:8s} {value:7.2f}" if name != "CIDEr" else f"{name:8s} {value:7.3f}")
    out = args.out or Path(f"{args.checkpoint or 'checkpoint'}.{args.split}.beam{report['beam_size']}.json")
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
