"""The image transform computes torchvision's v2 preprocessing pipeline, in fewer passes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from captioner.encoders import EncoderSpec, ImagePreprocessor
from captioner.encoders.transforms import ImageTransform
from captioner.media import MediaError

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def torchvision_pipeline(spec: EncoderSpec) -> v2.Compose:
    """What the transform replaces, written with torchvision's own transforms."""
    interpolation = v2.InterpolationMode(spec.interpolation)
    if spec.resize_size is None:
        resize = [v2.Resize((spec.image_size, spec.image_size), interpolation, antialias=True)]
    else:
        resize = [v2.Resize(spec.resize_size, interpolation, antialias=True), v2.CenterCrop(spec.image_size)]
    return v2.Compose([v2.ToImage(), *resize, v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])


def picture(width: int, height: int, mode: str = "RGB") -> Image.Image:
    pixels = np.random.default_rng(width * height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear", "nearest"])
@pytest.mark.parametrize("resize_size", [None, 40], ids=["squash", "short-side-then-crop"])
@pytest.mark.parametrize("size", [(32, 32), (57, 41), (23, 90), (640, 480)], ids=["exact", "wide", "tall", "large"])
def test_transform_equals_torchvision_pipeline(size, resize_size, interpolation):
    spec = EncoderSpec("test", "none", 32, MEAN, STD, interpolation, resize_size)
    image = picture(*size)
    ours = ImageTransform(spec)(image)
    expected = torchvision_pipeline(spec)(image)
    assert ours.shape == expected.shape == (3, 32, 32) and ours.dtype == torch.float32
    assert torch.allclose(ours, expected, atol=1e-5)


def test_transform_output_lies_channels_last_and_other_colour_modes_become_rgb():
    spec = EncoderSpec("test", "none", 32, MEAN, STD)
    transform = ImageTransform(spec)
    out = transform(picture(32, 32))
    assert out.stride() == (1, 32 * 3, 3)  # (C, H, W) over (H, W, C) memory: no copy into the batch layout
    grey = picture(40, 30, "L")
    assert torch.allclose(transform(grey), torchvision_pipeline(spec)(grey.convert("RGB")), atol=1e-5)


def test_a_batch_is_each_picture_preprocessed_alone_in_one_channels_last_tensor():
    spec = EncoderSpec("test", "none", 32, MEAN, STD, "bicubic", 40)
    preprocess = ImagePreprocessor(spec)
    sources = [picture(57, 41), picture(23, 90, "L"), np.asarray(picture(32, 32)), picture(40, 40, "RGBA")]
    batch = preprocess.batch(sources)
    assert batch.shape == (4, 3, 32, 32) and batch.dtype == torch.float32
    assert batch.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(batch, torch.stack([preprocess(source) for source in sources]))
    with pytest.raises(ValueError, match="no images"):
        preprocess.batch([])
    with pytest.raises(MediaError):
        preprocess.batch([picture(32, 32), b"not an image"])
