"""Caption batches for training: a ``DistributedSampler`` shuffle, optionally length-bucketed.

Every rank draws the same epoch permutation (seed + epoch) and takes its share, so the
union of the ranks' i-th batches is the i-th global batch of a single-process run.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data.distributed import DistributedSampler

from captioner.vocab import Vocabulary

__all__ = ["caption_pairs", "caption_batches"]

Pair = tuple[int, torch.Tensor]  # (feature row, token ids)


def caption_pairs(images, rows: np.ndarray, vocab: Vocabulary) -> list[Pair]:
    """(feature row, token ids) for every caption of every image."""
    return [
        (int(row), torch.tensor(vocab.encode(caption)))
        for image, row in zip(images, rows)
        for caption in image.captions
    ]


def caption_batches(
    pairs: list[Pair],
    *,
    global_batch: int,
    epoch: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    bucket_window: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's batches of (feature rows (b,), padded captions (b, T)); b = global_batch / world_size.

    ``bucket_window`` > 0 sorts each run of that many batches by caption length (less
    padding, faster on CPU) and shuffles the batches again; 0 keeps the plain shuffle.
    """
    if global_batch % world_size:
        raise ValueError(f"the global batch {global_batch} must divide evenly over {world_size} processes")
    per_rank = global_batch // world_size
    sampler = DistributedSampler(pairs, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    order = list(sampler)
    if bucket_window:
        span = per_rank * bucket_window
        batches = []
        for start in range(0, len(order), span):
            chunk = sorted(order[start : start + span], key=lambda i: len(pairs[i][1]))
            batches += [chunk[j : j + per_rank] for j in range(0, len(chunk), per_rank)]
        shuffle = torch.Generator().manual_seed(seed + epoch)
        batches = [batches[i] for i in torch.randperm(len(batches), generator=shuffle).tolist()]
    else:
        batches = [order[j : j + per_rank] for j in range(0, len(order), per_rank)]
    for batch in batches:
        rows = torch.tensor([pairs[i][0] for i in batch])
        captions = pad_sequence([pairs[i][1] for i in batch], batch_first=True, padding_value=0)
        yield rows, captions
