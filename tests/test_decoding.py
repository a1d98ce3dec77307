from __future__ import annotations

import math

import pytest
import torch

from captioner.decoding import beam_search, constrained_beam_search, greedy_decode, sample_decode


def _ids(vocab):
    return {"start_id": vocab.start_id, "end_id": vocab.end_id}


@pytest.mark.parametrize("seed", range(5))
def test_beam_size_one_equals_greedy(small_model, small_vocab, seed):
    torch.manual_seed(seed)
    features = torch.randn(4, 16) * 3
    greedy = greedy_decode(small_model, features, max_length=12, top_k=3, **_ids(small_vocab))
    beam = beam_search(small_model, features, beam_size=1, max_length=12, top_k=3, **_ids(small_vocab))
    for g, b in zip(greedy, beam):
        assert g.token_ids == b.token_ids
        assert g.log_prob == pytest.approx(b.log_prob, abs=1e-5)
        assert g.finished == b.finished


@pytest.mark.parametrize("beam_size", [1, 3])
def test_top_k_sorted_probabilities_containing_choice(small_model, small_vocab, beam_size):
    torch.manual_seed(1)
    features = torch.randn(3, 16) * 3
    decoded = beam_search(small_model, features, beam_size=beam_size, max_length=10, top_k=4, **_ids(small_vocab))
    for sequence in decoded:
        assert sequence.steps
        for step in sequence.steps:
            assert len(step.top_ids) == len(step.top_probs) == 4
            assert list(step.top_probs) == sorted(step.top_probs, reverse=True)
            assert all(0.0 <= p <= 1.0 for p in step.top_probs)
            assert sum(step.top_probs) <= 1.0 + 1e-5
            if step.token_id in step.top_ids:
                assert step.prob == pytest.approx(step.top_probs[step.top_ids.index(step.token_id)], rel=1e-5)
            else:  # beam search may keep a word outside this step's top-k; it must then be less likely
                assert step.prob <= step.top_probs[-1] + 1e-7


def test_greedy_chooses_the_top_word(small_model, small_vocab):
    torch.manual_seed(2)
    for sequence in greedy_decode(small_model, torch.randn(3, 16), max_length=8, top_k=2, **_ids(small_vocab)):
        assert all(step.token_id == step.top_ids[0] for step in sequence.steps)


def test_max_length_is_respected(small_model, small_vocab):
    for sequence in greedy_decode(small_model, torch.randn(2, 16), max_length=3, top_k=1, **_ids(small_vocab)):
        assert len(sequence.steps) <= 3


def test_sampling_is_repeatable_and_respects_the_nucleus(small_model, small_vocab):
    torch.manual_seed(4)
    features = torch.randn(4, 16) * 3

    def run(seed: int, top_p: float):
        generator = torch.Generator().manual_seed(seed)
        return sample_decode(
            small_model, features, max_length=10, top_k=3, top_p=top_p, generator=generator, **_ids(small_vocab)
        )

    assert [d.token_ids for d in run(1, 0.9)] == [d.token_ids for d in run(1, 0.9)]
    # a tiny nucleus keeps only the most probable word: sampling becomes greedy
    greedy = greedy_decode(small_model, features, max_length=10, top_k=3, **_ids(small_vocab))
    assert [d.token_ids for d in run(2, 1e-6)] == [g.token_ids for g in greedy]
    for sequence in run(3, 0.5):
        for step in sequence.steps:
            assert step.prob > 0 and list(step.top_probs) == sorted(step.top_probs, reverse=True)
            assert sum(step.top_probs) <= 1 + 1e-5


def test_sampling_rejects_bad_settings(small_model, small_vocab):
    with pytest.raises(ValueError, match="top_p"):
        sample_decode(small_model, torch.randn(1, 16), top_p=0.0, **_ids(small_vocab))


def _repeats(words: list[int], n: int) -> bool:
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(grams) != len(set(grams))


@pytest.mark.parametrize("n", [1, 2, 3])
def test_no_repeat_ngram_blocks_repeats_that_plain_beam_search_makes(small_model, small_vocab, n):
    torch.manual_seed(3)
    features = torch.randn(8, 16) * 3
    options = {"beam_size": 3, "max_length": 15, "top_k": 3, **_ids(small_vocab)}
    plain = beam_search(small_model, features, **options)
    blocked = beam_search(small_model, features, no_repeat_ngram=n, **options)
    assert any(_repeats(d.token_ids, n) for d in plain)  # the untrained model does repeat itself
    assert not any(_repeats(d.token_ids, n) for d in blocked)
    for sequence in blocked:  # the recorded probabilities stay the model's own
        assert all(0.0 < step.prob <= 1.0 for step in sequence.steps)


def _contains_one_of_each(token_ids: list[int], sets: list[frozenset[int]]) -> bool:
    return all(not tokens.isdisjoint(token_ids) for tokens in sets)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_constrained_search_names_every_required_word(small_model, small_vocab, beam_size):
    torch.manual_seed(5)
    features = torch.randn(6, 16) * 3
    options = {"beam_size": beam_size, "max_length": 12, "top_k": 3, **_ids(small_vocab)}
    plain = beam_search(small_model, features, **options)
    words = [small_vocab.id_of(w) for w in ("cat", "grass", "mat", "play")]
    constraints = [[frozenset({words[i % 4]}), frozenset({words[(i + 1) % 4], words[(i + 2) % 4]})] for i in range(6)]
    constrained = constrained_beam_search(small_model, features, constraints, **options)
    assert sum(not _contains_one_of_each(d.token_ids, c) for d, c in zip(plain, constraints)) >= 3
    for decoded, sets in zip(constrained, constraints):
        assert decoded.finished or len(decoded.steps) == 12
        assert _contains_one_of_each(decoded.token_ids, sets)
        assert decoded.log_prob == pytest.approx(sum(math.log(step.prob) for step in decoded.steps), abs=1e-4)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_constrained_search_without_constraints_is_beam_search(small_model, small_vocab, beam_size):
    torch.manual_seed(6)
    features = torch.randn(3, 16) * 3
    options = {"beam_size": beam_size, "max_length": 12, "top_k": 3, **_ids(small_vocab)}
    plain = beam_search(small_model, features, **options)
    unconstrained = constrained_beam_search(small_model, features, [[], [frozenset()], []], **options)
    assert [d.token_ids for d in unconstrained] == [d.token_ids for d in plain]


def test_a_constraint_that_cannot_be_met_leaves_the_best_caption_meeting_the_others(small_model, small_vocab):
    torch.manual_seed(7)
    features = torch.randn(2, 16) * 3
    options = {"beam_size": 2, "max_length": 10, "top_k": 3, **_ids(small_vocab)}
    never = frozenset({small_vocab.unk_id})  # suppressed: never generated
    cat = frozenset({small_vocab.id_of("cat")})
    decoded = constrained_beam_search(
        small_model, features, [[never, cat], [never]], suppress_ids=small_vocab.never_generated_ids, **options
    )
    assert small_vocab.unk_id not in decoded[0].token_ids + decoded[1].token_ids
    assert cat <= set(decoded[0].token_ids)
    plain = beam_search(small_model, features[1:], suppress_ids=small_vocab.never_generated_ids, **options)
    assert decoded[1].token_ids == plain[0].token_ids


def test_constrained_search_needs_one_constraint_list_per_image(small_model, small_vocab):
    with pytest.raises(ValueError, match="constraint lists for 2 images"):
        constrained_beam_search(small_model, torch.randn(2, 16), [[]], **_ids(small_vocab))
