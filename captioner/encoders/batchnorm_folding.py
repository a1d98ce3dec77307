"""Fold a frozen CNN's BatchNorm layers into the convolutions before them.

In eval mode a BatchNorm is a per-channel ``scale * x + shift``; folded into the preceding
convolution's weights and bias it costs nothing, where unfolded it is one more pass over
every activation map. The encoder is frozen, so its BatchNorms never change.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fold_batch_norms"]


def _after_norm(norm: nn.BatchNorm2d) -> nn.Module:
    """What remains of a BatchNorm once folded: timm's ``BatchNormAct2d`` keeps its activation."""
    act, drop = getattr(norm, "act", None), getattr(norm, "drop", None)
    kept = [m for m in (drop, act) if m is not None and not isinstance(m, nn.Identity)]
    return kept[0] if len(kept) == 1 else nn.Sequential(*kept) if kept else nn.Identity()


def fold_batch_norms(model: nn.Module) -> int:
    """Fold, in place, every BatchNorm2d registered right after a Conv2d of the same parent.

    Meant for networks whose blocks register each convolution just before the norm that
    follows it in ``forward`` (timm's EfficientNets); check the outputs when using it on others.
    Returns how many were folded. The model must be in eval mode (running statistics are used).
    """
    if model.training:
        raise ValueError("fold_batch_norms needs a model in eval mode")
    folded = 0
    for parent in list(model.modules()):
        previous_name, previous = None, None
        for name, child in list(parent.named_children()):
            if (
                isinstance(child, nn.BatchNorm2d)
                and isinstance(previous, nn.Conv2d)
                and previous.out_channels == child.num_features
            ):
                setattr(parent, previous_name, fuse_conv_bn_eval(previous, child))
                setattr(parent, name, _after_norm(child))
                folded += 1
            previous_name, previous = name, child
    return folded
