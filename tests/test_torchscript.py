"""TorchScript helpers: compiled where possible, the plain function or module otherwise."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from captioner.torchscript import scripted, traced


def _affine(x: torch.Tensor, scale: float) -> torch.Tensor:
    return x * scale + 1.0


def test_scripted_and_traced_compute_what_they_were_given():
    x = torch.randn(4, 3)
    assert torch.equal(scripted(_affine)(x, 2.0), _affine(x, 2.0))
    module = nn.Sequential(nn.Linear(3, 5), nn.ReLU()).eval()
    trace = traced(module, x[:1])
    assert isinstance(trace, torch.jit.ScriptModule)
    with torch.inference_mode():
        assert torch.equal(trace(x), module(x))  # traced at batch 1, run at batch 4


def test_what_torchscript_cannot_compile_runs_in_python_with_a_warning(monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("unsupported")

    monkeypatch.setattr(torch.jit, "script", refuse)
    monkeypatch.setattr(torch.jit, "trace", refuse)
    module = nn.Linear(3, 2)
    with pytest.warns(UserWarning, match="runs in Python"):
        assert scripted(_affine) is _affine
    with pytest.warns(UserWarning, match="Linear runs in Python"):
        assert traced(module, torch.zeros(1, 3)) is module
