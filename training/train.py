"""Train the glue + LSTM decoder on cached encoder features.

    python -m training.train --data ../shared/flickr8k --run runs/lite0

Builds the vocabulary from the train split, extracts (or reuses) features, trains with
Adam, gradient clipping and an LR schedule, checks greedy BLEU-4/CIDEr on ``val`` every
epoch, keeps the best model as ``best.safetensors`` and stops early. Every epoch writes
``last.pt`` atomically; ``--resume`` continues from it. ``log.csv`` and ``curves.png``
show the curves.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from tqdm import tqdm

from captioner.checkpoint import save_checkpoint
from captioner.config import ModelConfig
from captioner.decoding import greedy_decode
from captioner.encoders import build_encoder
from captioner.model import CaptionModel, masked_cross_entropy
from captioner.vocab import Vocabulary
from training.datasets import CaptionedImage, load_corpus
from training.extract_features import cache_dir_for
from training.feature_cache import extract_features
from training.metrics import score_captions
from training.plots import plot_curves

__all__ = ["TrainConfig", "main", "train"]


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (command-line flags map 1:1 onto these fields)."""

    data: str
    run: str = "runs/default"
    annotations: str | None = None
    features: str = "runs/features"
    encoder: str = "efficientnet_lite0"
    min_count: int = 5
    embed_dim: int = 512
    hidden_dim: int = 512
    num_layers: int = 1
    dropout: float = 0.5
    image_dropout: float = 0.5
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    lr_decay: float = 0.8
    weight_decay: float = 0.0
    clip: float = 5.0
    label_smoothing: float = 0.0
    max_length: int = 20
    patience: int = 5
    select_metric: str = "BLEU-4"
    seed: int = 0
    threads: int = 0
    resume: bool = False
    max_train_images: int = 0


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _caption_pairs(images: list[CaptionedImage], rows: np.ndarray, vocab: Vocabulary):
    """(feature row, token ids) for every caption."""
    return [
        (int(row), torch.tensor(vocab.encode(caption)))
        for image, row in zip(images, rows)
        for caption in image.captions
    ]


def _batches(pairs, batch_size: int, generator: torch.Generator, *, window: int = 50):
    """Shuffled batches of similar-length captions (less padding, same data every epoch).

    The shuffled captions are cut into windows of ``window`` batches; each window is sorted
    by length and split into batches, and the batches are shuffled again.
    """
    order = torch.randperm(len(pairs), generator=generator).tolist()
    span = batch_size * window
    batches = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span], key=lambda i: len(pairs[i][1]))
        batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    for index in torch.randperm(len(batches), generator=generator).tolist():
        chunk = [pairs[i] for i in batches[index]]
        rows = torch.tensor([row for row, _ in chunk])
        captions = pad_sequence([ids for _, ids in chunk], batch_first=True, padding_value=0)
        yield rows, captions


def _pooled(cache_features: np.ndarray) -> torch.Tensor:
    """(N, C, H, W) fp16 maps -> (N, C) float32 pooled vectors, in chunks to bound memory."""
    chunks = [
        torch.from_numpy(np.asarray(cache_features[i : i + 1024], dtype=np.float32)).mean(dim=(2, 3))
        for i in range(0, cache_features.shape[0], 1024)
    ]
    return torch.cat(chunks)


def validate(
    model: CaptionModel,
    features: torch.Tensor,
    images: list[CaptionedImage],
    vocab: Vocabulary,
    *,
    max_length: int,
    batch_size: int = 250,
) -> dict[str, float]:
    """Greedy-decode ``features`` and score against the images' references (fast, Java-free)."""
    model.eval()
    predictions = {}
    for start in range(0, len(images), batch_size):
        decoded = greedy_decode(
            model,
            features[start : start + batch_size],
            start_id=vocab.start_id,
            end_id=vocab.end_id,
            max_length=max_length,
            top_k=1,
            suppress_ids=vocab.never_generated_ids,
        )
        for image, seq in zip(images[start : start + batch_size], decoded):
            predictions[image.name] = " ".join(vocab.decode(seq.token_ids))
    references = {image.name: list(image.captions) for image in images}
    return score_captions(predictions, references, use_java=False, metrics=("BLEU", "CIDEr"))


def _save_resume(path: Path, state: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(config: TrainConfig) -> Path:
    """Run training; returns the path of the best checkpoint."""
    if config.threads:
        torch.set_num_threads(config.threads)
    run_dir = Path(config.run)
    run_dir.mkdir(parents=True, exist_ok=True)

    corpus = load_corpus(config.data, annotations=config.annotations)
    encoder = build_encoder(config.encoder)
    cache = extract_features(
        encoder, [image.path for image in corpus], cache_dir_for(Path(config.features), config.encoder)
    )
    train_images = [image for image in corpus if image.split == "train"]
    if config.max_train_images:
        train_images = train_images[: config.max_train_images]
    val_images = [image for image in corpus if image.split == "val"]
    if not train_images or not val_images:
        raise ValueError("the corpus needs images in both the 'train' and 'val' splits")
    vocab = Vocabulary.build((c for image in train_images for c in image.captions), min_count=config.min_count)
    pooled = _pooled(cache.features)
    train_rows = cache.rows([image.name for image in train_images])
    val_features = pooled[torch.from_numpy(cache.rows([image.name for image in val_images]))]
    pairs = _caption_pairs(train_images, train_rows, vocab)

    model_config = ModelConfig(
        encoder=config.encoder,
        feature_dim=encoder.feature_dim,
        vocab_size=len(vocab),
        embed_dim=config.embed_dim,
        hidden_dim=config.hidden_dim,
        num_layers=config.num_layers,
        dropout=config.dropout,
        image_dropout=config.image_dropout,
    )
    _seed_everything(config.seed)  # after feature extraction, which may or may not draw random numbers
    model = CaptionModel(model_config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.lr_decay)
    history: list[dict] = []
    start_epoch, best_score, stale = 0, -1.0, 0
    resume_path, best_path = run_dir / "last.pt", run_dir / "best.safetensors"

    if config.resume and resume_path.is_file():
        state = torch.load(resume_path, map_location="cpu", weights_only=True)
        if state["vocab"] != vocab.tokens or state["model_config"] != model_config.to_dict():
            raise ValueError(
                f"{resume_path} was trained with a different vocabulary or model shape; "
                "use a new --run folder or the same data and settings"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, best_score, stale = state["epoch"], state["best_score"], state["stale"]
        history = json.loads(state["history"])
        print(f"resumed from {resume_path} after epoch {start_epoch}")

    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
    print(
        f"{len(train_images)} train images, {len(pairs)} captions, vocab {len(vocab)}, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters"
    )
    for epoch in range(start_epoch, config.epochs):
        if stale >= config.patience:
            break
        started = time.perf_counter()
        model.train()
        generator = torch.Generator().manual_seed(config.seed * 1000 + epoch)
        total, count = 0.0, 0
        n_batches = (len(pairs) + config.batch_size - 1) // config.batch_size
        for rows, captions in tqdm(
            _batches(pairs, config.batch_size, generator),
            total=n_batches,
            desc=f"epoch {epoch + 1}",
            leave=False,
        ):
            logits = model(pooled[rows], captions)  # (B, T-1, V)
            loss = masked_cross_entropy(logits, captions[:, 1:], label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
            optimizer.step()
            total, count = total + loss.item() * len(rows), count + len(rows)
        scheduler.step()
        scores = validate(model, val_features, val_images, vocab, max_length=config.max_length)
        row = {
            "epoch": epoch + 1,
            "train_loss": total / count,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - started,
            **{f"val_{k}": v for k, v in scores.items()},
        }
        history.append(row)
        score = scores[config.select_metric]
        if score > best_score:
            best_score, stale = score, 0
            save_checkpoint(
                best_path,
                model,
                vocab,
                encoder.spec,
                training={
                    "config": dataclasses.asdict(config),
                    "epoch": epoch + 1,
                    "train_images": len(train_images),
                    "train_seconds": sum(h["seconds"] for h in history),
                },
                metrics={"val_greedy": scores},
            )
        else:
            stale += 1
        print(
            " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
            + (" *" if stale == 0 else ""),
            flush=True,
        )
        _write_log(run_dir, history)
        _save_resume(
            resume_path,
            {
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "best_score": best_score,
                "stale": stale,
                "history": json.dumps(history),
                "vocab": vocab.tokens,
                "model_config": model_config.to_dict(),
            },
        )
    return best_path


def _write_log(run_dir: Path, history: list[dict]) -> None:
    with open(run_dir / "log.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    plot_curves(history, run_dir / "curves.png")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        if field.type == "bool":
            parser.add_argument(flag, action="store_true", help=f"(default {field.default})")
        elif field.name == "data":
            parser.add_argument(flag, required=True, help="corpus folder (images/ + captions)")
        else:
            kind = {"int": int, "float": float}.get(field.type, str)
            parser.add_argument(flag, type=kind, default=field.default, help=f"(default {field.default})")
    return parser


def main(argv: list[str] | None = None) -> None:
    config = TrainConfig(**vars(_parser().parse_args(argv)))
    best = train(config)
    print(f"best checkpoint: {best}")


if __name__ == "__main__":
    main()
