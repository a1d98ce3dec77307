"""Fine-tune a checkpoint (the shipped one unless --init names another) on a folder of your own photos.

    python -m training.finetune --data my_photos/ --out runs/mine
    CAPTIONER_CHECKPOINT=runs/mine/best.safetensors python app.py

The folder holds the photos and a ``metadata.csv`` or ``metadata.jsonl`` (Hugging Face's
``imagefolder`` layout): one row per caption, the photo in ``file_name``, the caption in ``text``
(or ``caption``), an optional ``split`` (train / validation / test). Without a validation split,
10 % of the photos (at least one) are held out to choose the best epoch.

One command does it all: the photos' features are computed (into ``<out>/features``), the
captions' new words seen at least ``--min-count`` times join the vocabulary (every known word
keeps its weights), the decoder trains by cross-entropy from the checkpoint's weights with a
progress bar and ETA, and the epoch with the lowest loss on the held-out captions is kept as
``<out>/best.safetensors``, a checkpoint the app, the CLI and ``Captioner.load`` serve as they
are. It is ``training.train --init CHECKPOINT --grow-vocab`` with the checkpoint's own shape and
settings meant for a small folder; an encoder the checkpoint fine-tuned is kept as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from captioner.captioner import default_checkpoint_path
from captioner.checkpoint import read_metadata
from captioner.config import ModelConfig
from training.config_cli import config_parser
from training.train import TrainConfig, train

__all__ = ["FinetuneConfig", "main", "train_config"]


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning settings (command-line flags map 1:1 onto these fields)."""

    data: str = field(metadata={"help": "folder of photos with a metadata.csv or metadata.jsonl"})
    out: str = field(default="runs/finetuned", metadata={"help": "run folder: best.safetensors, log.csv, features"})
    init: str | None = field(default=None, metadata={"help": "checkpoint to start from (default: the shipped one)"})
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 16
    min_count: int = field(default=2, metadata={"help": "captions a new word needs to join the vocabulary"})
    patience: int = field(default=3, metadata={"help": "epochs without a lower val loss before stopping"})
    seed: int = 0
    threads: int = field(default=0, metadata={"help": "torch threads (0: its default)"})
    device: str | None = None
    resume: bool = False


def train_config(config: FinetuneConfig, init: Path, model: ModelConfig) -> TrainConfig:
    """The ``training.train`` settings: the checkpoint's shape, grown vocabulary, selection by val loss."""
    return TrainConfig(
        data=config.data,
        run_dir=config.out,
        features=str(Path(config.out) / "features"),
        model=model,  # the checkpoint's own shape and decoder
        min_count=config.min_count,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        lr_decay=1.0,
        patience=config.patience,
        select_metric="val_loss",
        seed=config.seed,
        threads=config.threads,
        resume=config.resume,
        device=config.device,
        init=str(init),
        grow_vocab=True,
    )


def main(argv: list[str] | None = None) -> Path:
    config = FinetuneConfig(**vars(config_parser(FinetuneConfig, __doc__).parse_args(argv)))
    init = Path(config.init) if config.init else default_checkpoint_path()
    meta = read_metadata(init)
    best = train(train_config(config, init, ModelConfig.from_dict(meta["config"])))
    print(f"fine-tuned checkpoint: {best}\nserve it: CAPTIONER_CHECKPOINT={best} python app.py")
    return best


if __name__ == "__main__":
    main()
