from __future__ import annotations

import pytest
import skimage.data
import torch
from PIL import Image

from captioner.encoders import build_encoder, efficientnet_lite_classifier

IMAGENET_CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite2"])
def test_packaged_weights_recognise_a_real_cat(name):
    encoder = build_encoder(name)
    image = encoder.spec.transform()(Image.fromarray(skimage.data.chelsea()))[None]
    with torch.inference_mode():
        probs = efficientnet_lite_classifier(name)(image).softmax(dim=-1)[0]
    top5 = set(probs.topk(5).indices.tolist())
    assert top5 & IMAGENET_CAT_CLASSES
    assert probs[list(IMAGENET_CAT_CLASSES)].sum() > 0.5


@pytest.mark.parametrize(("name", "size", "grid"), [("efficientnet_lite0", 224, 7), ("efficientnet_lite1", 240, 8)])
def test_lite_encoders_give_spatial_map_and_spec(name, size, grid):
    encoder = build_encoder(name)
    assert encoder.spec.image_size == size
    assert encoder.spec.mean == encoder.spec.std == (0.5, 0.5, 0.5)
    assert not any(p.requires_grad for p in encoder.parameters())
    with torch.inference_mode():
        feature_map = encoder(torch.zeros(2, 3, size, size))
    assert feature_map.shape == (2, encoder.feature_dim, grid, grid)
    assert encoder.pool(feature_map).shape == (2, encoder.feature_dim)


def test_torchvision_models_by_name_without_weights():
    encoder = build_encoder("torchvision:resnet18", pretrained=False)
    assert encoder.spec.weights == "ResNet18_Weights.IMAGENET1K_V1"
    assert encoder.spec.resize_size == 256 and encoder.spec.image_size == 224
    with torch.inference_mode():
        assert encoder(torch.zeros(1, 3, 224, 224)).shape == (1, 512, 7, 7)


def test_unknown_names_are_clear_errors():
    with pytest.raises(ValueError, match="unknown encoder"):
        build_encoder("alexnet2000")
    with pytest.raises(ValueError, match="torchvision has no classification model"):
        build_encoder("torchvision:not_a_model")
