"""Cross-entropy training with teacher forcing: the objective ``training.train`` runs.

Each step reads a batch of reference captions (a ``DistributedSampler`` shuffle, optionally
length-bucketed: :func:`training.batches.caption_batches`) and lowers the masked cross-entropy of
their next words given the previous ones, with Adam, weight decay and an exponential LR decay.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from captioner.checkpoint import save_checkpoint
from captioner.config import ModelConfig
from captioner.decoders import Decoder
from captioner.encoders import EncoderSpec
from training.batches import Pair, caption_batches
from training.distributed import Distributed
from training.loop import Objective
from training.validation import ValidationSet

__all__ = ["CrossEntropy", "masked_cross_entropy", "validation_loss"]


def masked_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, *, pad_id: int = 0, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Mean cross-entropy over non-padding positions. logits (B, T, V), targets (B, T)."""
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)),
        targets.reshape(-1),
        ignore_index=pad_id,
        label_smoothing=label_smoothing,
    )


class CrossEntropy(Objective):
    """Masked cross-entropy of the reference captions, teacher-forced; for a decoder with
    attention plus the doubly stochastic penalty (each location should receive about one unit of
    attention over the caption, Xu et al. eq. 14) weighted by ``attention_reg``.

    ``inputs`` holds every cached image's features (pooled vectors or maps), ``pairs`` the
    training captions as (row of ``inputs``, token ids); ``record(epoch, seconds)`` is the
    checkpoint's training record; ``encoder_kept``, the fine-tuned encoder weights the inputs were
    computed with, go into every checkpoint. Under ``torchrun`` the model trains as DistributedDataParallel.
    """

    columns = ("train_loss", "val_loss", "lr")

    def __init__(
        self,
        model: Decoder,
        *,
        inputs: torch.Tensor,
        pairs: list[Pair],
        val: ValidationSet,
        val_pairs: list[Pair],
        spec: EncoderSpec,
        record: Callable[[int, float], dict],
        job: Distributed,
        batch_size: int,
        lr: float,
        lr_decay: float,
        weight_decay: float,
        clip: float,
        label_smoothing: float,
        attention_reg: float,
        bucket_window: int,
        seed: int,
        encoder_kept: dict[str, Any] | None = None,
    ) -> None:
        self.encoder_kept = encoder_kept or {}
        self.model, self.inputs, self.pairs, self.val, self.val_pairs = model, inputs, pairs, val, val_pairs
        self.spec, self.record, self.job = spec, record, job
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=lr_decay)
        self.clip, self.label_smoothing, self.attention_reg = clip, label_smoothing, attention_reg
        self.batch_size, self.bucket_window, self.seed = batch_size, bucket_window, seed
        self.batch_count = -(-len(pairs) // batch_size)
        self.trainer = DistributedDataParallel(model) if job.enabled else model
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=job.device.type == "cuda")

    def batches(self, epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        return caption_batches(
            self.pairs,
            global_batch=self.batch_size,
            epoch=epoch,
            seed=self.seed * 1000,
            rank=self.job.rank,
            world_size=self.job.world_size,
            bucket_window=self.bucket_window,
        )

    def backward(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        rows, captions = (tensor.to(self.job.device) for tensor in batch)
        self.model.train()
        with self.autocast:
            loss = self._loss(self.inputs[rows], captions)
        loss.backward()
        return {"loss": loss.item() * len(rows), "captions": len(rows)}

    def _loss(self, features: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
        targets = captions[:, 1:]
        if not self.model.has_attention:
            return masked_cross_entropy(self.trainer(features, captions), targets, label_smoothing=self.label_smoothing)
        logits, weights = self.trainer(features, captions, return_attention=True)  # (B, T-1, V), (B, T-1, L)
        loss = masked_cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
        mask = (targets != 0).float()[:, :, None]
        coverage = (weights * mask).sum(dim=1)  # (B, L)
        return loss + self.attention_reg * ((1.0 - coverage) ** 2).mean()

    def epoch_columns(self, sums: dict[str, float]) -> dict[str, float]:
        return {
            "train_loss": sums["loss"] / sums["captions"],
            "val_loss": validation_loss(self.model, self.val.features, self.val_pairs),
            "lr": self.optimizer.param_groups[0]["lr"],
        }

    def validate(self) -> tuple[dict[str, float], dict[str, float]]:
        return self.val.scores(self.model), {}

    def save_best(self, path: Path, scores: dict[str, float], *, epoch: int, seconds: float) -> None:
        save_checkpoint(
            path,
            self.model,
            self.val.vocab,
            self.spec,
            training=self.record(epoch, seconds),
            metrics={"val_greedy": scores},
            concepts=self.val.table,
            **self.encoder_kept,
        )

    def resume_state(self) -> dict:
        return {"vocab": self.val.vocab.tokens, "model_config": self.model.config.to_dict()}

    def resume(self, state: dict, path: Path) -> None:
        if state["vocab"] != self.val.vocab.tokens or ModelConfig.from_dict(state["model_config"]) != self.model.config:
            raise ValueError(
                f"{path} was trained with a different vocabulary or model shape; "
                "use a new --run folder or the same data and settings"
            )


def validation_loss(model: Decoder, features: torch.Tensor, pairs: list[Pair]) -> float:
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
