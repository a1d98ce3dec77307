"""The fused attention decoder's step and greedy loop as a C++ extension, built on first use.

:mod:`.kernels` runs a word as some thirty ATen calls from TorchScript; at batch
1 their overhead, not their arithmetic, is most of the step besides the two fp16 products.
``fused_decoder.cpp`` (beside this module) computes the same function with plain loops around
those products (less decoding time: docs/speed.md) and registers it as ``torch.ops.captioner``.
PyTorch's extension builder compiles it once per installation (``ninja`` and a C++ compiler,
into :func:`build_directory`); later starts load the built library directly. Where it cannot
be built, :func:`native_kernels_available` warns once, in one line, and the decoder keeps the
TorchScript kernels.

:func:`native_step` and :func:`native_greedy` take and return what
:func:`.kernels.fused_step` and :func:`.kernels.fused_greedy`
do. Numbers differ from theirs in the last bits only (sums in another order).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import torch

from captioner.decoders.soft_attention.kernels import Record, State, Weights

__all__ = ["build_directory", "native_greedy", "native_initial_state", "native_kernels_available", "native_step"]

_SOURCE = Path(__file__).with_name("fused_decoder.cpp")
_RECORD_SIZE = 6  # tensors per step in what the native greedy loop returns


_NAME = "captioner_fused_decoder"
_CFLAGS = ("-O3", "-fopenmp-simd")


def build_directory() -> Path:
    """Where the kernels are built: one folder per source, compiler flags, Python and torch
    installation, so that checkouts and virtual environments sharing a machine never rebuild
    each other's kernels (under ``$TORCH_EXTENSIONS_DIR``, else ``~/.cache/torch_extensions``)."""
    key = hashlib.sha256()
    for part in (_SOURCE.read_bytes(), " ".join(_CFLAGS).encode(), sys.version.encode(), torch.__version__.encode()):
        key.update(part)
    key.update(str(Path(torch.__file__).resolve()).encode())
    chosen = os.environ.get("TORCH_EXTENSIONS_DIR")
    cache = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser()
    root = Path(chosen) if chosen else cache / "torch_extensions"
    return root / f"{_NAME}-{key.hexdigest()[:16]}"


@functools.cache
def native_kernels_available() -> bool:
    """Load the native kernels, building them first where this installation has no build yet
    (one line says so); False, with one line saying why, where they cannot be built."""
    folder = build_directory()
    library = folder / f"{_NAME}.so"
    try:
        if not library.exists():
            _build(folder)
        try:
            torch.ops.load_library(str(library))
        except OSError:  # a build another process had not finished: wait for its lock, then load
            _build(folder)
            torch.ops.load_library(str(library))
        return hasattr(torch.ops.captioner, "greedy")
    except Exception as error:  # no compiler, no ninja, a failed build: all leave the TorchScript kernels
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        logging.getLogger(__name__).warning(
            "the native decoder kernels are unavailable (%s); decoding runs the TorchScript kernels: "
            "the same captions, somewhat slower",
            reason,
        )
        return False


def _build(folder: Path) -> None:
    """Compile ``fused_decoder.cpp`` into ``folder`` with PyTorch's extension builder (ninja and the
    system's C++ compiler), its own output and warnings kept quiet."""
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        raise RuntimeError(f"no C++ compiler {compiler!r} found; install g++ to build them")
    logging.getLogger(__name__).warning("building the native decoder kernels, once for this installation (~20 s) ...")
    loader_log = logging.getLogger("torch.utils.cpp_extension")
    level = loader_log.level
    loader_log.setLevel(logging.ERROR)  # importing it warns that there is no CUDA, which is not used
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the loader's compiler-ABI banner; a failure raises anyway
            from torch.utils import cpp_extension

            if not cpp_extension.is_ninja_available():
                raise RuntimeError("ninja is not installed; `pip install ninja` to build them")
            folder.mkdir(parents=True, exist_ok=True)
            cpp_extension.load(
                _NAME, [str(_SOURCE)], extra_cflags=list(_CFLAGS), build_directory=str(folder), is_python_module=False
            )
    except subprocess.CalledProcessError as error:
        raise RuntimeError(f"the C++ build failed: {error}") from None
    finally:
        loader_log.setLevel(level)


def native_initial_state(locations: torch.Tensor, norm: torch.nn.LayerNorm, products: tuple, vocab_size: int) -> State:
    """The state before ``<start>`` from the encoder's locations (B, L, C), as
    :meth:`.fused.FusedAttentionDecoder.init_state` computes it, in C++
    (``products``: the decoder's packed glue, init, key and new-hidden fp16 products)."""
    return tuple(
        torch.ops.captioner.initial_state.default(
            locations.float(), norm.weight, norm.bias, norm.eps, *products, vocab_size
        )
    )


def native_step(tokens: torch.Tensor, state: State, weights: Weights) -> tuple[torch.Tensor, torch.Tensor, State]:
    """One word, as :func:`.kernels.fused_step`, in C++."""
    h, c, locations, keys, from_h = state
    logits, attention, h, c, from_h = torch.ops.captioner.step.default(tokens, h, c, locations, keys, from_h, *weights)
    return logits, attention, (h, c, locations, keys, from_h)


def native_greedy(
    state: State,
    weights: Weights,
    mask: torch.Tensor | None,
    scale: float,
    start_id: int,
    end_id: int,
    max_length: int,
    top_k: int,
    reads: torch.Tensor | None = None,
) -> list[Record]:
    """Greedy decoding, as :func:`.kernels.fused_greedy`, in C++."""
    flat = torch.ops.captioner.greedy.default(*state, *weights, mask, reads, scale, start_id, end_id, max_length, top_k)
    return [tuple(flat[i : i + _RECORD_SIZE]) for i in range(0, len(flat), _RECORD_SIZE)]
