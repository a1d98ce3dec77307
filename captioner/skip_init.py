"""Building a model without filling its weights: for a model whose weights are loaded next,
or that is built only for its shapes."""

from __future__ import annotations

from typing import Any

from torch.overrides import TorchFunctionMode

__all__ = ["SkippedInit"]


class SkippedInit(TorchFunctionMode):
    """Within it, ``torch.nn.init``'s functions leave their tensor as it is (uninitialised).

    Random fills are most of building a model whose weights are then loaded, and on the meta
    device they import torch's compiler."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else kwargs["tensor"]
        return func(*args, **(kwargs or {}))
