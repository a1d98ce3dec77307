"""Fine-tuning the encoder's last stages with the decoder: split, training, checkpoint, loading."""

from __future__ import annotations

import pytest
import torch
from training_helpers import tiny_scst_settings, tiny_train_config

from captioner import Captioner
from captioner.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from captioner.concepts import ConceptTable, slot_tokens
from captioner.config import ModelConfig
from captioner.decoders.concept_attention import ConceptAttentionDecoder
from captioner.encoders import ImagePreprocessor, build_encoder
from captioner.media import load_image
from captioner.vocab import Vocabulary
from training.concept_data import prepare_concept_decoder
from training.datasets import load_corpus
from training.encoder_split import split_encoder
from training.encoder_tuning import TunedEncoderDecoder, checkpoint_maps, encoder_to_train_on
from training.extract_features import main as extract_main
from training.scst import ScstConfig, train_scst
from training.self_critical import SelfCritical, imagenet_drift
from training.train import train


def test_the_top_over_the_trunk_is_the_whole_encoder():
    encoder = build_encoder("efficientnet_lite0")
    trunk, top = split_encoder(encoder, 1)
    images = torch.rand(2, 3, 224, 224)
    with torch.inference_mode():
        assert torch.equal(top(trunk(images)), encoder(images))
    assert (trunk.spec.name, trunk.feature_dim) == ("efficientnet_lite0_stage6", 192)
    assert set(top.encoder_weights()) < set(encoder.state_dict())
    prefixes = ("backbone.model.blocks.6.", "backbone.model.conv_head.")
    assert all(name.startswith(prefixes) for name in top.encoder_weights())
    assert split_encoder(build_encoder("efficientnet_lite0"), 2)[0].feature_dim == 112
    with pytest.raises(ValueError, match="1 to 6"):
        split_encoder(encoder, 7)
    with pytest.raises(ValueError, match="EfficientNet-Lite"):
        split_encoder(build_encoder("torchvision:resnet18", pretrained=False), 1)


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory, mini_corpus):
    """A tiny attention model, then one self-critical epoch that also trains the last stage."""
    tmp_path = tmp_path_factory.mktemp("tuned_run")
    features = tmp_path / "features"
    xe = train(
        tiny_train_config(
            mini_corpus, tmp_path / "xe", features, decoder="soft_attention", attention_dim=32, lr=5e-3, epochs=2
        )
    )
    settings = tiny_scst_settings(mini_corpus, xe, features, epochs=1, tune_encoder_stages=1)
    command = "extract_features --encoder efficientnet_lite0 --tune-encoder-stages 1"
    with pytest.raises(FileNotFoundError, match=command):
        train_scst(ScstConfig(run_dir=str(tmp_path / "no_cache"), **settings))
    extract_main(["--data", str(mini_corpus), "--out", str(features), "--tune-encoder-stages", "1"])
    train_scst(ScstConfig(run_dir=str(tmp_path / "tuned"), **settings))
    return xe, tmp_path / "tuned", features


@pytest.mark.slow
def test_self_critical_training_updates_the_encoder_top(tuned_run):
    xe, run, _ = tuned_run
    state = torch.load(run / "last.pt", weights_only=True)["model"]
    pretrained = build_encoder("efficientnet_lite0").state_dict()
    top = {name: value for name, value in state.items() if name.startswith("top.")}
    assert top and any(name.startswith("top.stages.6.") for name in top)
    head = state["top.conv_head.weight"]
    assert head.shape == pretrained["backbone.model.conv_head.weight"].shape
    assert not torch.equal(head, pretrained["backbone.model.conv_head.weight"])
    decoder = {name.removeprefix("decoder."): value for name, value in state.items() if name.startswith("decoder.")}
    assert set(decoder) == set(load_checkpoint(xe).model.state_dict())
    tuned = _tuned_checkpoint(xe, run / "tuned.safetensors")
    with pytest.raises(ValueError, match="tune-encoder-stages 1 or more"):  # a frozen run cannot continue it
        train_scst(ScstConfig(data="unused", init=str(tuned), run_dir=str(run)))


def _tuned_checkpoint(xe, path, *, nudge: float = 0.05):
    """``xe``'s decoder with its encoder's last stage changed, saved as a fine-tuned checkpoint."""
    checkpoint = load_checkpoint(xe)
    _, top = split_encoder(build_encoder(checkpoint.encoder.name), 1)
    with torch.no_grad():
        top.conv_head.weight.mul_(1.0 + nudge)
    return save_checkpoint(
        path,
        checkpoint.model,
        checkpoint.vocab,
        checkpoint.encoder,
        encoder_weights=top.encoder_weights(),
        encoder_tuned_stages=1,
    )


@pytest.mark.slow
def test_a_tuned_checkpoint_loads_its_encoder_weights(tuned_run, mini_corpus, dog_photo):
    xe, run, features = tuned_run
    path = _tuned_checkpoint(xe, run / "tuned.safetensors")
    checkpoint = load_checkpoint(path)
    assert checkpoint.encoder_tuned_stages == 1
    frozen, tuned = Captioner.load(xe), Captioner.load(path)
    name = "backbone.model.conv_head.weight"
    assert torch.equal(tuned.encoder.state_dict()[name], checkpoint.encoder_weights[name])
    assert not torch.equal(tuned.encoder.state_dict()[name], frozen.encoder.state_dict()[name])
    assert not torch.allclose(tuned.encode([dog_photo]), frozen.encode([dog_photo]))

    # the maps the training tools read for it: the trunk's cache through the tuned top, which
    # is the tuned encoder up to the cache's fp16 rounding
    corpus = load_corpus(mini_corpus)
    names = [image.name for image in corpus]
    maps = checkpoint_maps(checkpoint, features, names, names[:3])
    paths = [image.path for image in corpus[:3]]
    rounding = (maps - tuned.encode(paths)).abs().max()
    assert rounding < 0.05
    assert (maps - frozen.encode(paths)).abs().max() > 10 * rounding
    frozen_maps = checkpoint_maps(load_checkpoint(xe), features, names, names[:3])
    assert torch.allclose(frozen_maps.float(), frozen.encode(paths), atol=0.05)


@pytest.mark.slow
def test_encoder_weights_that_do_not_fit_are_refused(tuned_run, tmp_path):
    xe, _, _ = tuned_run
    checkpoint = load_checkpoint(xe)
    model, vocab, spec = checkpoint.model, checkpoint.vocab, checkpoint.encoder
    with pytest.raises(ValueError, match="go together"):
        save_checkpoint(tmp_path / "a.safetensors", model, vocab, spec, encoder_weights={"x": torch.ones(1)})
    wrong = save_checkpoint(
        tmp_path / "b.safetensors",
        model,
        vocab,
        spec,
        encoder_weights={"backbone.model.conv_head.weight": torch.ones(3)},
        encoder_tuned_stages=1,
    )
    with pytest.raises(CheckpointError, match="do not fit efficientnet_lite0"):
        Captioner.load(wrong)


def test_the_wrapper_reads_maps_only(attention_model):
    _, top = split_encoder(build_encoder("efficientnet_lite0"), 1)
    with pytest.raises(ValueError, match="maps"):
        TunedEncoderDecoder(attention_model, top).init_state(torch.zeros(1, 49, 192))


_TINY_VOCAB = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", "a", "cat", *slot_tokens(3)])


def _concept_decoder(encoder) -> ConceptAttentionDecoder:
    """A small concept decoder over Lite0's maps, holding the encoder's ImageNet head."""
    table = ConceptTable.load()
    vocab = _TINY_VOCAB
    config = ModelConfig(
        feature_dim=encoder.feature_dim,
        vocab_size=len(vocab),
        embed_dim=8,
        hidden_dim=8,
        attention_dim=8,
        decoder="concept_attention",
        concept_words=len(table.words),
        concept_slots=3,
        concept_threshold=0.05,
    )
    decoder = ConceptAttentionDecoder(config)
    prepare_concept_decoder(decoder, table, encoder, vocab)
    return decoder


def test_imagenet_drift_measures_how_far_the_tuned_top_moved_the_concepts(dog_photo):
    encoder = build_encoder("efficientnet_lite0").eval()
    trunk, top = split_encoder(encoder, 1)
    model = TunedEncoderDecoder(_concept_decoder(encoder), top).eval()
    top.requires_grad_(True)  # as training.scst trains it
    photo = ImagePreprocessor(encoder.spec)(load_image(dog_photo))[None]
    with torch.no_grad():
        maps = trunk(photo)
        untuned = model.decoder.class_probabilities(encoder(photo))
        slots = model.decoder.concepts(encoder(photo)).word_ids
    assert torch.equal(model.concepts(maps).word_ids, slots)  # the slots read through the top
    assert (slots >= 0).any()
    assert imagenet_drift(model, maps, untuned).item() < 1e-6
    with torch.no_grad():
        top.conv_head.weight.add_(0.05 * torch.randn_like(top.conv_head.weight))
    drift = imagenet_drift(model, maps, untuned)
    assert drift.item() > 1e-3
    drift.backward()  # it trains the top only: the decoder's copy of the head is a buffer
    assert top.conv_head.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.decoder.parameters())
    with pytest.raises(ValueError, match="tunes no encoder top"):
        SelfCritical(model.decoder, imagenet_targets=untuned, imagenet_weight=1.0, **_unused_objective_settings())


def _unused_objective_settings() -> dict:
    """Settings an objective refused before it reads them."""
    return dict(
        images=[], inputs=None, slots=None, val=None, spec=None, record=None, batch_size=1, samples=2,
        baseline="mean", lr=1e-3, ema_decay=0.0, clip=1.0, max_length=4, seed=0, sample_dropout=False,
        copy_weight=0.0, reward_end=True,
    )  # fmt: skip


def test_a_concept_decoder_is_refused_over_a_top_tuned_without_its_head(attention_model, small_vocab, tmp_path):
    """A soft-attention checkpoint's tuned top no longer gives ImageNet probabilities: converting
    it to a concept decoder says why rather than blaming the encoder's kind, unless asked to keep
    the head (read through the tuned top, for a later stage to pull back)."""
    encoder = build_encoder("efficientnet_lite0")
    _, top = split_encoder(build_encoder("efficientnet_lite0"), 1)
    path = save_checkpoint(
        tmp_path / "tuned.safetensors",
        attention_model,
        small_vocab,
        encoder.spec,
        encoder_weights=top.encoder_weights(),
        encoder_tuned_stages=1,
    )
    tuned, _, kept = encoder_to_train_on("efficientnet_lite0", load_checkpoint(path))
    assert tuned.imagenet_head is None and kept["encoder_tuned_stages"] == 1
    with pytest.raises(ValueError, match="if fine-tuned, kept the head"):
        prepare_concept_decoder(_concept_decoder(encoder), ConceptTable.load(), tuned, _TINY_VOCAB)
    kept_head, _, _ = encoder_to_train_on("efficientnet_lite0", load_checkpoint(path), keep_imagenet_head=True)
    decoder = _concept_decoder(encoder)
    prepare_concept_decoder(decoder, ConceptTable.load(), kept_head, _TINY_VOCAB)
    assert torch.equal(decoder.imagenet_weight, encoder.imagenet_head.weight.to(decoder.imagenet_weight.dtype))
