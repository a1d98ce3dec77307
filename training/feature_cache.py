"""Encoder feature cache: one fp16 ``.npy`` of feature maps plus a JSON description.

The JSON records the encoder spec, the image list and whether the images were mirrored
(left-right, for augmentation); a cache is reused only when all match, and only once marked
complete (an interrupted extraction is redone, never used).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from captioner.encoders import EncoderSpec, ImageEncoder, ImagePreprocessor

__all__ = ["FeatureCache", "extract_features", "open_cache"]

_META = "meta.json"
_ARRAY = "features.npy"


@dataclass(frozen=True)
class FeatureCache:
    """Feature maps (N, C, H, W) fp16, memory-mapped, and the image names in row order."""

    features: np.ndarray
    names: list[str]

    def rows(self, names: Sequence[str]) -> np.ndarray:
        """Row indices of ``names``."""
        index = {name: i for i, name in enumerate(self.names)}
        return np.array([index[name] for name in names], dtype=np.int64)

    def pooled(self) -> torch.Tensor:
        """(N, C) float32 vectors averaged over each map, read in chunks to bound memory."""
        chunks = [
            torch.from_numpy(np.asarray(self.features[i : i + 1024], dtype=np.float32)).mean(dim=(2, 3))
            for i in range(0, self.features.shape[0], 1024)
        ]
        return torch.cat(chunks)

    def model_inputs(self, attention: bool) -> torch.Tensor:
        """What a decoder reads: the whole fp16 map (N, C, H, W) for attention, else the pooled vectors."""
        return torch.from_numpy(np.asarray(self.features)) if attention else self.pooled()


class _ImageFolder(Dataset):
    """Image files preprocessed exactly as ``Captioner.encode`` does for ``spec``, then
    mirrored left to right when ``mirrored``."""

    def __init__(self, paths: Sequence[Path], spec: EncoderSpec, mirrored: bool = False) -> None:
        self.paths, self.preprocess, self.mirrored = list(paths), ImagePreprocessor(spec), mirrored

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        picture = self.preprocess(self.paths[index])
        return picture.flip(-1) if self.mirrored else picture


def open_cache(
    cache_dir: Path, encoder_spec: dict, names: Sequence[str], *, mirrored: bool = False
) -> FeatureCache | None:
    """The cache in ``cache_dir`` if it is complete and matches encoder, images and mirroring, else None."""
    meta_path = cache_dir / _META
    if not meta_path.is_file() or not (cache_dir / _ARRAY).is_file():
        return None
    meta = json.loads(meta_path.read_text())
    if not meta.get("complete") or meta.get("encoder") != json.loads(json.dumps(encoder_spec)):
        return None
    if meta.get("names") != list(names) or meta.get("mirrored", False) != mirrored:
        return None
    # copy-on-write: tensors can view the file without copying it, and the file is never written
    features = np.load(cache_dir / _ARRAY, mmap_mode="c")
    if features.shape[0] != len(names):
        return None
    return FeatureCache(features, list(names))


def extract_features(
    encoder: ImageEncoder,
    paths: Sequence[Path],
    cache_dir: Path,
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] = lambda: None,
    mirrored: bool = False,
) -> FeatureCache:
    """Encode every image (batched, channels_last) into ``cache_dir``, or reuse a valid cache.

    Under ``torchrun`` each of the ``world_size`` ranks encodes every ``world_size``-th image
    into the same memory-mapped file; rank 0 marks the cache complete once all are done.
    Memory stays bounded by one batch, whatever the corpus size. ``mirrored`` encodes every
    image mirrored left to right (an augmented copy for training).
    """
    names = [p.name for p in paths]
    spec = encoder.spec.to_dict()
    cached = open_cache(cache_dir, spec, names, mirrored=mirrored)
    if cached is not None:
        return cached
    encoder = encoder.to(memory_format=torch.channels_last)
    device = next(encoder.parameters()).device
    if rank == 0:
        cache_dir.mkdir(parents=True, exist_ok=True)
        (cache_dir / _META).unlink(missing_ok=True)
        size = encoder.spec.image_size
        with torch.inference_mode():
            shape = encoder(torch.zeros(1, 3, size, size, device=device)).shape[1:]  # (C, H, W)
        np.lib.format.open_memmap(cache_dir / _ARRAY, mode="w+", dtype=np.float16, shape=(len(paths), *shape)).flush()
    barrier()
    array = np.load(cache_dir / _ARRAY, mmap_mode="r+")
    mine = list(range(rank, len(paths), world_size))
    loader = DataLoader(
        _ImageFolder([paths[i] for i in mine], encoder.spec, mirrored),
        batch_size=batch_size,
        num_workers=num_workers,
        generator=torch.Generator(),  # leaves the global random state alone
    )
    done = 0
    with torch.inference_mode():
        for batch in tqdm(loader, desc=f"features {encoder.spec.name}", unit="batch", disable=rank != 0):
            maps = encoder.encode_in_chunks(batch.to(device).contiguous(memory_format=torch.channels_last))
            array[mine[done : done + len(maps)]] = maps.float().cpu().numpy().astype(np.float16)
            done += len(maps)
    array.flush()
    del array
    barrier()
    if rank == 0:
        meta = {"complete": True, "encoder": spec, "names": names, "mirrored": mirrored}
        tmp = cache_dir / (_META + ".tmp")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, cache_dir / _META)
    barrier()
    cache = open_cache(cache_dir, spec, names, mirrored=mirrored)
    assert cache is not None
    return cache
