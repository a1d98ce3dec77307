"""The EfficientNet-Lite network (Tan & Le 2019; TensorFlow's "lite" variants: ReLU6, no
squeeze-excite, fixed stem and head), laid out exactly as timm's ``tf_efficientnet_lite*``.

Same module names, tensor order and arithmetic as timm's (``tests/test_encoders.py`` compares
the maps), so checkpoints' fine-tuned encoder weights keep their names; built here so that
loading a captioner imports neither timm nor, through it, torchvision. The layout is read from
the packaged weights themselves: stages start where the channel count changes, and each
block's kernel size and expansion come from its tensors' shapes; only the strides are fixed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EfficientNetLite", "lite_layout"]

STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)  # the first block of each of the seven stages
BN_EPS = 1e-3  # TensorFlow's BatchNorm epsilon, as the weights were trained with


class SameConv2d(nn.Conv2d):
    """A strided convolution with TensorFlow's "same" padding (more on the bottom and right)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, kernel, stride in zip(x.shape[:-3:-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm followed by ``act`` (ReLU6 or nothing), named as timm names it."""

    def __init__(self, channels: int, *, relu: bool) -> None:
        super().__init__(channels, eps=BN_EPS)
        self.act = nn.ReLU6(inplace=True) if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    if stride > 1:
        return SameConv2d(cin, cout, kernel, stride, groups=groups, bias=False)
    return nn.Conv2d(cin, cout, kernel, stride, padding=(kernel - 1) // 2, groups=groups, bias=False)


class DepthwiseSeparable(nn.Module):
    """Depthwise convolution, then a pointwise projection (the first stage's block)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv_dw, self.bn1 = _conv(cin, cin, kernel, stride, groups=cin), BatchNormAct2d(cin, relu=True)
        self.conv_pw, self.bn2 = _conv(cin, cout, 1), BatchNormAct2d(cout, relu=False)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv_pw(self.bn1(self.conv_dw(x))))
        return out + x if self.skip else out


class InvertedResidual(nn.Module):
    """Pointwise expansion, depthwise convolution, pointwise projection; a residual within a stage."""

    def __init__(self, cin: int, hidden: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv_pw, self.bn1 = _conv(cin, hidden, 1), BatchNormAct2d(hidden, relu=True)
        self.conv_dw, self.bn2 = _conv(hidden, hidden, kernel, stride, groups=hidden), BatchNormAct2d(hidden, relu=True)
        self.conv_pwl, self.bn3 = _conv(hidden, cout, 1), BatchNormAct2d(cout, relu=False)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv_pwl(self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))))
        return out + x if self.skip else out


# one block: (input channels, expanded channels or None for a depthwise-separable block, output channels, kernel)
BlockShape = tuple[int, int | None, int, int]


def lite_layout(weights: dict[str, torch.Tensor]) -> list[list[BlockShape]]:
    """The stages' block shapes read from EfficientNet-Lite weights in the packaged
    (``efficientnet_pytorch``) naming: ``_blocks.<i>._expand_conv`` / ``_depthwise_conv`` /
    ``_project_conv``."""
    stages: list[list[BlockShape]] = []
    index = 0
    while f"_blocks.{index}._depthwise_conv.weight" in weights:
        prefix = f"_blocks.{index}."
        depthwise, project = weights[prefix + "_depthwise_conv.weight"], weights[prefix + "_project_conv.weight"]
        expand = weights.get(prefix + "_expand_conv.weight")
        cin = int(expand.shape[1]) if expand is not None else int(depthwise.shape[0])
        block = (cin, int(expand.shape[0]) if expand is not None else None, int(project.shape[0]), depthwise.shape[-1])
        if not stages or cin != block[2]:
            stages.append([])
        stages[-1].append(block)
        index += 1
    if len(stages) != len(STAGE_STRIDES):
        raise RuntimeError(f"EfficientNet-Lite weights have {len(stages)} stages, not {len(STAGE_STRIDES)}")
    return stages


class EfficientNetLite(nn.Module):
    """Stem, seven stages of blocks, 1x1 head and the ImageNet classifier.

    ``forward_features`` gives the head's map (B, ``num_features``, H/32, W/32); ``forward`` the
    1,000 ImageNet logits over its average."""

    def __init__(self, layout: list[list[BlockShape]], *, stem: int, head: int, classes: int) -> None:
        super().__init__()
        self.conv_stem, self.bn1 = _conv(3, stem, 3, 2), BatchNormAct2d(stem, relu=True)
        stages = []
        for stage, stride in zip(layout, STAGE_STRIDES):
            blocks = []
            for position, (cin, hidden, cout, kernel) in enumerate(stage):
                step = stride if position == 0 else 1
                blocks.append(
                    DepthwiseSeparable(cin, cout, kernel, step)
                    if hidden is None
                    else InvertedResidual(cin, hidden, cout, kernel, step)
                )
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.conv_head, self.bn2 = _conv(layout[-1][-1][2], head, 1), BatchNormAct2d(head, relu=True)
        self.num_features = head
        self.classifier = nn.Linear(head, classes)

    @classmethod
    def from_packaged(cls, weights: dict[str, torch.Tensor]) -> EfficientNetLite:
        """The network shaped as the packaged weights are (not loaded: see ``lite.py``)."""
        return cls(
            lite_layout(weights),
            stem=int(weights["_conv_stem.weight"].shape[0]),
            head=int(weights["_conv_head.weight"].shape[0]),
            classes=int(weights["_fc.weight"].shape[0]),
        )

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv_stem(images))
        return self.bn2(self.conv_head(self.blocks(x)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(images).mean(dim=(2, 3)))
