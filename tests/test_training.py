"""A tiny real training run on the committed mini corpus (real encoder, real features)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from training_helpers import read_log, tiny_train_config

from captioner.captioner import default_checkpoint_path
from captioner.checkpoint import load_checkpoint, read_metadata
from training.datasets import load_corpus
from training.train import TrainConfig, train


@pytest.fixture(scope="module")
def features_root(tmp_path_factory):
    return tmp_path_factory.mktemp("features")


def _config(mini_corpus, run, features_root, **overrides) -> TrainConfig:
    settings = dict(dropout=0.1, lr=5e-3, lr_decay=1.0, epochs=10, patience=100, seed=3)
    return tiny_train_config(mini_corpus, run, features_root, **{**settings, **overrides})


@pytest.mark.slow
def test_training_loss_falls_and_writes_a_loadable_checkpoint(tmp_path, mini_corpus, features_root):
    best = train(_config(mini_corpus, tmp_path, features_root))
    losses = [float(row["train_loss"]) for row in read_log(tmp_path)]
    assert len(losses) == 10
    assert losses[-1] < 0.75 * losses[0]
    assert (tmp_path / "curves.png").stat().st_size > 1000
    checkpoint = load_checkpoint(best)
    train_captions = [c for i in load_corpus(mini_corpus) if i.split == "train" for c in i.captions]
    assert "dog" in checkpoint.vocab.tokens
    assert checkpoint.config.vocab_size == len(checkpoint.vocab) > 50
    assert checkpoint.training["train_images"] == 24 and len(train_captions) == 120
    assert checkpoint.encoder.name == "efficientnet_lite0"
    assert "BLEU-4" in checkpoint.metrics["val_greedy"]


@pytest.mark.slow
def test_resume_reaches_the_same_weights(tmp_path, mini_corpus, features_root):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(_config(mini_corpus, straight, features_root, epochs=3))
    train(_config(mini_corpus, resumed, features_root, epochs=2))
    train(_config(mini_corpus, resumed, features_root, epochs=3, resume=True))
    a = torch.load(straight / "last.pt", weights_only=True)
    b = torch.load(resumed / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert json.loads(a["history"])[-1]["train_loss"] == json.loads(b["history"])[-1]["train_loss"]


@pytest.mark.slow
def test_resume_with_other_settings_is_refused(tmp_path, mini_corpus, features_root):
    train(_config(mini_corpus, tmp_path, features_root, epochs=1))
    with pytest.raises(ValueError, match="different vocabulary or model shape"):
        train(_config(mini_corpus, tmp_path, features_root, epochs=2, hidden_dim=40, resume=True))


@pytest.mark.slow
def test_feature_cache_is_reused_only_when_it_matches(tmp_path, mini_corpus, features_root):
    from captioner.encoders import build_encoder
    from training.feature_cache import extract_features, open_cache

    encoder = build_encoder("efficientnet_lite0")
    paths = [image.path for image in load_corpus(mini_corpus)][:4]
    cache = extract_features(encoder, paths, tmp_path)
    assert cache.features.shape == (4, 1280, 7, 7)
    spec = encoder.spec.to_dict()
    assert open_cache(tmp_path, spec, [p.name for p in paths]) is not None
    assert open_cache(tmp_path, spec, [p.name for p in paths[:3]]) is None
    assert (
        open_cache(tmp_path, dataclasses.replace(encoder.spec, image_size=240).to_dict(), [p.name for p in paths])
        is None
    )


@pytest.mark.slow
def test_mirrored_feature_cache_holds_the_mirrored_images_and_is_kept_apart(tmp_path, mini_corpus):
    import torch

    from captioner.encoders import ImagePreprocessor, build_encoder
    from training.feature_cache import extract_features, open_cache

    encoder = build_encoder("efficientnet_lite0")
    paths = [image.path for image in load_corpus(mini_corpus)][:3]
    names, spec = [p.name for p in paths], encoder.spec.to_dict()
    plain = extract_features(encoder, paths, tmp_path / "plain")
    mirrored = extract_features(encoder, paths, tmp_path / "mirrored", mirrored=True)
    with torch.inference_mode():
        expected = encoder(ImagePreprocessor(encoder.spec)(paths[1]).flip(-1)[None])[0]
    got = torch.from_numpy(mirrored.features[1].astype("float32"))
    assert torch.allclose(got, expected, atol=1e-2, rtol=1e-2)
    assert not torch.allclose(got, torch.from_numpy(plain.features[1].astype("float32")), atol=1e-1)
    assert open_cache(tmp_path / "mirrored", spec, names) is None  # never taken for the plain images
    assert open_cache(tmp_path / "plain", spec, names, mirrored=True) is None
    assert open_cache(tmp_path / "mirrored", spec, names, mirrored=True) is not None


@pytest.mark.slow
def test_tune_decoding_stores_the_best_val_setting_as_the_default(tmp_path, mini_corpus, features_root):
    from captioner import Captioner
    from training import tune_decoding

    best = train(_config(mini_corpus, tmp_path, features_root, epochs=3))
    before = Captioner.load(best)
    assert before.default_decoding["beam_size"] == 1  # greedy until a choice is stored
    grid = tune_decoding.main(
        [
            *("--checkpoint", str(best), "--data", str(mini_corpus), "--features", str(features_root)),
            *("--beams", "1", "3", "--length-penalties", "0", "1", "--no-repeat-ngrams", "0", "2"),
            *("--select", "BLEU-4", "--apply", "--out", str(tmp_path / "grid.json")),
        ]
    )
    assert len(grid) == 1 + 2 * 2  # greedy, then beam 3 x 2 length penalties x 2 no-repeat rules
    winner = max(grid, key=lambda row: row["BLEU-4"])
    after = Captioner.load(best)
    chosen = {k: after.default_decoding[k] for k in ("beam_size", "length_penalty", "no_repeat_ngram")}
    assert chosen == {k: winner[k] for k in chosen}
    assert after.default_decoding["temperature"] == before.default_decoding["temperature"]
    photo = next((mini_corpus / "images").glob("*.jpg"))
    explicit = after.caption(photo, **{k: v for k, v in chosen.items()})
    assert after.caption(photo).caption == explicit.caption  # the stored choice is the default


def test_the_default_command_trains_the_shipped_decoder_in_the_shipped_shape():
    shipped = read_metadata(default_checkpoint_path())["config"]
    defaults = TrainConfig(data="photos").model
    assert defaults.decoder == shipped["decoder"] == "concept_attention"
    shape = ("embed_dim", "hidden_dim", "num_layers", "dropout", "image_dropout", "attention_dim", "tie_embeddings")
    assert {name: getattr(defaults, name) for name in shape} == {name: shipped[name] for name in shape}
    assert (defaults.concept_slots, defaults.concept_threshold) == (
        shipped["concept_slots"],
        shipped["concept_threshold"],
    )
