"""CIDEr-D for self-critical training, and a tiny real self-critical run."""

from __future__ import annotations

import pytest
import torch
from pycocoevalcap.cider.cider import Cider
from training_helpers import read_log, tiny_train_config

from captioner.checkpoint import load_checkpoint
from captioner.vocab import tokenize
from training.cider import CiderD
from training.datasets import load_corpus
from training.scst import ScstConfig, sample_captions, train_scst
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


def test_self_critical_run_from_a_cross_entropy_checkpoint(tmp_path, mini_corpus):
    features = tmp_path / "features"
    xe = train(tiny_train_config(mini_corpus, tmp_path / "xe", features, dropout=0.1, lr=5e-3, epochs=4))
    best = train_scst(
        ScstConfig(
            data=str(mini_corpus),
            init=str(xe),
            run_dir=str(tmp_path / "scst"),
            features=str(features),
            epochs=2,
            batch_size=8,
            samples=3,
            lr=1e-3,
            patience=5,
        )
    )
    rows = read_log(tmp_path / "scst")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert all(float(r["greedy_cider_d"]) >= 0 for r in rows[1:])
    assert (tmp_path / "scst" / "last.pt").is_file()
    if best.is_file():  # written only when validation CIDEr improved on the cross-entropy start
        assert "scst" in load_checkpoint(best).training
