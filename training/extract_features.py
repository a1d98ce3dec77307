"""Extract and cache encoder feature maps for every image of a corpus.

python -m training.extract_features --data ../shared/flickr8k --out runs/features
python -m training.extract_features --data ../shared/flickr8k --out runs/features --mirrored   # for training.scst
python -m training.extract_features --data ../shared/flickr8k --tune-encoder-stages 1   # the trunk's maps
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from captioner.encoders import build_encoder
from training.datasets import load_corpus
from training.encoder_split import split_encoder
from training.feature_cache import extract_features

__all__ = ["main", "cache_dir_for"]


def cache_dir_for(root: Path, encoder_name: str, *, mirrored: bool = False) -> Path:
    """Per-encoder cache folder under ``root`` (a second one for the mirrored images)."""
    return root / (encoder_name.replace(":", "_") + ("_mirrored" if mirrored else ""))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, help="corpus folder (images/ + captions)")
    parser.add_argument("--annotations", type=Path, help="Karpathy-style dataset_*.json to use")
    parser.add_argument("--encoder", default="efficientnet_lite0")
    parser.add_argument("--out", type=Path, default=Path("runs/features"), help="cache root")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--mirrored", action="store_true", help="encode the images mirrored left to right")
    parser.add_argument(
        "--tune-encoder-stages",
        type=int,
        default=0,
        help="cache the maps before the encoder's last N stages (for training.scst --tune-encoder-stages N)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    corpus = load_corpus(args.data, annotations=args.annotations)
    encoder = build_encoder(args.encoder)
    if args.tune_encoder_stages:
        encoder, _ = split_encoder(encoder, args.tune_encoder_stages)
    start = time.perf_counter()
    cache = extract_features(
        encoder,
        [image.path for image in corpus],
        cache_dir_for(args.out, encoder.spec.name, mirrored=args.mirrored),
        batch_size=args.batch_size,
        num_workers=args.workers,
        mirrored=args.mirrored,
    )
    print(f"{len(cache.names)} images -> {tuple(cache.features.shape)} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
