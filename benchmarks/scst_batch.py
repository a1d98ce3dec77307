"""One self-critical training batch: each image's initial state once, or once per sample.

    python -m benchmarks.scst_batch --threads 2

``training.scst`` samples ``--samples`` captions per image. :func:`training.self_critical.sample_captions`
computes an image's initial state (the glue, and with ``--tune-encoder-stages`` the trainable
encoder top) once and repeats it for the image's samples; the alternative runs those layers on
every sample's row. This times both, in alternation
(:func:`~benchmarks.timing.measure_interleaved`), for a batch of the shipped checkpoint's decoder
on random trunk maps of the right shape: sampling and the backward pass, as in a training step.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.timing import measure_interleaved
from captioner.captioner import default_checkpoint_path
from captioner.checkpoint import load_checkpoint
from training.encoder_tuning import TunedEncoderDecoder, tuned_split
from training.self_critical import sample_captions

__all__ = ["main"]


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=50, help="images a batch (training.scst's --batch-size)")
    parser.add_argument("--samples", type=int, default=5, help="captions sampled an image")
    parser.add_argument("--stages", type=int, nargs="+", default=[1, 2], help="encoder stages tuned")
    parser.add_argument("--max-length", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    checkpoint = load_checkpoint(default_checkpoint_path())
    ids = {"start_id": checkpoint.vocab.start_id, "end_id": checkpoint.vocab.end_id, "max_length": args.max_length}
    size = checkpoint.encoder.image_size
    steps = {}
    for stages in args.stages:
        trunk, top = tuned_split(checkpoint, stages)
        model = TunedEncoderDecoder(checkpoint.model, top.requires_grad_(True))
        with torch.inference_mode():
            shape = trunk(torch.zeros(1, 3, size, size)).shape[1:]
        maps = torch.randn(args.images, *shape)

        def train_step(model=model, maps=maps, shared: bool = True) -> None:
            if shared:
                _, log_probs = sample_captions(model, maps, samples=args.samples, **ids)
            else:
                _, log_probs = sample_captions(model, maps.repeat_interleave(args.samples, dim=0), **ids)
            model.zero_grad(set_to_none=True)
            (-log_probs.sum()).backward()

        steps[f"{stages} stage(s) tuned, state once an image"] = train_step
        steps[f"{stages} stage(s) tuned, state once a sample"] = lambda step=train_step: step(shared=False)
    torch.manual_seed(0)
    timings = measure_interleaved(steps, warmup=1, repeats=args.repeats)
    rows = {name: timing.to_dict() for name, timing in timings.items()}
    print(f"| {args.images} images × {args.samples} samples, {args.threads} threads | median s | p95 s |")
    print("|---|---:|---:|")
    for name, row in rows.items():
        print(f"| {name} | {row['median_ms'] / 1000:.2f} | {row['p95_ms'] / 1000:.2f} |")
    return rows


if __name__ == "__main__":
    main()
