"""Calibration of the per-word probabilities the app shows: ECE and temperature scaling.

    python -m training.calibrate --checkpoint checkpoints/captioner.safetensors --data ../shared/flickr8k

Teacher-forces every reference caption of the split; at each position the model's top
word probability is compared with whether that top word is the reference's next word.
Reports the expected calibration error (15 equal-width bins) before and after fitting a
softmax temperature (NLL on the split), draws a reliability diagram, and with ``--apply``
stores the temperature in the checkpoint so the shown probabilities use it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch
from torch.nn.utils.rnn import pad_sequence

from captioner.checkpoint import load_checkpoint
from captioner.concepts import slotted_tokens
from captioner.vocab import tokenize
from training.datasets import SPLITS, load_corpus
from training.encoder_tuning import checkpoint_inputs

__all__ = ["expected_calibration_error", "fit_temperature", "main"]


def expected_calibration_error(confidence: torch.Tensor, correct: torch.Tensor, *, bins: int = 15) -> float:
    """Weighted mean |accuracy - confidence| over equal-width confidence bins."""
    edges = torch.linspace(0, 1, bins + 1)
    error = torch.zeros(())
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            error += inside.float().mean() * (correct[inside].float().mean() - confidence[inside].mean()).abs()
    return float(error)


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The temperature minimising the negative log-likelihood of ``targets``."""
    log_t = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


def _caption_ids(checkpoint, features: torch.Tensor, captions: list[str]) -> list[torch.Tensor]:
    """Token ids of ``captions``; for a concept decoder, the image's concept words as its copy tokens."""
    vocab = checkpoint.vocab
    if checkpoint.concepts is None:
        return [torch.tensor(vocab.encode(c)) for c in captions]
    slots = checkpoint.model.concepts(features).word_ids.tolist()
    return [
        torch.tensor(
            [vocab.start_id, *map(vocab.id_of, slotted_tokens(tokenize(c), s, checkpoint.concepts)), vocab.end_id]
        )
        for c, s in zip(captions, slots)
    ]


def _forced_logits(checkpoint, features: torch.Tensor, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    vocab, model = checkpoint.vocab, checkpoint.model.eval()
    logits_all, targets_all = [], []
    with torch.inference_mode():
        for start in range(0, len(captions), 500):
            chunk = features[start : start + 500]
            ids = pad_sequence(_caption_ids(checkpoint, chunk, captions[start : start + 500]), batch_first=True)
            # a concept decoder's empty slots are -inf: finite, they leave the fit's gradients defined
            logits = torch.nan_to_num(model(chunk, ids), neginf=-1e4)  # (B, T-1, V)
            keep = ids[:, 1:] != vocab.pad_id
            logits_all.append(logits[keep])
            targets_all.append(ids[:, 1:][keep])
    return torch.cat(logits_all), torch.cat(targets_all)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--annotations", type=Path)
    parser.add_argument("--features", type=Path, default=Path("runs/features"))
    parser.add_argument("--split", default="val", choices=SPLITS)
    parser.add_argument("--apply", action="store_true", help="store the fitted temperature in the checkpoint")
    parser.add_argument("--out", type=Path, help="JSON report (default: <checkpoint>.calibration.json)")
    args = parser.parse_args(argv)
    checkpoint = load_checkpoint(args.checkpoint)
    corpus = load_corpus(args.data, annotations=args.annotations)
    images = [image for image in corpus if image.split == args.split]
    inputs = checkpoint_inputs(checkpoint, args.features, [i.name for i in corpus], [i.name for i in images])
    rows = [n for n, image in enumerate(images) for _ in image.captions]
    captions = [c for image in images for c in image.captions]
    logits, targets = _forced_logits(checkpoint, inputs[rows], captions)
    temperature = fit_temperature(logits, targets)
    report = {"split": args.split, "positions": len(targets), "temperature": round(temperature, 4)}
    for name, scale in (("before", 1.0), ("after", temperature)):
        probs = torch.softmax(logits / scale, dim=-1)
        confidence, predicted = probs.max(dim=-1)
        correct = predicted == targets
        report[name] = {
            "ece": round(expected_calibration_error(confidence, correct), 4),
            "nll": round(float(torch.nn.functional.cross_entropy(logits / scale, targets)), 4),
            "accuracy": round(float(correct.float().mean()), 4),
            "mean_confidence": round(float(confidence.mean()), 4),
        }
        _reliability_plot(confidence, correct, args.checkpoint.with_suffix(f".reliability_{name}.png"), name)
    print(json.dumps(report, indent=2))
    out = args.out or args.checkpoint.with_suffix(".calibration.json")
    out.write_text(json.dumps(report, indent=2))
    if args.apply:
        decoding = {**checkpoint.decoding, "temperature": temperature}
        metrics = {**checkpoint.metrics, "calibration": report}
        dataclasses.replace(checkpoint, metrics=metrics, decoding=decoding).save(args.checkpoint)
        print(f"stored temperature {temperature:.3f} in {args.checkpoint}")
    return report


def _reliability_plot(confidence: torch.Tensor, correct: torch.Tensor, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = torch.linspace(0, 1, 16)
    centres, accuracy = [], []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            centres.append(float(confidence[inside].mean()))
            accuracy.append(float(correct[inside].float().mean()))
    fig, axis = plt.subplots(figsize=(4, 4))
    axis.plot([0, 1], [0, 1], "--", color="grey")
    axis.plot(centres, accuracy, marker="o")
    axis.set(xlabel="top-word probability", ylabel="fraction correct", title=f"reliability ({title} scaling)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
