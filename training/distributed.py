"""PyTorch distributed set-up for ``torchrun``: process group, device, rank-0 helpers.

A plain ``python -m training.train`` is a world of one; under
``torchrun --nproc_per_node=N`` (or multi-node flags) every process joins the group that
torchrun's environment variables describe: ``nccl`` on GPUs, ``gloo`` on CPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from tqdm import tqdm

__all__ = ["Distributed", "setup_distributed"]


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, evaluates and writes checkpoints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()

    def log(self, message: str) -> None:
        """Print ``message`` on rank 0 only."""
        if self.is_main:
            tqdm.write(message)  # above a progress bar

    def broadcast(self, value: int) -> int:
        """Rank 0's ``value``, on every rank."""
        if not self.enabled:
            return value
        tensor = torch.tensor([value], device=self.device if self.device.type == "cuda" else "cpu")
        dist.broadcast(tensor, src=0)
        return int(tensor.item())

    @classmethod
    def single(cls, device: str = "cpu") -> Distributed:
        """A world of one on ``device``, for a run that never joins a torchrun job."""
        return cls(0, 1, 0, torch.device(device))


def setup_distributed(device: str | None = None) -> Distributed:
    """Join the torchrun job if there is one; pick the device (GPU when present unless told)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    name = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but no GPU is visible; use --device cpu")
    chosen = torch.device(f"cuda:{local_rank}" if name == "cuda" else name)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
    return Distributed(rank, world_size, local_rank, chosen)
