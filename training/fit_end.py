"""Fit the decoder's ``<end>`` row so that captions stop where a sentence can, with the rest fixed.

    python -m training.fit_end --checkpoint runs/ship/ship.safetensors --data ../shared/flickr8k \
        --out runs/ship/ship_end.safetensors

A few greedy captions end a noun phrase before its noun ("two women are standing in front of a
white"): ``<end>`` wins right after an article and its modifiers. This stage greedy-decodes the
training images, teacher-forces those captions through the decoder, and fits the ``<end>`` row of
the word classifier alone (weight and bias: one logit) so that, where a caption stopped mid-phrase
(:func:`training.mentions.stops_mid_phrase`), the best other word beats ``<end>``, while every other
decision of those captions keeps its side (``<end>`` still wins where a finished caption ends, and
still loses everywhere else) by at least the margin it had, up to 1. Only the ``<end>`` row
changes, so captions whose decisions keep their sides stay as they were.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence
from tqdm import tqdm

from captioner.checkpoint import load_checkpoint
from captioner.decoding import greedy_decode
from training.datasets import load_corpus
from training.encoder_tuning import checkpoint_maps
from training.mentions import stops_mid_phrase
from training.row_fit import classifier_inputs, recorded_settings, row_fit_parser

__all__ = ["EndDecisions", "end_row_loss", "main"]


@dataclasses.dataclass(frozen=True)
class EndDecisions:
    """Every step of the training images' greedy captions, teacher-forced: the decoder's hidden
    state (N, H), the ``<end>`` logit and the best other word's logit (N,), and which steps end a
    caption mid-phrase (``unfinished``) or end a finished one (``finished``)."""

    hidden: torch.Tensor
    end_logit: torch.Tensor
    best_other: torch.Tensor
    unfinished: torch.Tensor
    finished: torch.Tensor


def end_row_loss(end_logit: torch.Tensor, decisions: EndDecisions, weight: float) -> torch.Tensor:
    """``end_logit`` (N,): the ``<end>`` logits of the fitted row. softplus(end - best other + 1) at the
    unfinished ends, plus ``weight`` times each other step's loss of margin (its side of the best other
    word, at least as far as before up to 1), summed and divided by the number of unfinished ends."""
    bad = decisions.unfinished
    keep = ~bad
    side = torch.where(decisions.finished[keep], 1.0, -1.0)  # finished ends: <end> above; elsewhere below
    before = (side * (decisions.end_logit[keep] - decisions.best_other[keep])).clamp(max=1.0)
    after = side * (end_logit[keep] - decisions.best_other[keep])
    fixed = F.softplus(end_logit[bad] - decisions.best_other[bad] + 1.0).sum()
    return (fixed + weight * F.relu(before - after).sum()) / max(1, int(bad.sum()))


def greedy_end_decisions(model, vocab, maps: torch.Tensor, *, max_length: int, batch_size: int) -> EndDecisions:  # noqa: ANN001
    """Greedy-decode ``maps`` with ``model`` (a reference decoder) and teacher-force its captions back
    through it, keeping every step's hidden state (the word classifier's input) and logits."""
    end, parts = vocab.end_id, []
    for start in tqdm(range(0, len(maps), batch_size), desc="greedy captions", leave=False):
        batch = maps[start : start + batch_size]
        with torch.no_grad():
            decoded = greedy_decode(
                model,
                batch,
                start_id=vocab.start_id,
                end_id=end,
                max_length=max_length,
                top_k=1,
                suppress_ids=vocab.never_generated_ids,
            )
            captions = [torch.tensor([vocab.start_id, *d.token_ids]) for d in decoded]
            tokens = pad_sequence(captions, batch_first=True, padding_value=vocab.pad_id)
            logits, hidden = classifier_inputs(model, batch, tokens)  # predicting tokens[:, 1:]
        steps = tokens[:, 1:] != vocab.pad_id
        ends = tokens[:, 1:] == end
        stopped = torch.tensor([stops_mid_phrase([vocab.tokens[t] for t in d.token_ids if t != end]) for d in decoded])
        end_logit = logits[..., end].clone()
        logits[..., [end, *vocab.never_generated_ids]] = float("-inf")  # the best word greedy may choose
        parts.append(
            (
                hidden[steps],
                end_logit[steps],
                logits.max(dim=-1).values[steps],
                (ends & stopped[:, None])[steps],
                (ends & ~stopped[:, None])[steps],
            )
        )
    return EndDecisions(*(torch.cat(column) for column in zip(*parts)))


def main(argv: list[str] | None = None) -> Path:
    parser = row_fit_parser(__doc__)
    parser.add_argument("--weight", type=float, default=0.3, help="weight of the other decisions' margins")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-length", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=250)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    checkpoint = load_checkpoint(args.checkpoint)
    model, vocab = checkpoint.model.eval(), checkpoint.vocab
    embed = getattr(model, "embed", None)
    if embed is not None and model.head.weight is embed.weight:
        raise SystemExit(f"{args.checkpoint} ties its word classifier to its embeddings: the <end> row is not its own")
    model.requires_grad_(False)
    corpus = load_corpus(args.data)
    names = [image.name for image in corpus if image.split == "train"]
    maps = checkpoint_maps(checkpoint, args.features, [image.name for image in corpus], names)
    decisions = greedy_end_decisions(model, vocab, maps, max_length=args.max_length, batch_size=args.batch_size)
    end = vocab.end_id
    row = (
        model.head.weight[end].detach().clone().requires_grad_(True),
        model.head.bias[end].detach().clone().requires_grad_(True),
    )
    optimizer = torch.optim.Adam(row, lr=args.lr)
    for _ in tqdm(range(args.steps), desc="<end> row", leave=False):
        loss = end_row_loss(decisions.hidden @ row[0] + row[1], decisions, args.weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        fitted = decisions.hidden @ row[0] + row[1]
        flipped = (fitted > decisions.best_other) != (decisions.end_logit > decisions.best_other)
        model.head.weight[end] = row[0]
        model.head.bias[end] = row[1]
    unfinished = int(decisions.unfinished.sum())
    still = int((fitted[decisions.unfinished] > decisions.best_other[decisions.unfinished]).sum())
    others = int(flipped[~decisions.unfinished].sum())
    print(
        f"{len(names)} training captions, {unfinished} stopped mid-phrase: {still} still would; "
        f"{others} other decisions changed side ({time.perf_counter() - started:.0f} s)"
    )
    record = recorded_settings(args) | {
        "unfinished_before": unfinished,
        "unfinished_after": still,
        "other_decisions_changed": others,
    }
    dataclasses.replace(checkpoint, training={**checkpoint.training, "fit_end": record}).save(args.out)
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
