"""The preprocessing of image sources and the frozen network that maps images to feature maps."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from captioner.encoders.spec import EncoderSpec
from captioner.encoders.transforms import ImageTransform
from captioner.media import ImageSource, load_image
from captioner.torchscript import traced

__all__ = ["CPU_CHUNK_SIZE", "EncoderSpec", "ImageEncoder", "ImagePreprocessor", "default_chunk_size"]

# images per encoder forward on the CPU: a few images' activations stay in the caches, and 32
# photos take about half the time they take in one forward (benchmarks.encoder_chunks)
CPU_CHUNK_SIZE = 4


class ImagePreprocessor:
    """Image source -> the encoder's input (C, H, W), decoded no larger than the spec needs.

    The one preprocessing of :meth:`Captioner.encode` and training's feature extraction, so
    both see the same pixels (a plain class: DataLoader workers pickle it).
    """

    def __init__(self, spec: EncoderSpec) -> None:
        self.transform = ImageTransform(spec)
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
    the encoder has none, or once its top is fine-tuned without keeping the head's probabilities).
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
        A second call on the same device and memory format keeps the trace it has. A new trace
        runs twice on the example, as TorchScript optimises a trace over its first calls."""
        weight = next(self.backbone.parameters())
        size = self.spec.image_size
        example = torch.zeros(1, 3, size, size, device=weight.device)
        if weight.dim() == 4 and weight.is_contiguous(memory_format=torch.channels_last):
            example = example.contiguous(memory_format=torch.channels_last)
        layout = (example.device, example.stride())
        if self._trace is None or self._traced_layout != layout:
            trace = traced(self.backbone, example)
            with torch.inference_mode():
                for _ in range(2):
                    trace(example)
            self._trace, self._traced_layout = (example.shape[-2:], trace), layout

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        trace = self._trace  # read once: another thread may be tracing
        if trace is not None and images.shape[-2:] == trace[0]:
            return trace[1](images)  # (B, C, H, W)
        return self.backbone(images)

    def encode_in_chunks(self, images: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """``forward`` over ``chunk_size`` images at a time (None: :func:`default_chunk_size` of
        the images' device); the same maps as one forward of the whole batch."""
        chunk_size = chunk_size or default_chunk_size(images.device)
        if chunk_size is None or len(images) <= chunk_size:
            return self(images)
        return torch.cat([self(part) for part in images.split(chunk_size)])

    def load_tuned_weights(self, weights: dict[str, torch.Tensor], *, head_kept: bool = False) -> None:
        """Replace some of the rebuilt weights with fine-tuned ones (a checkpoint's ``encoder.`` tensors).
        ``head_kept``: they were tuned keeping the ImageNet head's probabilities (a concept
        decoder's, ``training.scst --imagenet-weight``), so the head stays; otherwise it is dropped.

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
        if not head_kept:
            self.imagenet_head = None  # a tuned top's maps no longer give ImageNet probabilities

    @staticmethod
    def pool(feature_map: torch.Tensor) -> torch.Tensor:
        """Global average pool: (B, C, H, W) -> (B, C)."""
        return feature_map.mean(dim=(2, 3))


def default_chunk_size(device: torch.device) -> int | None:
    """Images per encoder forward: a few on the CPU, the whole batch (None) on an accelerator."""
    return CPU_CHUNK_SIZE if device.type == "cpu" else None
