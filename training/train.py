"""Train the glue + LSTM decoder on cached encoder features.

    python -m training.train --data ../shared/flickr8k --run-dir runs/lite0

With no other option it trains the decoder the shipped checkpoint uses (``concept_attention``)
by cross-entropy with the settings of the shipped recipe's first stage (docs/training.md).

Builds the vocabulary from the train split, extracts (or reuses) features, builds the decoder
and trains it by cross-entropy (:class:`training.cross_entropy.CrossEntropy`: Adam, gradient
clipping and an LR schedule) in the shared loop (:mod:`training.loop`), which checks greedy
BLEU-4/CIDEr on ``val`` every epoch, keeps the best model as ``best.safetensors`` and stops
early. Every epoch writes ``last.pt`` atomically; ``--resume`` continues from it. ``log.csv``
and ``curves.png`` show the curves.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from captioner.checkpoint import load_checkpoint, save_checkpoint
from captioner.concepts import ConceptTable
from captioner.config import ModelConfig
from captioner.decoders import build_decoder, decoder_class, decoder_names
from captioner.vocab import Vocabulary, tokenize
from training.batches import caption_pairs
from training.concept_data import (
    base_vocabulary,
    cached_slot_words,
    concept_vocabulary,
    prepare_concept_decoder,
    slotted_caption_pairs,
)
from training.config_cli import config_from_settings, config_parser, config_settings
from training.cross_entropy import CrossEntropy
from training.datasets import CaptionedImage, load_corpus
from training.distributed import Distributed, setup_distributed
from training.encoder_tuning import encoder_to_train_on
from training.extract_features import cache_dir_for
from training.feature_cache import extract_features
from training.loop import BEST_FILE, train_epochs
from training.validation import ValidationSet
from training.vocab_growth import grow_vocabulary, rows_from_context, start_from

__all__ = ["MODEL_FLAGS", "TrainConfig", "main", "train"]

MODEL_FLAGS = {  # the model's shape as flags (name -> help); its other fields come from the data
    "encoder": "",
    "embed_dim": "",
    "hidden_dim": "",
    "num_layers": "",
    "dropout": "",
    "image_dropout": "",
    "decoder": f"one of {', '.join(decoder_names())}",
    "attention_dim": "",
    "tie_embeddings": "",
    "concept_slots": "concept decoders: concept words read per image",
    "concept_threshold": "concept decoders: class probability a concept needs to fill a slot",
}


@dataclass(frozen=True)
class TrainConfig:
    """Training settings: command-line flags map 1:1 onto these fields and onto ``model``'s
    :data:`MODEL_FLAGS` fields (:func:`~training.config_cli.config_from_settings` builds one from flags)."""

    data: str = field(metadata={"help": "corpus folder (images/ + captions)"})
    run_dir: str = "runs/default"
    annotations: str | None = None
    features: str = "runs/features"
    model: ModelConfig = field(  # the shipped decoder; its concept settings (other decoders store none)
        default=ModelConfig(decoder="concept_attention", image_dropout=0.2, concept_slots=3, concept_threshold=0.2),
        metadata={"flags": MODEL_FLAGS},
    )
    min_count: int = 5
    epochs: int = field(default=8, metadata={"help": "0 with --init: convert that checkpoint to --decoder, untrained"})
    batch_size: int = 128
    lr: float = 1e-3
    lr_decay: float = 0.85
    weight_decay: float = 0.0
    clip: float = 5.0
    label_smoothing: float = 0.0
    max_length: int = 20
    patience: int = 3
    select_metric: str = field(
        default="BLEU-4", metadata={"help": "BLEU-4, CIDEr, unfinished (val greedy) or val_loss"}
    )
    seed: int = 0
    threads: int = 0
    resume: bool = False
    max_train_images: int = 0
    bucket_window: int = 0
    device: str | None = None
    attention_reg: float = 1.0
    init: str | None = field(
        default=None, metadata={"help": "start from this checkpoint's weights and vocabulary (slot tokens are added)"}
    )
    grow_vocab: bool = field(
        default=False, metadata={"help": "with --init: add the train captions' new words seen --min-count times"}
    )
    keep_imagenet_head: bool = field(
        default=False,
        metadata={
            "help": "with --init of a checkpoint whose encoder top was tuned without its ImageNet head (a "
            "soft-attention model's): a concept decoder reads the head through that top; a later "
            "scst --tune-encoder-stages stage pulls its probabilities back (--imagenet-weight)"
        },
    )
    exclude_words: str = field(
        default="", metadata={"help": "leave out training images whose captions mention any of these words"}
    )


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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
    decoder = decoder_class(config.model.decoder)  # an unknown name stops here, before any work
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _seed_everything(config.seed)
    corpus = load_corpus(config.data, annotations=config.annotations)
    initial = load_checkpoint(config.init) if config.init else None
    encoder, cache_name, encoder_kept = encoder_to_train_on(
        config.model.encoder, initial, keep_imagenet_head=config.keep_imagenet_head
    )
    cache = extract_features(
        encoder.to(job.device),
        [image.path for image in corpus],
        cache_dir_for(Path(config.features), cache_name),
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
        job.log(f"--exclude-words: {len(train_images) - len(kept)} training images left out")
        train_images = kept
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
        job.log(f"new words: {' '.join(new_words) or 'none'}")
    table = ConceptTable.load() if decoder.reads_concepts else None
    if table is not None:
        vocab = concept_vocabulary(vocab, config.model.concept_slots)
    pooled = cache.model_inputs(decoder.reads_map).to(job.device)
    val_features = pooled[torch.from_numpy(cache.rows([image.name for image in val_images])).to(job.device)]

    model = build_decoder(_model_config(config.model, encoder.feature_dim, len(vocab), table)).to(job.device)
    if table is not None:
        prepare_concept_decoder(model, table, encoder, vocab)
    if initial is not None:
        fresh = start_from(model, initial.model, initial.vocab, vocab, table)
        job.log(f"started from {config.init}; new: {', '.join(fresh) or 'nothing'}")
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
            job.log(f"{vocab.tokens[token]} starts as {mix}")

    settings = config_settings(config)
    val = ValidationSet(val_features, val_images, vocab, table, max_length=config.max_length)

    def record(epoch: int, seconds: float) -> dict:
        """The checkpoint's training record."""
        return {
            "config": settings,
            "epoch": epoch,
            "train_images": len(train_images),
            "train_seconds": seconds,
            "processes": job.world_size,
        }

    objective = CrossEntropy(
        model,
        inputs=pooled,
        pairs=pairs,
        val=val,
        val_pairs=val_pairs,
        spec=encoder.spec,
        record=record,
        job=job,
        batch_size=config.batch_size,
        lr=config.lr,
        lr_decay=config.lr_decay,
        weight_decay=config.weight_decay,
        clip=config.clip,
        label_smoothing=config.label_smoothing,
        attention_reg=config.attention_reg,
        bucket_window=config.bucket_window,
        seed=config.seed,
        encoder_kept=encoder_kept,
    )
    job.log(
        f"{len(train_images)} train images, {len(pairs)} captions, vocab {len(vocab)}, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters; {job.world_size} process(es) on "
        f"{job.device.type}, global batch {config.batch_size} ({config.batch_size // job.world_size} per process), "
        f"lr {config.lr}"
    )
    if config.epochs == 0 and initial is not None and job.is_main:  # --init --epochs 0: convert, train nothing
        scores = val.scores(model)
        job.log(f"converted {config.init} without training: {scores}")
        save_checkpoint(
            run_dir / BEST_FILE,
            model,
            vocab,
            encoder.spec,
            training={**initial.training, "converted": settings},
            metrics={"val_greedy": scores},
            concepts=table,
            **encoder_kept,
        )
    return train_epochs(
        objective,
        run_dir=run_dir,
        epochs=config.epochs,
        patience=config.patience,
        select_metric=config.select_metric,
        resume=config.resume,
        settings=settings,
        job=job,
    )


def _model_config(chosen: ModelConfig, feature_dim: int, vocab_size: int, table: ConceptTable | None) -> ModelConfig:
    """The model's shape: ``chosen`` by the flags, completed from the encoder, the vocabulary and
    the concept table; a decoder without concepts keeps the library's concept defaults."""
    if table is None:
        plain = ModelConfig()
        concepts = {"concept_slots": plain.concept_slots, "concept_threshold": plain.concept_threshold}
    else:
        concepts = {"concept_words": len(table.words)}
    return replace(chosen, feature_dim=feature_dim, vocab_size=vocab_size, **concepts)


def main(argv: list[str] | None = None) -> None:
    config = config_from_settings(TrainConfig, vars(config_parser(TrainConfig, __doc__).parse_args(argv)))
    best = train(config)
    print(f"best checkpoint: {best}")


if __name__ == "__main__":
    main()
