from __future__ import annotations

from pathlib import Path

import pytest
import skimage.data
import torch
from PIL import Image
from torch import nn

from captioner.encoders import build_encoder, efficientnet_lite_classifier
from captioner.encoders.batchnorm_folding import fold_batch_norms
from captioner.encoders.transforms import ImageTransform

IMAGENET_CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite2"])
def test_packaged_weights_recognise_a_real_cat(name):
    encoder = build_encoder(name)
    image = ImageTransform(encoder.spec)(Image.fromarray(skimage.data.chelsea()))[None]
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


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_lite_network_is_timms_tf_efficientnet_lite(name):
    """Same tensor names, preprocessing and numbers as timm's model with the same weights, so
    fine-tuned encoder weights keep their names and the captioner loads without importing timm."""
    import timm

    from captioner.encoders.lite import _lite_spec, _lite_weights_path, _rename_lite_keys

    reference = timm.create_model(f"tf_{name}", pretrained=False).eval()
    packaged = torch.load(_lite_weights_path(name), weights_only=True)
    reference.load_state_dict(_rename_lite_keys(packaged, reference.state_dict()))
    ours = efficientnet_lite_classifier(name)
    assert list(ours.state_dict()) == list(reference.state_dict())
    cfg, spec = reference.pretrained_cfg, _lite_spec(name)
    assert (spec.image_size, spec.mean, spec.std, spec.interpolation) == (
        cfg["input_size"][-1],
        tuple(cfg["mean"]),
        tuple(cfg["std"]),
        cfg["interpolation"],
    )
    images = torch.randn(2, 3, spec.image_size, spec.image_size)
    odd = torch.randn(1, 3, 301, 199)  # "same" padding of another size
    with torch.inference_mode():
        assert torch.equal(ours(images), reference(images))
        assert torch.equal(ours.forward_features(odd), reference.forward_features(odd))


def test_loading_a_captioner_imports_neither_timm_nor_torchvision():
    import subprocess
    import sys

    script = (
        "import sys; from captioner import Captioner; Captioner.load().caption('demo/chelsea.jpg'); "
        "print(sorted(m for m in ('timm', 'torchvision', 'torch._dynamo') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


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


def test_lite_encoder_folds_its_batch_norms_and_computes_the_same_map():
    encoder = build_encoder("efficientnet_lite0")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in encoder.modules())
    image = ImageTransform(encoder.spec)(Image.fromarray(skimage.data.chelsea()))[None]
    unfolded = efficientnet_lite_classifier("efficientnet_lite0")
    assert sum(isinstance(m, nn.BatchNorm2d) for m in unfolded.modules()) == 49
    with torch.inference_mode():
        expected, ours = unfolded.forward_features(image), encoder(image)
    assert torch.allclose(ours, expected, atol=1e-3), (ours - expected).abs().max()


def test_fold_batch_norms_keeps_the_function_and_the_activation():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    net[1].running_mean.uniform_(-1, 1)
    net[1].running_var.uniform_(0.5, 2)
    net[1].weight.data.uniform_(-2, 2)
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norms(net)
    net.eval()
    x = torch.randn(2, 3, 5, 5)
    expected = net(x)
    assert fold_batch_norms(net) == 1
    assert isinstance(net[1], nn.Identity) and isinstance(net[2], nn.ReLU)
    assert torch.allclose(net(x), expected, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet_lite0", "torchvision:resnet18"])
def test_traced_encoder_gives_the_same_map_and_other_sizes_run_the_module(name):
    encoder = build_encoder(name, pretrained=False).to(memory_format=torch.channels_last)
    size = encoder.spec.image_size
    images = torch.randn(3, 3, size, size).contiguous(memory_format=torch.channels_last)
    larger = torch.randn(2, 3, size + 31, size + 31).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        eager, eager_larger = encoder(images), encoder(larger)
        encoder.trace_for_inference()
        assert isinstance(encoder._trace[1], torch.jit.ScriptModule)
        assert torch.equal(encoder(images), eager)  # traced at batch 1, used at any batch size
        assert encoder(images).is_contiguous(memory_format=torch.channels_last)
        trace = encoder._trace[1]
        encoder.trace_for_inference()  # as each Captioner sharing this encoder does
        assert encoder._trace[1] is trace  # same device and memory format: not traced again
        encoder.to(memory_format=torch.contiguous_format).trace_for_inference()  # another layout: traced again
        assert encoder._trace[1] is not trace
        assert torch.equal(encoder(images.contiguous()), encoder.backbone(images.contiguous()))
        encoder._trace = (encoder._trace[0], nn.Identity())  # which one runs, for which size?
        assert encoder(images).shape[1] == 3  # the trace's size: the trace
        assert torch.equal(encoder(larger), eager_larger)  # another size: the module itself
