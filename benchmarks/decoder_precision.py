"""Decoder weight precision: same captions? same scores? how much faster?

    python -m benchmarks.decoder_precision --data ../shared/flickr8k --split test --threads 2

Encodes every image of the split once, decodes the features with the checkpoint's default
decoding (or ``--beam-size``) and the decoder in fp32, fp16 (the default: for attention models
the fused decoder, on its C++ kernels), the fused decoder on its TorchScript kernels (what runs
without a C++ compiler), fp16 as plain module-by-module dynamic quantisation (the reference the
fused decoder must match) and int8 (see :mod:`captioner.precision`), and reports, against fp32: how many
captions are identical, BLEU-1..4/METEOR/ROUGE-L/CIDEr of each, and the median time to
decode one image (batch 1; the decoders timed in alternation). Writes the report as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from tqdm import tqdm

from benchmarks.timing import measure_interleaved
from captioner import Captioner
from captioner.decoders.soft_attention import FusedAttentionDecoder
from captioner.precision import DECODER_PRECISIONS, dynamically_quantised
from training.datasets import SPLITS, load_corpus
from training.metrics import java_available, score_captions

__all__ = ["main"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="default: the shipped checkpoint")
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--split", default="test", choices=SPLITS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=50, help="timed batch-1 decodes per precision")
    parser.add_argument("--beam-size", type=int, help="default: the checkpoint's default decoding")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/decoder_precision.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    reference = Captioner.load(args.checkpoint, decoder_precision="fp32")
    images = [image for image in load_corpus(args.data) if image.split == args.split]
    features = torch.cat(
        [
            reference.encode([image.path for image in images[start : start + 32]])
            for start in tqdm(range(0, len(images), 32), desc=f"encoding {args.split}", unit="batch")
        ]
    )
    references = {image.name: list(image.captions) for image in images}
    java = java_available()
    decoding = {} if args.beam_size is None else {"beam_size": args.beam_size}
    report: dict = {
        "date": time.strftime("%Y-%m-%d"),
        "split": args.split,
        "threads": args.threads,
        "decoding": {**reference.default_decoding, **decoding},
        "rows": {},
    }
    captions: dict[str, list[str]] = {}
    scores: dict[tuple[str, ...], dict[str, float]] = {}  # the same captions score the same: score once
    captioners = {
        precision: Captioner(reference.checkpoint, reference.encoder, decoder_precision=precision)
        for precision in DECODER_PRECISIONS
    }
    unfused = "fp16, unfused (torch.ao dynamic quantisation)"
    captioners[unfused] = Captioner(reference.checkpoint, reference.encoder, decoder_precision="fp32")
    captioners[unfused].model = dynamically_quantised(reference.checkpoint.model, "fp16")
    if isinstance(captioners["fp16"].model, FusedAttentionDecoder):  # its TorchScript kernels too
        captioners["fp16, fused, TorchScript kernels"] = Captioner(
            reference.checkpoint, reference.encoder, decoder_precision="fp16", native_decoder=False
        )
    first = features[:1].clone()  # one image's features, in a buffer of their own
    timings = measure_interleaved(
        {name: lambda c=captioner: c.caption_features(first, **decoding) for name, captioner in captioners.items()},
        repeats=args.repeats,
    )
    for precision, captioner in captioners.items():
        results = [
            r
            for start in range(0, len(images), 250)
            for r in captioner.caption_features(features[start : start + 250], **decoding)
        ]
        captions[precision] = [r.caption for r in results]
        timing = timings[precision]
        predictions = {image.name: caption for image, caption in zip(images, captions[precision])}
        key = tuple(captions[precision])
        if key not in scores:
            scores[key] = score_captions(predictions, references, use_java=java)
        report["rows"][precision] = {
            "identical_to_fp32": sum(a == b for a, b in zip(captions["fp32"], captions[precision])),
            "images": len(images),
            "decode_ms_batch1": round(timing.median_ms, 2),
            "metrics": scores[key],
        }
        print(precision, json.dumps(report["rows"][precision]), flush=True)
    args.out.write_text(json.dumps(report, indent=2))
    print("\n" + markdown(report))
    return report


def markdown(report: dict) -> str:
    """The report as a Markdown table."""
    rows = report["rows"]
    names = list(next(iter(rows.values()))["metrics"])
    lines = [
        f"| decoder ({report['split']}, {report['threads']} threads, beam {report['decoding']['beam_size']}) "
        "| identical to fp32 | decode ms (batch 1) | " + " | ".join(names) + " |",
        "|---|---:|---:|" + "---:|" * len(names),
    ]
    for precision, row in rows.items():
        scores = " | ".join(f"{row['metrics'][n]:.3f}" if n == "CIDEr" else f"{row['metrics'][n]:.1f}" for n in names)
        lines.append(
            f"| {precision} | {row['identical_to_fp32']}/{row['images']} | {row['decode_ms_batch1']:.1f} | {scores} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
