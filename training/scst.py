"""Self-critical sequence training (Rennie et al. 2017) on cached features.

    python -m training.scst --data ../shared/flickr8k --init runs/lite2/best.safetensors --run-dir runs/lite2_scst

Starts from a cross-entropy checkpoint and maximises CIDEr-D directly: for each image,
``--samples`` captions are sampled and REINFORCE pushes up the log-probability of the samples
that beat a baseline. ``--baseline mean`` (the default; Luo 2020, "a better variant of SCST")
uses the mean CIDEr-D of the image's other samples, which needs no greedy decoding and gives
every image zero-mean advantages; ``--baseline greedy`` (Rennie et al.) uses the CIDEr-D of
the image's greedy caption. On Flickr8k ``val`` the mean baseline reached a higher greedy
CIDEr (see the ablation table in docs/training.md). ``--ema-decay`` (e.g. 0.997) keeps an exponential moving
average of the weights (``torch.optim.swa_utils``); validation and ``best.safetensors`` then use the
average, and the log also records the raw weights' ``val_raw_CIDEr``. The objective is
:class:`training.self_critical.SelfCritical`; validation (greedy BLEU-4/CIDEr on ``val``),
``best.safetensors``, ``last.pt`` (atomic, ``--resume``), ``log.csv`` and ``curves.png`` are the
shared loop's (:mod:`training.loop`), as in ``training.train``. Starting from an SCST checkpoint
chains the stages: the new checkpoint's ``training["scst"]`` lists every stage's settings. ``--mirrored 0.5`` reads each
training image, with that chance, from a second cache of the images mirrored left to right
(``training.extract_features --mirrored``): an augmentation against fitting the training
references (captions are kept as they are; "left" and "right" are rare in Flickr8k).
``--tune-encoder-stages 1`` also trains the encoder's last stage and head; for a concept decoder,
``--imagenet-weight`` keeps the tuned top's ImageNet probabilities near the untuned encoder's.
``--bleu-weight`` adds sentence BLEU-4 to the CIDEr-D reward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from captioner.checkpoint import load_checkpoint
from training.concept_data import cached_slot_words
from training.config_cli import config_from_settings, config_parser, config_settings
from training.datasets import load_corpus
from training.distributed import Distributed
from training.encoder_tuning import TunedEncoderDecoder, cache_for, trunk_flags, tuned_split
from training.loop import train_epochs
from training.self_critical import BASELINES, SelfCritical, advantages, reward_words, sample_captions
from training.validation import ValidationSet

__all__ = ["ScstConfig", "advantages", "main", "reward_words", "sample_captions", "train_scst"]


@dataclass(frozen=True)
class ScstConfig:
    """Self-critical training settings (flags map 1:1 onto these fields)."""

    data: str = field(metadata={"help": "corpus folder (images/ + captions)"})
    init: str = field(metadata={"help": "cross-entropy checkpoint to start from"})
    run_dir: str = "runs/scst"
    annotations: str | None = None
    features: str = "runs/features"
    epochs: int = 10
    batch_size: int = 50
    samples: int = 5
    baseline: str = field(default="mean", metadata={"help": "mean (of the image's other samples) | greedy"})
    lr: float = 2e-5
    ema_decay: float = field(default=0.0, metadata={"help": "weight-average decay per step, 0 = off (e.g. 0.997)"})
    clip: float = 1.0
    max_length: int = 16
    patience: int = 3
    select_metric: str = field(
        default="CIDEr",
        metadata={
            "help": "val greedy CIDEr, BLEU-4, unfinished (the fewest captions that stop mid-phrase), "
            "or CIDEr_finished (CIDEr, kept only where no caption stops mid-phrase)"
        },
    )
    seed: int = 0
    threads: int = 0
    resume: bool = False
    max_train_images: int = 0
    mirrored: float = field(
        default=0.0,
        metadata={
            "help": "chance that a training image is read mirrored (cache from training.extract_features --mirrored)"
        },
    )
    sample_dropout: bool = field(
        default=False,
        metadata={"help": "sample the training captions with the model's dropout on (validation stays without)"},
    )
    copy_weight: float = field(
        default=0.0,
        metadata={
            "help": "concept decoders: weight of a term, on the copy tokens' classifier rows only, that makes "
            "the copy token beat the word it stands for where references name the concept (e.g. 1)"
        },
    )
    reward_end: bool = field(
        default=True,
        metadata={"help": "count <end> as a word in the CIDEr-D reward, so captions stop on a complete phrase"},
    )
    xe_weight: float = field(
        default=0.0,
        metadata={
            "help": "weight of the cross-entropy of one reference caption per image beside the reward "
            "(keeps the grammar: fewer captions that stop on 'a'; e.g. 0.1)"
        },
    )
    tune_encoder_stages: int = field(
        default=0,
        metadata={
            "help": "also train the encoder's last N stages and head (reads the trunk's cache from "
            "training.extract_features --tune-encoder-stages N)"
        },
    )
    imagenet_weight: float = field(
        default=1.0,
        metadata={
            "help": "concept decoders with --tune-encoder-stages: weight of the KL divergence that keeps the "
            "tuned top's ImageNet probabilities those of the untuned encoder (reads its cache too)"
        },
    )
    bleu_weight: float = field(
        default=0.0,
        metadata={"help": "add this much of each sample's sentence BLEU-4 to its CIDEr-D reward (e.g. 1)"},
    )
    unfinished_penalty: float = field(
        default=0.0,
        metadata={"help": "take this much from the reward of a sample that stops mid-phrase ('a', 'of a white', ...)"},
    )


def _stages(training: dict, stage: dict) -> list[dict]:
    """The SCST stages behind a checkpoint: the init checkpoint's (a dict or a list) plus ``stage``."""
    earlier = training.get("scst", [])
    return [*([earlier] if isinstance(earlier, dict) else earlier), stage]


def _some_mirrored(
    features: torch.Tensor, mirrored: torch.Tensor, chance: float, generator: torch.Generator
) -> torch.Tensor:
    """Each row of ``features`` replaced by its mirrored image's row with probability ``chance``."""
    picked = torch.rand(features.shape[0], generator=generator) < chance
    return torch.where(picked.view(-1, *[1] * (features.dim() - 1)), mirrored, features)


@torch.inference_mode()
def untuned_probabilities(model, maps: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """(N, 1000): a concept decoder's ImageNet probabilities of the untuned encoder's ``maps``."""
    return torch.cat([model.class_probabilities(maps[i : i + chunk]) for i in range(0, len(maps), chunk)])


def train_scst(config: ScstConfig) -> Path:
    """Run self-critical training; returns the best checkpoint's path."""
    if config.baseline not in BASELINES:
        raise ValueError(f"--baseline must be one of {BASELINES}, not {config.baseline!r}")
    if not 0.0 <= config.ema_decay < 1.0:
        raise ValueError(f"--ema-decay must be in [0, 1), not {config.ema_decay}")
    if not 0.0 <= config.mirrored <= 1.0:
        raise ValueError(f"--mirrored must be a probability in [0, 1], not {config.mirrored}")
    for flag, value in (("--unfinished-penalty", config.unfinished_penalty), ("--bleu-weight", config.bleu_weight)):
        if value < 0:
            raise ValueError(f"{flag} must be 0 or more, not {value}")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    initial = load_checkpoint(config.init)
    model, vocab, spec = initial.model, initial.vocab, initial.encoder
    cache_spec, extract_flags = spec, ""
    if config.imagenet_weight < 0:
        raise ValueError(f"--imagenet-weight must be 0 or more, not {config.imagenet_weight}")
    tuning = bool(config.tune_encoder_stages or initial.encoder_tuned_stages)
    if tuning:
        if not model.reads_map:
            raise ValueError(
                f"--tune-encoder-stages needs a decoder that reads the encoder's map, not {model.name!r} "
                "(train one with training.train --decoder soft_attention)"
            )
        trunk, top = tuned_split(initial, config.tune_encoder_stages)
        top.requires_grad_(True)
        model = TunedEncoderDecoder(model, top)
        cache_spec, extract_flags = trunk.spec, trunk_flags(spec.name, config.tune_encoder_stages)
    corpus = load_corpus(config.data, annotations=config.annotations)
    names = [image.name for image in corpus]
    features_root = Path(config.features)
    cache = cache_for(features_root, cache_spec, names, extract_flags=extract_flags)
    pooled = cache.model_inputs(initial.model.reads_map)
    mirrored_inputs = (
        cache_for(features_root, cache_spec, names, mirrored=True, extract_flags=extract_flags).model_inputs(
            initial.model.reads_map
        )
        if config.mirrored
        else None
    )
    train_images = [image for image in corpus if image.split == "train"]
    if config.max_train_images:
        train_images = train_images[: config.max_train_images]
    val_images = [image for image in corpus if image.split == "val"]
    train_rows = torch.from_numpy(cache.rows([image.name for image in train_images]))
    val_features = pooled[torch.from_numpy(cache.rows([image.name for image in val_images]))]
    table = initial.concepts
    train_slots = imagenet_targets = None
    if table is not None and tuning:
        # the slots, and the probabilities the tuned top keeps, from the untuned encoder's maps
        untuned = cache_for(features_root, spec, names)
        maps = untuned.model_inputs(True)[torch.from_numpy(untuned.rows([image.name for image in train_images]))]
        imagenet_targets = untuned_probabilities(initial.model, maps)
        train_slots = initial.model.concepts_from_probabilities(imagenet_targets).word_ids
    elif table is not None:
        train_slots = cached_slot_words(initial.model, pooled)[train_rows]

    def inputs(index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The model's inputs for training images ``index``: each one mirrored with chance ``--mirrored``."""
        features = pooled[train_rows[index]]
        if mirrored_inputs is None:
            return features
        return _some_mirrored(features, mirrored_inputs[train_rows[index]], config.mirrored, generator)

    settings = config_settings(config)

    def record(epoch: int, seconds: float) -> dict:
        """The checkpoint's training record: the init checkpoint's, and this stage's settings."""
        stage = {"config": settings, "epoch": epoch, "seconds": seconds}
        return {**initial.training, "scst": _stages(initial.training, stage)}

    objective = SelfCritical(
        model,
        images=train_images,
        inputs=inputs,
        slots=train_slots,
        val=ValidationSet(val_features, val_images, vocab, table, max_length=20),
        spec=spec,
        record=record,
        encoder_tuned_stages=config.tune_encoder_stages,
        batch_size=config.batch_size,
        samples=config.samples,
        baseline=config.baseline,
        lr=config.lr,
        ema_decay=config.ema_decay,
        clip=config.clip,
        max_length=config.max_length,
        seed=config.seed,
        sample_dropout=config.sample_dropout,
        copy_weight=config.copy_weight,
        reward_end=config.reward_end,
        xe_weight=config.xe_weight,
        imagenet_targets=imagenet_targets,
        imagenet_weight=config.imagenet_weight,
        bleu_weight=config.bleu_weight,
        unfinished_penalty=config.unfinished_penalty,
    )
    return train_epochs(
        objective,
        run_dir=run_dir,
        epochs=config.epochs,
        patience=config.patience,
        select_metric=config.select_metric,
        resume=config.resume,
        settings=settings,
        job=Distributed.single(),
    )


def main(argv: list[str] | None = None) -> None:
    config = config_from_settings(ScstConfig, vars(config_parser(ScstConfig, __doc__).parse_args(argv)))
    print(f"best checkpoint: {train_scst(config)}")


if __name__ == "__main__":
    main()
