"""Where one caption's time goes, in process: preprocessing, encoder, decoding, end to end.

    python -m benchmarks.breakdown --threads 2

Times, in alternation, on the demo photo and the shipped checkpoint: decoding the JPEG into
the encoder's input, the encoder at batch 1, decoding words from the encoder's features
(greedy and beam 5, glue and attention keys included), and ``Captioner.caption`` end to end;
for an attention checkpoint also greedy decoding and the caption on the decoder's TorchScript
kernels (:mod:`captioner.decoders.soft_attention.kernels`, what runs where the C++ ones cannot
be built).
A second group, timed in alternation of its own, splits ``caption_batch`` of ``--batch`` photos
the same way: preprocessing them into one batch, the encoder over it in the chunks
``Captioner.encode`` runs, greedy decoding, and ``caption_batch`` end to end; a third splits
``caption_video`` of a ``--clip-frames`` clip (the benchmark's panning clip): reading its frames,
preprocessing them, the encoder, decoding the mean of their features, and end to end.
To compare two commits, run it in a checkout of each, one after the other, a few times.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.run import PHOTO, clip_for_benchmark, photos_for_batch
from benchmarks.timing import measure_interleaved
from captioner import Captioner
from captioner.decoders.soft_attention import FusedAttentionDecoder
from captioner.media import read_video_frames

__all__ = ["main"]


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="default: the shipped checkpoint")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32, help="photos in the batch group (0: leave it out)")
    parser.add_argument("--clip-frames", type=int, default=16, help="frames of the clip group (0: leave it out)")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    captioner = Captioner.load(args.checkpoint)
    picture = captioner.preprocess(PHOTO)[None].contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        features = captioner.encoder(picture)

    @torch.inference_mode()
    def encode() -> torch.Tensor:
        return captioner.encoder(picture)

    stages = {
        "preprocess (JPEG file -> input tensor)": lambda: captioner.preprocess(PHOTO),
        "encoder, batch 1": encode,
        "decode greedy (features -> words)": lambda: captioner.caption_features(features, beam_size=1),
        "decode beam 5": lambda: captioner.caption_features(features, beam_size=5),
        "caption greedy, end to end": lambda: captioner.caption(PHOTO, beam_size=1),
    }
    if isinstance(captioner.model, FusedAttentionDecoder) and captioner.model.native:
        torchscript = Captioner(
            captioner.checkpoint, captioner.encoder, decoder_precision=captioner.decoder_precision, native_decoder=False
        )
        stages["decode greedy, TorchScript kernels"] = lambda: torchscript.caption_features(features, beam_size=1)
        stages["caption greedy, TorchScript kernels"] = lambda: torchscript.caption(PHOTO, beam_size=1)
    timings = measure_interleaved(stages, warmup=10, repeats=args.repeats)
    if args.batch:
        timings |= measure_interleaved(_batch_stages(captioner, args.batch), repeats=max(5, args.repeats // 5))
    if args.clip_frames:
        with tempfile.TemporaryDirectory(prefix="captioner-breakdown-") as scratch:
            clip = clip_for_benchmark(Path(scratch) / "clip.mp4", args.clip_frames)
            stages = _clip_stages(captioner, clip, args.clip_frames)
            timings |= measure_interleaved(stages, repeats=max(5, args.repeats // 5))
    rows = {name: timing.to_dict() for name, timing in timings.items()}
    words = len(captioner.caption_features(features, beam_size=1)[0].steps)
    print(f"| {PHOTO.name}, {words} words, {args.threads} threads | median ms | p95 ms |\n|---|---:|---:|")
    for name, row in rows.items():
        print(f"| {name} | {row['median_ms']:.2f} | {row['p95_ms']:.2f} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return rows


def _chunked_encoder(captioner: Captioner, batch: torch.Tensor) -> tuple[Callable[[], torch.Tensor], int]:
    """The encoder over ``batch`` in the chunks ``Captioner.encode`` runs, and the chunk size."""
    chunk = captioner.encode_chunk_size or len(batch)

    @torch.inference_mode()
    def encode() -> torch.Tensor:
        return captioner.encoder.encode_in_chunks(batch, chunk)

    return encode, chunk


def _batch_stages(captioner: Captioner, size: int) -> dict[str, Callable[[], object]]:
    """``caption_batch`` of ``size`` photos and its parts, as stages to time in alternation."""
    photos = photos_for_batch(size)
    encode, chunk = _chunked_encoder(captioner, captioner.preprocess.batch(photos))
    features = encode()  # what Captioner.encode(photos) gives, without preprocessing them again
    return {
        f"preprocess {size} photos into a batch": lambda: captioner.preprocess.batch(photos),
        f"encoder, {size} photos in chunks of {chunk}": encode,
        f"decode greedy, {size} photos": lambda: captioner.caption_features(features, beam_size=1),
        f"caption_batch {size} greedy, end to end": lambda: captioner.caption_batch(photos, beam_size=1),
    }


def _clip_stages(captioner: Captioner, clip: Path, frames: int) -> dict[str, Callable[[], object]]:
    """``caption_video`` of ``frames`` frames and its parts, as stages to time in alternation."""
    pictures = [frame.image for frame in read_video_frames(clip, num_frames=frames)]
    encode, chunk = _chunked_encoder(captioner, captioner.preprocess.batch(pictures))
    pooled = encode().mean(dim=0, keepdim=True)  # the clip's caption decodes the frames' mean
    return {
        f"read {frames} frames of the clip": lambda: read_video_frames(clip, num_frames=frames),
        f"preprocess {frames} frames into a batch": lambda: captioner.preprocess.batch(pictures),
        f"encoder, {frames} frames in chunks of {chunk}": encode,
        "decode greedy, the frames' mean features": lambda: captioner.caption_features(pooled, beam_size=1),
        f"caption_video {frames} frames greedy, end to end": lambda: captioner.caption_video(
            clip, num_frames=frames, beam_size=1
        ),
    }


if __name__ == "__main__":
    main()
