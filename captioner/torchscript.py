"""TorchScript, where it pays at batch 1: scripted functions and traced modules, with fallbacks.

At batch 1 on a CPU, Python's share of a small network's forward pass (module calls, argument
parsing, dispatch) is a measurable part of the time. TorchScript runs the same operations
from its own interpreter; PyTorch does not fuse them on the CPU by default, so the results are
exactly those of eager mode. ``torch.jit`` is deprecated in favour of ``torch.compile``, which
needs a C++ compiler and compiles at every start: these helpers silence only that deprecation
warning, and give back the plain function or module where TorchScript cannot compile it (for
example without the ``.py`` sources), with a warning that says so.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["scripted", "traced"]


@contextmanager
def _quiet_deprecation():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..*deprecated", category=FutureWarning)
        yield


def scripted(function: Callable) -> Callable:
    """``torch.jit.script(function)``; the function itself where TorchScript cannot compile it."""
    with _quiet_deprecation():
        try:
            return torch.jit.script(function)
        except (OSError, RuntimeError) as error:  # OSError: no source; RuntimeError: TorchScript's own
            warnings.warn(f"{function.__name__} runs in Python, not TorchScript ({error})", stacklevel=2)
            return function


def traced(module: nn.Module, example: torch.Tensor) -> nn.Module:
    """``torch.jit.trace(module, example)`` for inference (parameters shared, not copied); the
    module itself where tracing fails. The trace holds for inputs shaped like ``example`` except
    in the batch size: sizes the module computes from the height and width become constants."""
    with _quiet_deprecation(), torch.no_grad(), warnings.catch_warnings():
        # those sizes are what the tracer warns about (e.g. "same" padding): expected, as said above
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        try:
            return torch.jit.trace(module, example, check_trace=False)
        except (OSError, RuntimeError) as error:
            warnings.warn(f"{type(module).__name__} runs in Python, not TorchScript ({error})", stacklevel=2)
            return module
