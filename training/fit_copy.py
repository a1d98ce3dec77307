"""Fit a concept decoder's copy tokens (their classifier rows) with the rest of the decoder fixed.

    python -m training.fit_copy --checkpoint runs/ship/scst/best.safetensors --data ../shared/flickr8k \
        --out runs/ship/copy/best.safetensors

A decoder started from a checkpoint without concepts writes its copy tokens only once their
rows of the word classifier know when to fire. With every other weight fixed, this is a small
ranking problem over the decoder's hidden states on the training captions, teacher-forced
with the image's concept words as copy tokens: where a caption names a slot's concept, that
copy token should beat the word it stands for; everywhere else, no copy token should beat the
caption's word. Only the copy rows change, so captions that copy nothing stay as they were.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence
from tqdm import tqdm

from captioner.checkpoint import load_checkpoint
from training.batches import caption_pairs
from training.concept_data import cached_slot_words, slotted_caption_pairs
from training.datasets import load_corpus
from training.encoder_tuning import checkpoint_maps
from training.row_fit import classifier_inputs, recorded_settings, row_fit_parser

__all__ = ["copy_ranking_loss", "main"]


def copy_ranking_loss(
    hidden: torch.Tensor,
    word_logits: torch.Tensor,
    slot_rows: tuple[torch.Tensor, torch.Tensor],
    slot_mask: torch.Tensor,
    targets: torch.Tensor,
    replaced: torch.Tensor,
    base: int,
) -> torch.Tensor:
    """hidden (N, H), the fixed logits (N, V), the copy rows (weight (2K, H), bias (2K,)), each
    position's slot mask (N, 2K), its target (N,) and the word a copy target stands for (N,).
    Mean of softplus(replaced word - copy) at copy targets and softplus(best open copy - target)
    elsewhere."""
    copy_logits = hidden @ slot_rows[0].T + slot_rows[1] + slot_mask  # (N, 2K)
    is_copy = targets >= base
    losses = []
    if bool(is_copy.any()):
        chosen = copy_logits[is_copy].gather(1, (targets[is_copy] - base)[:, None]).squeeze(1)
        losses.append(F.softplus(word_logits[is_copy].gather(1, replaced[is_copy][:, None]).squeeze(1) - chosen))
    others = ~is_copy
    if bool(others.any()):
        best_copy = copy_logits[others].max(dim=1).values
        target_logit = word_logits[others].gather(1, targets[others][:, None]).squeeze(1)
        open_slot = torch.isfinite(best_copy)
        losses.append(F.softplus(best_copy[open_slot] - target_logit[open_slot]))
    return torch.cat(losses).mean()


def main(argv: list[str] | None = None) -> Path:
    parser = row_fit_parser(__doc__)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--batch-size", type=int, default=250)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    checkpoint = load_checkpoint(args.checkpoint)
    model, vocab, table = checkpoint.model.eval(), checkpoint.vocab, checkpoint.concepts
    if table is None:
        raise SystemExit(f"{args.checkpoint} has no concept decoder")
    model.requires_grad_(False)
    corpus = load_corpus(args.data)
    images = [image for image in corpus if image.split == "train"]
    # the maps the decoder reads (through a tuned encoder top, if the checkpoint has one)
    features = checkpoint_maps(checkpoint, args.features, [image.name for image in corpus], [i.name for i in images])
    rows = np.arange(len(images))
    slots = cached_slot_words(model, features)
    with_slot = [i for i, image in enumerate(images) if bool((slots[rows[i]] >= 0).any())]
    pairs = slotted_caption_pairs([images[i] for i in with_slot], rows[with_slot], vocab, slots, table)
    plain = caption_pairs([images[i] for i in with_slot], rows[with_slot], vocab)
    base = model.base_vocab_size
    head = model.head
    slot_rows = (
        head.weight[base:].detach().clone().requires_grad_(True),
        head.bias[base:].detach().clone().requires_grad_(True),
    )
    optimizer = torch.optim.Adam(slot_rows, lr=args.lr)
    started = time.perf_counter()
    for epoch in range(args.epochs):
        order = torch.randperm(len(pairs))
        total, count = 0.0, 0
        for start in tqdm(range(0, len(order), args.batch_size), desc=f"copy rows {epoch + 1}", leave=False):
            batch = order[start : start + args.batch_size].tolist()
            slotted = pad_sequence([pairs[i][1] for i in batch], batch_first=True)
            words = pad_sequence([plain[i][1] for i in batch], batch_first=True)
            maps = features[torch.tensor([pairs[i][0] for i in batch])]
            with torch.no_grad():
                mask = model.slot_mask(model.concepts(maps))  # (B, 2K): the copy tokens' additive mask
                logits, hidden = classifier_inputs(model, maps, slotted)  # (B, T-1, V), (B, T-1, H)
            targets, replaced = slotted[:, 1:], words[:, 1:]
            keep = targets != vocab.pad_id
            positions_mask = mask[:, None, :].expand(-1, targets.shape[1], -1)[keep]
            loss = copy_ranking_loss(
                hidden[keep], logits[keep], slot_rows, positions_mask, targets[keep], replaced[keep], base
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(batch), count + len(batch)
        print(f"epoch {epoch + 1}: copy ranking loss {total / count:.4f} ({time.perf_counter() - started:.0f} s)")
    with torch.no_grad():
        head.weight[base:] = slot_rows[0]
        head.bias[base:] = slot_rows[1]
    training = {**checkpoint.training, "fit_copy": recorded_settings(args)}
    dataclasses.replace(checkpoint, training=training).save(args.out)
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
