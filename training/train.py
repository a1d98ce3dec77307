"""Train the glue + LSTM decoder on cached encoder features.

    python -m training.train --data ../shared/flickr8k --run-dir runs/lite0

With no other option it trains the decoder the shipped checkpoint uses (``concept_attention``)
by cross-entropy with the settings of the shipped recipe's first stage (docs/training.md).

Builds the vocabulary from the train split, extracts (or reuses) features, trains with
Adam, gradient clipping and an LR schedule, checks greedy BLEU-4/CIDEr on ``val`` every
epoch, keeps the best model as ``best.safetensors`` and stops early. Every epoch writes
``last.pt`` atomically; ``--resume`` continues from it. ``log.csv`` and ``curves.png``
show the curves.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from captioner.checkpoint import load_checkpoint, save_checkpoint
from captioner.concepts import ConceptTable, caption_words
from captioner.config import ModelConfig
from captioner.decoders import Decoder, build_decoder, decoder_class, decoder_names
from captioner.decoders.layers import masked_cross_entropy
from captioner.decoding import greedy_decode
from captioner.encoders import build_encoder
from captioner.vocab import Vocabulary, tokenize
from training.batches import caption_batches, caption_pairs
from training.concept_data import (
    base_vocabulary,
    cached_slot_words,
    concept_vocabulary,
    prepare_concept_decoder,
    slotted_caption_pairs,
)
from training.config_cli import config_parser
from training.datasets import CaptionedImage, load_corpus
from training.distributed import Distributed, setup_distributed
from training.extract_features import cache_dir_for
from training.feature_cache import extract_features
from training.metrics import score_captions
from training.progress import format_row, restore_progress, save_progress, write_log
from training.vocab_growth import grow_vocabulary, rows_from_context, start_from

__all__ = ["TrainConfig", "main", "train"]


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (command-line flags map 1:1 onto these fields)."""

    data: str = field(metadata={"help": "corpus folder (images/ + captions)"})
    run_dir: str = "runs/default"
    annotations: str | None = None
    features: str = "runs/features"
    encoder: str = "efficientnet_lite0"
    min_count: int = 5
    embed_dim: int = 512
    hidden_dim: int = 512
    num_layers: int = 1
    dropout: float = 0.5
    image_dropout: float = 0.2
    epochs: int = field(default=8, metadata={"help": "0 with --init: convert that checkpoint to --decoder, untrained"})
    batch_size: int = 128
    lr: float = 1e-3
    lr_decay: float = 0.85
    weight_decay: float = 0.0
    clip: float = 5.0
    label_smoothing: float = 0.0
    max_length: int = 20
    patience: int = 3
    select_metric: str = field(default="BLEU-4", metadata={"help": "BLEU-4, CIDEr (val greedy) or val_loss"})
    seed: int = 0
    threads: int = 0
    resume: bool = False
    max_train_images: int = 0
    bucket_window: int = 0
    device: str | None = None
    decoder: str = field(default="concept_attention", metadata={"help": f"one of {', '.join(decoder_names())}"})
    attention_dim: int = 512
    attention_reg: float = 1.0
    tie_embeddings: bool = False
    init: str | None = field(
        default=None, metadata={"help": "start from this checkpoint's weights and vocabulary (slot tokens are added)"}
    )
    grow_vocab: bool = field(
        default=False, metadata={"help": "with --init: add the train captions' new words seen --min-count times"}
    )
    exclude_words: str = field(
        default="", metadata={"help": "leave out training images whose captions mention any of these words"}
    )
    concept_slots: int = field(default=3, metadata={"help": "concept decoders: concept words read per image"})
    concept_threshold: float = field(
        default=0.2, metadata={"help": "concept decoders: class probability a concept needs to fill a slot"}
    )


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def validate(
    model: Decoder,
    features: torch.Tensor,
    images: list[CaptionedImage],
    vocab: Vocabulary,
    *,
    max_length: int,
    batch_size: int = 250,
    table: ConceptTable | None = None,
) -> dict[str, float]:
    """Greedy-decode ``features`` and score against the images' references (fast, Java-free).

    Plain greedy over the whole vocabulary (``<unk>`` allowed), as the shipped model was selected.
    A concept decoder's copy tokens are filled from ``table``.
    """
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
        )
        captions = caption_texts(model, features[start : start + batch_size], decoded, vocab, table)
        predictions.update(
            {image.name: caption for image, caption in zip(images[start : start + batch_size], captions)}
        )
    references = {image.name: list(image.captions) for image in images}
    return score_captions(predictions, references, use_java=False, metrics=("BLEU", "CIDEr"))


def caption_texts(
    model: Decoder, features: torch.Tensor, decoded: list, vocab: Vocabulary, table: ConceptTable | None
) -> list[str]:
    """The decoded captions as text; a concept decoder's copy tokens become the images' concept words."""
    if table is None:
        return [" ".join(vocab.decode(seq.token_ids)) for seq in decoded]
    slots = model.concepts(features).word_ids.tolist()
    return [
        " ".join(caption_words(seq.token_ids, vocab.tokens, vocab.end_id, words, table))
        for seq, words in zip(decoded, slots)
    ]


def excluding(images: list[CaptionedImage], words: str) -> list[CaptionedImage]:
    """``images`` less those with a caption that mentions one of the space-separated ``words``."""
    banned = set(words.split())
    return [image for image in images if not any(banned & set(tokenize(c)) for c in image.captions)]


def train(config: TrainConfig) -> Path:
    """Run training (one process, or one rank of a ``torchrun`` job); returns the best checkpoint's path."""
    if config.threads:
        torch.set_num_threads(config.threads)
    job = setup_distributed(config.device)
    try:
        return _train(config, job)
    finally:
        job.close()


def _train(config: TrainConfig, job: Distributed) -> Path:
    decoder = decoder_class(config.decoder)  # an unknown name stops here, before any work
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _seed_everything(config.seed)
    corpus = load_corpus(config.data, annotations=config.annotations)
    encoder = build_encoder(config.encoder)
    cache = extract_features(
        encoder.to(job.device),
        [image.path for image in corpus],
        cache_dir_for(Path(config.features), config.encoder),
        rank=job.rank,
        world_size=job.world_size,
        barrier=job.barrier,
    )
    train_images = [image for image in corpus if image.split == "train"]
    if config.max_train_images:
        train_images = train_images[: config.max_train_images]
    val_images = [image for image in corpus if image.split == "val"]
    if not train_images or not val_images:
        raise ValueError("the corpus needs images in both the 'train' and 'val' splits")
    if config.exclude_words:
        kept = excluding(train_images, config.exclude_words)
        _log(job, f"--exclude-words: {len(train_images) - len(kept)} training images left out")
        train_images = kept
    initial = load_checkpoint(config.init) if config.init else None
    train_captions = [c for image in train_images for c in image.captions]
    vocab = (
        base_vocabulary(initial.vocab)
        if initial is not None
        else Vocabulary.build(train_captions, min_count=config.min_count)
    )
    new_words: list[str] = []
    if initial is not None and config.grow_vocab:
        grown = grow_vocabulary(vocab, train_captions, min_count=config.min_count)
        new_words, vocab = grown.tokens[len(vocab) :], grown
        _log(job, f"new words: {' '.join(new_words) or 'none'}")
    table = ConceptTable.load() if decoder.reads_concepts else None
    if table is not None:
        vocab = concept_vocabulary(vocab, config.concept_slots)
    pooled = cache.model_inputs(decoder.reads_map).to(job.device)
    val_features = pooled[torch.from_numpy(cache.rows([image.name for image in val_images])).to(job.device)]

    model_config = ModelConfig(
        encoder=config.encoder,
        feature_dim=encoder.feature_dim,
        vocab_size=len(vocab),
        embed_dim=config.embed_dim,
        hidden_dim=config.hidden_dim,
        num_layers=config.num_layers,
        dropout=config.dropout,
        image_dropout=config.image_dropout,
        decoder=config.decoder,
        attention_dim=config.attention_dim,
        tie_embeddings=config.tie_embeddings,
        **(
            {
                "concept_words": len(table.words),
                "concept_slots": config.concept_slots,
                "concept_threshold": config.concept_threshold,
            }
            if table is not None
            else {}
        ),
    )
    model = build_decoder(model_config).to(job.device)
    if table is not None:
        prepare_concept_decoder(model, table, encoder)
    if initial is not None:
        fresh = start_from(model, initial.model, initial.vocab, vocab, table)
        _log(job, f"started from {config.init}; new: {', '.join(fresh) or 'nothing'}")
    train_rows = cache.rows([image.name for image in train_images])
    if table is not None:  # captions name the image's concepts through its slots' copy tokens
        slots = cached_slot_words(model, pooled)
        pairs = slotted_caption_pairs(train_images, train_rows, vocab, slots, table)
        val_slots = slots[torch.from_numpy(cache.rows([image.name for image in val_images]))]
        val_pairs = slotted_caption_pairs(val_images, np.arange(len(val_images)), vocab, val_slots, table)
    else:
        pairs = caption_pairs(train_images, train_rows, vocab)
        val_pairs = caption_pairs(val_images, np.arange(len(val_images)), vocab)
    if new_words:  # each starts as what the model expected where the captions use it
        for token, heaviest in rows_from_context(model, pooled, pairs, list(map(vocab.id_of, new_words))).items():
            mix = ", ".join(f"{vocab.tokens[i]} {weight:.2f}" for i, weight in heaviest)
            _log(job, f"{vocab.tokens[token]} starts as {mix}")
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.lr_decay)
    history: list[dict] = []
    start_epoch, best_score, stale = 0, float("-inf"), 0
    resume_path, best_path = run_dir / "last.pt", run_dir / "best.safetensors"

    if config.resume and resume_path.is_file():
        state = torch.load(resume_path, map_location="cpu", weights_only=True)
        if state["vocab"] != vocab.tokens or ModelConfig.from_dict(state["model_config"]) != model_config:
            raise ValueError(
                f"{resume_path} was trained with a different vocabulary or model shape; "
                "use a new --run folder or the same data and settings"
            )
        start_epoch, best_score, stale, history = restore_progress(state, model, optimizer)
        scheduler.load_state_dict(state["scheduler"])
        _log(job, f"resumed from {resume_path} after epoch {start_epoch}")

    trainer = DistributedDataParallel(model) if job.enabled else model
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=job.device.type == "cuda")
    if job.is_main:
        (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
    _log(
        job,
        f"{len(train_images)} train images, {len(pairs)} captions, vocab {len(vocab)}, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters; {job.world_size} process(es) on "
        f"{job.device.type}, global batch {config.batch_size} ({config.batch_size // job.world_size} per process), "
        f"lr {config.lr}",
    )
    if config.epochs == 0 and initial is not None and job.is_main:  # --init --epochs 0: convert, train nothing
        scores = validate(model, val_features, val_images, vocab, max_length=config.max_length, table=table)
        _log(job, f"converted {config.init} without training: {scores}")
        save_checkpoint(
            best_path,
            model,
            vocab,
            encoder.spec,
            training={**initial.training, "converted": dataclasses.asdict(config)},
            metrics={"val_greedy": scores},
            concepts=table,
        )
    n_batches = -(-len(pairs) // config.batch_size)
    progress = tqdm(  # the whole run's batches: its ETA is the run's (less any early stop)
        total=n_batches * max(0, config.epochs - start_epoch), unit="batch", disable=not job.is_main
    )
    for epoch in range(start_epoch, config.epochs):
        if stale >= config.patience:
            break
        progress.set_description(f"epoch {epoch + 1}/{config.epochs}")
        started = time.perf_counter()
        model.train()
        total, count = 0.0, 0
        batches = caption_batches(
            pairs,
            global_batch=config.batch_size,
            epoch=epoch,
            seed=config.seed * 1000,
            rank=job.rank,
            world_size=job.world_size,
            bucket_window=config.bucket_window,
        )
        for rows, captions in batches:
            rows, captions = rows.to(job.device), captions.to(job.device)
            with autocast:
                loss = _loss(trainer, pooled[rows], captions, config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
            optimizer.step()
            total, count = total + loss.item() * len(rows), count + len(rows)
            progress.update()
        scheduler.step()
        if job.is_main:
            scores = validate(model, val_features, val_images, vocab, max_length=config.max_length, table=table)
            row = {
                "epoch": epoch + 1,
                "train_loss": total / count,
                "val_loss": validation_loss(model, val_features, val_pairs),
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": time.perf_counter() - started,
                **{f"val_{k}": v for k, v in scores.items()},
            }
            history.append(row)
            score = -row["val_loss"] if config.select_metric == "val_loss" else scores[config.select_metric]
            stale = 0 if score > best_score else stale + 1
            if stale == 0:
                best_score = score
                training = {
                    "config": dataclasses.asdict(config),
                    "epoch": epoch + 1,
                    "train_images": len(train_images),
                    "train_seconds": sum(h["seconds"] for h in history),
                    "processes": job.world_size,
                }
                save_checkpoint(
                    best_path,
                    model,
                    vocab,
                    encoder.spec,
                    training=training,
                    metrics={"val_greedy": scores},
                    concepts=table,
                )
            _log(job, format_row(row) + (" *" if stale == 0 else ""))
            write_log(run_dir, history)
            save_progress(
                resume_path,
                epoch=epoch + 1,
                model=model,
                optimizer=optimizer,
                best_score=best_score,
                stale=stale,
                history=history,
                scheduler=scheduler.state_dict(),
                vocab=vocab.tokens,
                model_config=model_config.to_dict(),
            )
        stale = _broadcast_int(job, stale)  # every rank stops early together
        job.barrier()
    progress.close()
    return best_path


def _loss(trainer, features: torch.Tensor, captions: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """Masked cross-entropy; for a decoder with attention, plus the doubly stochastic penalty (each
    location should receive about one unit of attention over the caption, Xu et al. eq. 14)."""
    targets = captions[:, 1:]
    if not decoder_class(config.decoder).has_attention:
        return masked_cross_entropy(trainer(features, captions), targets, label_smoothing=config.label_smoothing)
    logits, weights = trainer(features, captions, return_attention=True)  # (B, T-1, V), (B, T-1, L)
    loss = masked_cross_entropy(logits, targets, label_smoothing=config.label_smoothing)
    mask = (targets != 0).float()[:, :, None]
    coverage = (weights * mask).sum(dim=1)  # (B, L)
    return loss + config.attention_reg * ((1.0 - coverage) ** 2).mean()


def validation_loss(model: Decoder, features: torch.Tensor, pairs) -> float:
    """Teacher-forced masked cross-entropy on the validation captions (dropout off)."""
    model.eval()
    total, tokens = 0.0, 0
    with torch.inference_mode():
        for rows, captions in caption_batches(pairs, global_batch=500, epoch=0, seed=0):
            rows, captions = rows.to(features.device), captions.to(features.device)
            targets = captions[:, 1:]
            n = int((targets != 0).sum())
            total += float(masked_cross_entropy(model(features[rows], captions), targets)) * n
            tokens += n
    return total / tokens


def _broadcast_int(job: Distributed, value: int) -> int:
    if not job.enabled:
        return value
    tensor = torch.tensor([value], device=job.device if job.device.type == "cuda" else "cpu")
    torch.distributed.broadcast(tensor, src=0)
    return int(tensor.item())


def _log(job: Distributed, message: str) -> None:
    if job.is_main:
        tqdm.write(message)  # above the progress bar


def main(argv: list[str] | None = None) -> None:
    config = TrainConfig(**vars(config_parser(TrainConfig, __doc__).parse_args(argv)))
    best = train(config)
    print(f"best checkpoint: {best}")


if __name__ == "__main__":
    main()
