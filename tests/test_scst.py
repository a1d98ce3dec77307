"""CIDEr-D for self-critical training, and a tiny real self-critical run."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from pycocoevalcap.cider.cider import Cider
from torch.optim.swa_utils import AveragedModel
from training_helpers import read_log, tiny_scst_settings, tiny_train_config

from captioner.checkpoint import load_checkpoint
from captioner.decoding import greedy_decode
from captioner.vocab import END, tokenize
from training.cider import CiderD
from training.datasets import load_corpus
from training.scst import ScstConfig, _some_mirrored, _stages, advantages, sample_captions, train_scst
from training.self_critical import caption_reward, float_average, reference_loss, reference_targets
from training.train import train


def test_cider_d_matches_pycocoevalcap_with_the_same_document_frequencies(mini_corpus):
    images = load_corpus(mini_corpus)
    references = {i.name: [" ".join(tokenize(c)) for c in i.captions] for i in images}
    candidates = {i.name: [references[images[(n + 1) % len(images)].name][0]] for n, i in enumerate(images)}
    candidates[images[0].name] = [references[images[0].name][2]]  # one candidate copies a reference
    expected, per_image = Cider().compute_score(references, candidates)
    scorer = CiderD([[r.split() for r in references[i.name]] for i in images])
    ours = [scorer.score(candidates[i.name][0].split(), [r.split() for r in references[i.name]]) for i in images]
    assert ours == pytest.approx(list(per_image), rel=1e-9, abs=1e-12)
    assert sum(ours) / len(ours) == pytest.approx(expected)
    assert ours[0] > max(ours[1:])


def test_the_reward_adds_sentence_bleu_at_its_weight(mini_corpus):
    images = load_corpus(mini_corpus)
    references = [[tokenize(c) for c in image.captions] for image in images]
    scorer = CiderD(references)
    copied, other = references[0][1], references[1][0]
    for words in (copied, other):
        plain = caption_reward(scorer, words, references[0], key=0)
        assert plain == scorer.score(words, references[0])
        mixed = caption_reward(scorer, words, references[0], key=0, bleu_weight=0.5)
        assert 0.0 < mixed - plain <= 0.5
    # a copied reference has BLEU-4 1 against the references that hold it
    assert caption_reward(scorer, copied, references[0], key=0, bleu_weight=0.5) - scorer.score(
        copied, references[0]
    ) == pytest.approx(0.5)


def test_the_reward_takes_the_penalty_from_captions_that_stop_mid_phrase(mini_corpus):
    images = load_corpus(mini_corpus)
    references = [[tokenize(c) + [END] for c in image.captions] for image in images]
    scorer = CiderD(references)
    whole = references[0][0]
    cut = [*whole[:2], "a", END]  # e.g. "a dog a <end>"
    for words, penalised in ((whole, False), (cut, True), (cut[:-1], True)):
        plain = caption_reward(scorer, words, references[0], key=0)
        docked = caption_reward(scorer, words, references[0], key=0, unfinished_penalty=0.7)
        assert docked == pytest.approx(plain - 0.7 if penalised else plain)


def test_sampling_masks_after_end(small_model, small_vocab):
    torch.manual_seed(0)
    ids, log_probs = sample_captions(
        small_model, torch.randn(6, 16), start_id=small_vocab.start_id, end_id=small_vocab.end_id, max_length=9
    )
    assert ids.shape == log_probs.shape and ids.shape[0] == 6
    for row, lp in zip(ids.tolist(), log_probs):
        if small_vocab.end_id in row:
            end = row.index(small_vocab.end_id)
            assert all(t == 0 for t in row[end + 1 :]) and torch.all(lp[end + 1 :] == 0)
        assert torch.all(lp[: len([t for t in row if t])] < 0)


@pytest.mark.parametrize("model_name", ["small_model", "attention_model"])
def test_samples_of_an_image_share_its_state_and_match_sampling_repeated_rows(request, small_vocab, model_name):
    model = request.getfixturevalue(model_name).eval()
    features = torch.randn(4, 16) if model_name == "small_model" else torch.randn(4, 16, 3, 3)
    ids = {"start_id": small_vocab.start_id, "end_id": small_vocab.end_id, "max_length": 9}
    torch.manual_seed(3)
    shared, shared_log_p = sample_captions(model, features, samples=3, **ids)
    torch.manual_seed(3)
    repeated, repeated_log_p = sample_captions(model, features.repeat_interleave(3, dim=0), **ids)
    assert shared.shape[0] == 12
    assert torch.equal(shared, repeated)
    assert torch.allclose(shared_log_p, repeated_log_p, atol=1e-5)
    assert len({tuple(row) for row in shared.tolist()}) > 4, "an image's samples should differ"


def test_mean_of_other_samples_baseline_centres_each_image():
    rewards = torch.tensor([[1.0, 0.0, 0.5], [0.2, 0.2, 0.2]])
    result = advantages(rewards)
    # sample 0 of image 0: 1.0 - mean(0.0, 0.5)
    assert result[0].tolist() == pytest.approx([0.75, -0.75, 0.0])
    assert result[1].tolist() == pytest.approx([0.0, 0.0, 0.0], abs=1e-6)
    assert result.sum(dim=1).tolist() == pytest.approx([0.0, 0.0], abs=1e-6)


def test_greedy_baseline_subtracts_the_greedy_reward_of_the_same_image():
    rewards = torch.tensor([[1.0, 0.0], [0.2, 0.4]])
    result = advantages(rewards, torch.tensor([0.5, 0.4]))
    assert result.flatten().tolist() == pytest.approx([0.5, -0.5, -0.2, 0.0], abs=1e-6)


def test_mean_baseline_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2 samples"):
        advantages(torch.ones(4, 1))


@pytest.mark.slow
@pytest.mark.parametrize("baseline", ["greedy", "mean"])
def test_self_critical_run_from_a_cross_entropy_checkpoint(tmp_path, mini_corpus, baseline):
    features = tmp_path / "features"
    xe = train(tiny_train_config(mini_corpus, tmp_path / "xe", features, dropout=0.1, lr=5e-3, epochs=4))
    xe_weight = 0.5 if baseline == "mean" else 0.0  # the mixed objective runs too
    settings = tiny_scst_settings(mini_corpus, xe, features, epochs=2, baseline=baseline, patience=5)
    best = train_scst(ScstConfig(run_dir=str(tmp_path / "scst"), xe_weight=xe_weight, **settings))
    rows = read_log(tmp_path / "scst")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert all(float(r["sample_cider_d"]) >= 0 and float(r["baseline_cider_d"]) >= 0 for r in rows[1:])
    if baseline == "mean":  # the baseline is the samples' own mean
        assert all(float(r["sample_cider_d"]) == pytest.approx(float(r["baseline_cider_d"])) for r in rows[1:])
    assert (tmp_path / "scst" / "last.pt").is_file()
    if best.is_file():  # written only when validation CIDEr improved on the cross-entropy start
        assert "scst" in load_checkpoint(best).training


@pytest.mark.slow
def test_weight_average_is_validated_saved_and_resumed(tmp_path, mini_corpus):
    features = tmp_path / "features"
    xe = train(tiny_train_config(mini_corpus, tmp_path / "xe", features, dropout=0.1, lr=5e-3, epochs=4))
    settings = tiny_scst_settings(mini_corpus, xe, features, run_dir=str(tmp_path / "scst"), patience=5, ema_decay=0.5)
    train_scst(ScstConfig(epochs=1, **settings))
    train_scst(ScstConfig(epochs=2, resume=True, **settings))
    rows = read_log(tmp_path / "scst")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert rows[0]["val_raw_CIDEr"] == rows[0]["val_CIDEr"]  # the start has one set of weights
    assert all(0.0 <= float(r["val_raw_CIDEr"]) <= 10.0 for r in rows)
    state = torch.load(tmp_path / "scst" / "last.pt", weights_only=True)
    raw, averaged = state["model"], state["average"]
    assert int(averaged["n_averaged"]) > 1
    assert any(not torch.equal(raw[name], averaged[f"module.{name}"]) for name in raw)


def test_some_mirrored_swaps_whole_rows_at_the_given_chance():
    features, mirrored = torch.zeros(400, 3, 2, 2), torch.ones(400, 3, 2, 2)
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(_some_mirrored(features, mirrored, 0.0, generator), features)
    assert torch.equal(_some_mirrored(features, mirrored, 1.0, generator), mirrored)
    mixed = _some_mirrored(features, mirrored, 0.5, generator)
    per_row = mixed.flatten(1)
    assert torch.all((per_row == 0).all(dim=1) | (per_row == 1).all(dim=1))  # rows are never mixed
    assert 150 < int(per_row[:, 0].sum()) < 250


@pytest.mark.slow
def test_self_critical_run_reads_the_mirrored_cache(tmp_path, mini_corpus):
    from captioner.encoders import build_encoder
    from training.extract_features import cache_dir_for
    from training.feature_cache import extract_features

    features = tmp_path / "features"
    xe = train(tiny_train_config(mini_corpus, tmp_path / "xe", features, dropout=0.1, lr=5e-3, epochs=2))
    settings = tiny_scst_settings(mini_corpus, xe, features, epochs=1)
    with pytest.raises(FileNotFoundError, match="extract_features --encoder efficientnet_lite0 --mirrored"):
        train_scst(ScstConfig(run_dir=str(tmp_path / "none"), mirrored=0.5, **settings))
    with pytest.raises(ValueError, match="--mirrored"):
        train_scst(ScstConfig(run_dir=str(tmp_path / "bad"), mirrored=1.5, **settings))
    encoder = build_encoder("efficientnet_lite0")
    paths = [image.path for image in load_corpus(mini_corpus)]
    extract_features(encoder, paths, cache_dir_for(features, encoder.spec.name, mirrored=True), mirrored=True)
    train_scst(ScstConfig(run_dir=str(tmp_path / "plain"), **settings))
    train_scst(ScstConfig(run_dir=str(tmp_path / "mirrored"), mirrored=1.0, **settings))
    plain, mirrored = read_log(tmp_path / "plain")[1], read_log(tmp_path / "mirrored")[1]
    # the same seed and start: only the images the model read differ, and with them its losses
    assert plain["train_loss"] != mirrored["train_loss"]


def test_scst_stages_chain():
    first, second = {"epoch": 3}, {"epoch": 5}
    assert _stages({}, first) == [first]
    assert _stages({"scst": first}, second) == [first, second]
    assert _stages({"scst": [first, second]}, first) == [first, second, first]


def test_ema_decay_out_of_range_is_refused(tmp_path, mini_corpus):
    with pytest.raises(ValueError, match="--ema-decay"):
        train_scst(ScstConfig(data=str(mini_corpus), init="unused", run_dir=str(tmp_path), ema_decay=1.0))


@pytest.mark.parametrize("weight", ["unfinished_penalty", "bleu_weight"])
def test_a_negative_reward_term_is_refused(tmp_path, mini_corpus, weight):
    with pytest.raises(ValueError, match="must be 0 or more"):
        train_scst(ScstConfig(data=str(mini_corpus), init="unused", run_dir=str(tmp_path), **{weight: -1.0}))


def test_unknown_baseline_is_refused(tmp_path, mini_corpus):
    with pytest.raises(ValueError, match="--baseline"):
        train_scst(ScstConfig(data=str(mini_corpus), init="unused", run_dir=str(tmp_path), baseline="best"))


@pytest.mark.slow
def test_sample_dropout_changes_what_is_sampled_and_nothing_else_does(tmp_path, mini_corpus):
    features = tmp_path / "features"
    xe = train(tiny_train_config(mini_corpus, tmp_path / "xe", features, dropout=0.5, lr=5e-3, epochs=2))
    settings = tiny_scst_settings(mini_corpus, xe, features, epochs=1)
    for name, dropout in (("plain", False), ("again", False), ("dropout", True)):
        train_scst(ScstConfig(run_dir=str(tmp_path / name), sample_dropout=dropout, **settings))
    plain, again, dropout = (read_log(tmp_path / name)[1] for name in ("plain", "again", "dropout"))
    assert plain["sample_cider_d"] == again["sample_cider_d"]  # the same seed and start: the same samples
    assert plain["sample_cider_d"] != dropout["sample_cider_d"]


def test_the_reference_term_teaches_whole_reference_captions(small_model, small_vocab):
    images = [SimpleNamespace(captions=["a dog runs on the grass"]), SimpleNamespace(captions=["two dogs play"])]
    targets = reference_targets(images, None, small_vocab, None)
    assert [[small_vocab.decode(ids.tolist()) for ids in image] for image in targets] == [
        [["a", "dog", "runs", "on", "the", "grass"]],
        [["two", "dogs", "play"]],
    ]
    features, index = torch.randn(2, 16, generator=torch.Generator().manual_seed(1)), torch.arange(2)
    optimizer = torch.optim.Adam(small_model.parameters(), lr=0.05)
    start = reference_loss(small_model, features, index, targets, torch.Generator().manual_seed(0)).item()
    for _ in range(40):
        optimizer.zero_grad()
        reference_loss(small_model, features, index, targets, torch.Generator().manual_seed(0)).backward()
        optimizer.step()
    assert reference_loss(small_model, features, index, targets, torch.Generator()).item() < start / 10
    decoded = greedy_decode(
        small_model.eval(), features, start_id=small_vocab.start_id, end_id=small_vocab.end_id, max_length=9, top_k=1
    )
    assert [small_vocab.decode(seq.token_ids) for seq in decoded] == [
        ["a", "dog", "runs", "on", "the", "grass"],
        ["two", "dogs", "play"],
    ]


def test_the_weight_average_copies_integer_buffers_and_averages_the_rest():
    model = torch.nn.Linear(2, 2)
    model.register_buffer("index", torch.arange(1000))
    average = AveragedModel(model, multi_avg_fn=float_average(0.997), use_buffers=True)
    start = model.weight.detach().clone()
    for _ in range(3):
        with torch.no_grad():
            model.weight.add_(1.0)
        average.update_parameters(model)
    assert torch.equal(average.module.index, torch.arange(1000))  # averaged as floats, some would fall by one
    first = start + 1.0  # the first update copies; the next two average
    expected = (first * 0.997 + (start + 2.0) * 0.003) * 0.997 + (start + 3.0) * 0.003
    assert torch.allclose(average.module.weight, expected)
