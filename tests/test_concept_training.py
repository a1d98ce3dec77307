"""Training a concept decoder for real on the mini corpus: slotted captions, conversion from a
soft-attention checkpoint, self-critical training with the copy term and the end-token reward."""

from __future__ import annotations

import pytest
import torch
from training_helpers import read_log, tiny_scst_settings, tiny_train_config

from captioner import Captioner
from captioner.checkpoint import load_checkpoint, save_checkpoint
from captioner.concepts import slot_tokens
from captioner.encoders import build_encoder
from captioner.vocab import END, Vocabulary
from training.datasets import load_corpus
from training.encoder_split import split_encoder
from training.extract_features import main as extract_main
from training.fit_copy import copy_ranking_loss
from training.fit_copy import main as fit_copy_main
from training.head_drift import main as head_drift_main
from training.scst import ScstConfig, reward_words, train_scst
from training.train import excluding, train
from training.tune_concepts import best_setting


@pytest.fixture(scope="module")
def features_root(tmp_path_factory):
    return tmp_path_factory.mktemp("features")


@pytest.fixture(scope="module")
def concept_checkpoint(tmp_path_factory, mini_corpus, features_root):
    run = tmp_path_factory.mktemp("concept")
    settings = dict(dropout=0.1, lr=5e-3, lr_decay=1.0, epochs=12, patience=100, seed=3, image_dropout=0.0)
    return train(tiny_train_config(mini_corpus, run, features_root, decoder="concept_attention", **settings))


@pytest.mark.slow
def test_a_concept_decoder_learns_to_copy_the_dog_it_is_shown(concept_checkpoint, dog_photo):
    checkpoint = load_checkpoint(concept_checkpoint)
    assert checkpoint.concepts is not None and checkpoint.vocab.tokens[-6:] == slot_tokens(3)
    result = Captioner(checkpoint, checkpoint.build_encoder()).caption(dog_photo, beam_size=1)
    copied = [step for step in result.steps if step.concept is not None]
    assert copied and copied[0].concept == "dog" and copied[0].word in ("dog", "dogs")
    assert any(c.word == "dog" and c.in_slot for c in result.concepts)
    assert "<concept" not in result.caption


@pytest.mark.slow
def test_init_with_no_epochs_converts_a_checkpoint_keeping_its_weights(tmp_path, mini_corpus, features_root):
    soft = train(tiny_train_config(mini_corpus, tmp_path / "soft", features_root, decoder="soft_attention", epochs=1))
    converted = train(
        tiny_train_config(
            mini_corpus, tmp_path / "concept", features_root, decoder="concept_attention", init=str(soft), epochs=0
        )
    )
    before, after = load_checkpoint(soft), load_checkpoint(converted)
    assert after.vocab.tokens == [*before.vocab.tokens, *slot_tokens(3)]
    assert torch.equal(after.model.cell.weight_hh, before.model.cell.weight_hh)
    assert torch.equal(after.model.embed.weight[: len(before.vocab)], before.model.embed.weight)


@pytest.mark.slow
def test_self_critical_training_of_a_concept_decoder_with_the_copy_term(tmp_path, mini_corpus, features_root):
    init = train(
        tiny_train_config(mini_corpus, tmp_path / "xe", features_root, decoder="concept_attention", epochs=2, lr=5e-3)
    )
    settings = tiny_scst_settings(mini_corpus, init, features_root, epochs=1, copy_weight=1.0, patience=5)
    train_scst(ScstConfig(run_dir=str(tmp_path / "scst"), xe_weight=0.1, **settings))  # slotted references
    rows = read_log(tmp_path / "scst")
    assert [int(r["epoch"]) for r in rows] == [0, 1] and float(rows[1]["train_loss"]) != 0.0


def test_the_end_token_is_a_reward_word_only_for_finished_captions():
    vocab = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", "a", "dog"])
    assert reward_words([4, 5, 2], vocab, end=True) == ["a", "dog", END]
    assert reward_words([4, 5, 4], vocab, end=True) == ["a", "dog", "a"]  # ran out of length: no end
    assert reward_words([4, 5, 2], vocab, end=False) == ["a", "dog"]


def test_exclude_words_leaves_out_every_image_that_mentions_them(mini_corpus):
    images = [image for image in load_corpus(mini_corpus) if image.split == "train"]
    kept = excluding(images, "dog dogs")
    assert 0 < len(kept) < len(images)
    assert not any("dog" in caption.lower().split() for image in kept for caption in image.captions)


def test_the_copy_ranking_loss_asks_copies_to_beat_their_word_and_nothing_else():
    base, hidden = 4, torch.eye(3)  # three positions, hidden states one-hot
    word_logits = torch.tensor([[0.0, 0.0, 0.0, 2.0], [0.0, 0.0, 0.0, 2.0], [0.0, 0.0, 0.0, 2.0]])
    targets = torch.tensor([base, 3, 3])  # a copy of word 3, then word 3 twice
    replaced = torch.tensor([3, 3, 3])
    mask = torch.tensor([[0.0, float("-inf")]] * 3)  # slot 1 filled, its plural empty
    good = (torch.tensor([[9.0, 0.0, 0.0], [0.0, 0.0, 0.0]]), torch.zeros(2))  # fires at position 0 only
    bad = (torch.tensor([[0.0, 9.0, 9.0], [0.0, 0.0, 0.0]]), torch.zeros(2))  # fires everywhere else
    loss = copy_ranking_loss
    assert loss(hidden, word_logits, good, mask, targets, replaced, base) < 0.1
    assert loss(hidden, word_logits, bad, mask, targets, replaced, base) > 4


def test_the_copy_bias_can_be_chosen_among_the_settings_that_finish_their_sentences():
    grid = [
        {"copy_bias": 0.0, "CIDEr": 0.547, "unfinished": 0},
        {"copy_bias": 1.0, "CIDEr": 0.549, "unfinished": 1},
        {"copy_bias": 2.0, "CIDEr": 0.546, "unfinished": 0},
    ]
    assert best_setting(grid, "CIDEr")["copy_bias"] == 1.0
    assert best_setting(grid, "CIDEr", fewest_unfinished=True)["copy_bias"] == 0.0


@pytest.mark.slow
def test_a_concept_decoder_tunes_the_encoder_top_and_fits_its_copy_rows_through_it(
    tmp_path, mini_corpus, features_root
):
    init = train(
        tiny_train_config(mini_corpus, tmp_path / "xe", features_root, decoder="concept_attention", epochs=2, lr=5e-3)
    )
    extract_main(["--data", str(mini_corpus), "--out", str(features_root), "--tune-encoder-stages", "1"])
    settings = tiny_scst_settings(
        mini_corpus, init, features_root, epochs=1, copy_weight=1.0, patience=5, tune_encoder_stages=1
    )
    train_scst(ScstConfig(run_dir=str(tmp_path / "scst"), xe_weight=0.1, **settings))
    rows = read_log(tmp_path / "scst")
    assert float(rows[0]["imagenet_kl"]) == 0.0 and 0.0 < float(rows[1]["imagenet_kl"]) < 1.0
    state = torch.load(tmp_path / "scst" / "last.pt", weights_only=True)["model"]
    assert any(name.startswith("top.") for name in state)

    # fit_copy reads the maps through a tuned checkpoint's top: its copy rows move, the rest stays
    checkpoint = load_checkpoint(init)
    _, top = split_encoder(build_encoder(checkpoint.encoder.name), 1)
    with torch.no_grad():
        top.conv_head.weight.mul_(1.02)
    tuned = save_checkpoint(
        tmp_path / "tuned.safetensors",
        checkpoint.model,
        checkpoint.vocab,
        checkpoint.encoder,
        concepts=checkpoint.concepts,
        encoder_weights=top.encoder_weights(),
        encoder_tuned_stages=1,
    )
    drift = head_drift_main(["--checkpoint", str(tuned), "--data", str(mini_corpus), "--features", str(features_root)])
    assert drift["images"] == 8 and drift["kl"] > 0
    assert 0 <= drift["slots_agree"] <= 1 and 0 <= drift["top_class_agrees"] <= 1
    with pytest.raises(SystemExit, match="does not tune its encoder"):
        head_drift_main(["--checkpoint", str(init), "--data", str(mini_corpus), "--features", str(features_root)])
    fitted = fit_copy_main(
        ["--checkpoint", str(tuned), "--data", str(mini_corpus), "--features", str(features_root)]
        + ["--out", str(tmp_path / "fitted.safetensors"), "--epochs", "1", "--batch-size", "16"]
    )
    before, after = load_checkpoint(tuned), load_checkpoint(fitted)
    assert after.encoder_tuned_stages == 1
    name = "backbone.model.conv_head.weight"
    assert torch.equal(after.encoder_weights[name], before.encoder_weights[name])
    base = before.model.base_vocab_size
    assert not torch.equal(after.model.head.weight[base:], before.model.head.weight[base:])
    assert torch.equal(after.model.head.weight[:base], before.model.head.weight[:base])
