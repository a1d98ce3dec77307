"""How far a fine-tuned encoder top moved the ImageNet head that a concept decoder reads.

    python -m training.head_drift --checkpoint checkpoints/captioner.safetensors --data ../shared/flickr8k

A concept decoder reads its concepts from the encoder's ImageNet head. When self-critical
training also tunes the encoder's top (``training.scst --tune-encoder-stages``), the head's
probabilities are those of the tuned maps; ``--imagenet-weight`` keeps them near the untuned
encoder's. This compares the two on a split's cached maps (the untuned encoder's cache and the
trunk's cache through the tuned top): the mean KL divergence, how often the most probable
class is the same, and how often the slots hold the same words. Nothing is trained.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from captioner.checkpoint import Checkpoint, load_checkpoint
from training.datasets import load_corpus
from training.encoder_tuning import cache_for, checkpoint_maps

__all__ = ["head_drift", "main"]


@torch.inference_mode()
def head_drift(checkpoint: Checkpoint, untuned: torch.Tensor, tuned: torch.Tensor) -> dict[str, float]:
    """The checkpoint's concept decoder read on the untuned and the tuned encoder's maps of the
    same images (N, C, H, W): mean KL(untuned ‖ tuned) of the class probabilities, the share of
    images whose top class agrees, and the share whose slots hold the same words (in order)."""
    model = checkpoint.model
    before, after = model.class_logits(untuned), model.class_logits(tuned)
    kl = F.kl_div(torch.log_softmax(after, -1), torch.log_softmax(before, -1), reduction="batchmean", log_target=True)
    same_slots = (model.concepts(untuned).word_ids == model.concepts(tuned).word_ids).all(dim=1)
    return {
        "images": float(len(untuned)),
        "kl": kl.item(),
        "top_class_agrees": (before.argmax(-1) == after.argmax(-1)).float().mean().item(),
        "slots_agree": same_slots.float().mean().item(),
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--split", default="val")
    parser.add_argument("--features", type=Path, default=Path("runs/features"))
    parser.add_argument("--out", type=Path, help="report JSON")
    args = parser.parse_args(argv)
    checkpoint = load_checkpoint(args.checkpoint)
    if not checkpoint.model.reads_concepts:
        raise SystemExit(f"{args.checkpoint} has no concept decoder: its encoder's ImageNet head is not read")
    if not checkpoint.encoder_tuned_stages:
        raise SystemExit(f"{args.checkpoint} does not tune its encoder: its head is the untuned one")
    corpus = load_corpus(args.data)
    everything = [image.name for image in corpus]
    names = [image.name for image in corpus if image.split == args.split]
    cache = cache_for(args.features, checkpoint.encoder, everything)
    untuned = torch.from_numpy(cache.features[cache.rows(names)]).float()
    report = {
        "split": args.split,
        **head_drift(checkpoint, untuned, checkpoint_maps(checkpoint, args.features, everything, names)),
    }
    print(
        f"{args.split}, {report['images']:.0f} images: KL {report['kl']:.4f}, top class the same in "
        f"{100 * report['top_class_agrees']:.1f} %, slots the same in {100 * report['slots_agree']:.1f} %"
    )
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
