"""Decoding over a model's ``init_state`` / ``step``: greedy, beam search (also constrained) and sampling.

Written once and used by evaluation, the CLI and the app. Every step records the chosen
token, its probability and the top-k candidates from the same softmax that chose it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = [
    "Step",
    "Decoded",
    "StepModel",
    "CompiledGreedy",
    "greedy_decode",
    "beam_search",
    "constrained_beam_search",
    "sample_decode",
]


class StepModel(Protocol):
    """What decoding needs from a model (every :class:`~captioner.decoders.Decoder` and its
    inference forms): ``attention_weights`` gives the weights (B, L) over image locations that
    the last step used, or None for a model that does not attend."""

    def init_state(self, features: torch.Tensor) -> Any: ...
    def step(self, tokens: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]: ...
    def select_state(self, state: Any, indices: torch.Tensor) -> Any: ...
    def attention_weights(self, state: Any) -> torch.Tensor | None: ...


@runtime_checkable
class CompiledGreedy(Protocol):
    """Optional for a :class:`StepModel`: a greedy loop of its own, compiled, which
    :func:`greedy_decode` runs instead of its Python loop over ``step`` (for instance
    :class:`~captioner.decoders.soft_attention.FusedAttentionDecoder`).

    ``greedy_records`` returns per step (rows, top log-probs, top ids, chosen tokens, chosen
    log-probs, attention weights), as that Python loop records them; ``mask`` (``vocab_size``,)
    is added to the logits scaled by ``scale`` (None: nothing suppressed).
    """

    vocab_size: int

    def greedy_records(
        self,
        features: torch.Tensor,
        *,
        mask: torch.Tensor | None,
        scale: float,
        start_id: int,
        end_id: int,
        max_length: int,
        top_k: int,
    ) -> list[tuple[torch.Tensor, ...]]: ...


@dataclass(frozen=True)
class Step:
    """One generated token with its probability and the top-k alternatives (sorted).

    ``attention`` holds the weights over image locations used for this word when the model
    attends (None otherwise).
    """

    token_id: int
    prob: float
    top_ids: tuple[int, ...]
    top_probs: tuple[float, ...]
    attention: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Decoded:
    """A decoded sequence. ``steps`` ends with the ``<end>`` step when ``finished``."""

    steps: tuple[Step, ...]
    log_prob: float
    finished: bool

    @property
    def token_ids(self) -> list[int]:
        return [s.token_id for s in self.steps]


class _WordDistribution:
    """Log-softmax at ``temperature`` over the vocabulary minus ``suppress_ids`` (never generated).

    Built once per decoding call: the steps reuse one additive mask (0, or -inf for the
    suppressed ids) and scale and mask the logits in a single operation.
    """

    def __init__(self, temperature: float, suppress_ids: tuple[int, ...], device: torch.device) -> None:
        self.scale = 1.0 / temperature
        self.suppress_ids = suppress_ids
        self.device = device
        self.mask: torch.Tensor | None = None  # (V,), made at the first step, when V is known

    def mask_for(self, vocab_size: int) -> torch.Tensor | None:
        """The additive mask (V,), or None when nothing is suppressed."""
        if self.suppress_ids and self.mask is None:
            self.mask = torch.zeros(vocab_size, device=self.device)
            self.mask[list(self.suppress_ids)] = float("-inf")
        return self.mask

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        mask = self.mask_for(logits.shape[-1])
        if mask is not None:
            logits = torch.add(mask, logits, alpha=self.scale)
        elif self.scale != 1.0:
            logits = logits * self.scale
        return torch.log_softmax(logits, dim=-1)


@torch.inference_mode()
def greedy_decode(
    model: StepModel,
    features: torch.Tensor,
    *,
    start_id: int,
    end_id: int,
    max_length: int = 20,
    top_k: int = 5,
    temperature: float = 1.0,
    suppress_ids: tuple[int, ...] = (),
) -> list[Decoded]:
    """Most probable word at every step, for a batch of images; at most ``max_length`` tokens.

    A model with a compiled greedy loop of its own (:class:`CompiledGreedy`) runs that instead
    of the Python loop.
    """

    distribution = _WordDistribution(temperature, suppress_ids, features.device)
    if isinstance(model, CompiledGreedy):
        records = model.greedy_records(
            features,
            mask=distribution.mask_for(model.vocab_size),
            scale=distribution.scale,
            start_id=start_id,
            end_id=end_id,
            max_length=max_length,
            top_k=top_k,
        )
        return _decoded(records, features.shape[0], end_id)

    def most_probable(logits: torch.Tensor) -> tuple[torch.Tensor, None]:
        return distribution(logits), None  # the top-1 word is taken

    return _decode_batch(
        model, features, most_probable, start_id=start_id, end_id=end_id, max_length=max_length, top_k=top_k
    )


def _decode_batch(
    model: StepModel,
    features: torch.Tensor,
    pick: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]],
    *,
    start_id: int,
    end_id: int,
    max_length: int,
    top_k: int,
) -> list[Decoded]:
    """One word per image per step, for greedy decoding and sampling alike.

    ``pick(logits)`` returns the log-probabilities (B, V) the word is chosen from and the
    chosen tokens (B,), or None for the most probable. Images whose caption has ended leave
    the batch, so the remaining steps cost only what the unfinished captions need. The loop
    stays on tensors; Python objects are built once at the end.
    """
    state = model.init_state(features)
    rows = torch.arange(features.shape[0], device=features.device)  # which image each batch row is
    tokens = torch.full(rows.shape, start_id, dtype=torch.long, device=features.device)
    records = []  # per step: (rows, top log-probs, top ids, tokens, chosen log-probs, attention)
    for _ in range(max_length):
        logits, state = model.step(tokens, state)
        log_p, chosen = pick(logits)  # (B, V), (B,) or None
        top_log_p, top_ids = log_p.topk(top_k, dim=-1)  # sorted: [:, 0] is the most probable
        if chosen is None:
            tokens, chosen_log_p = top_ids[:, 0], top_log_p[:, 0]
        else:
            tokens, chosen_log_p = chosen, log_p.gather(1, chosen[:, None]).squeeze(1)
        records.append((rows, top_log_p, top_ids, tokens, chosen_log_p, model.attention_weights(state)))
        going = tokens != end_id
        still_going = int(going.sum())
        if still_going == 0:
            break
        if still_going < len(tokens):  # drop the finished captions from the batch
            keep = going.nonzero().squeeze(1)
            rows, tokens, state = rows[keep], tokens[keep], model.select_state(state, keep)
    return _decoded(records, features.shape[0], end_id)


def _decoded(records: list, batch_size: int, end_id: int) -> list[Decoded]:
    """The captions of a batch from per-step records (rows, top log-probs, top ids, tokens,
    chosen log-probs, attention or None), built into Python objects once, at the end: each
    field of every step in one tensor, read out with one ``tolist``."""
    rows, top_log_p, top_ids, chosen, chosen_log_p, weights = zip(*records)
    chosen_log_p = torch.cat(chosen_log_p)
    columns = zip(
        torch.cat(rows).tolist(),
        torch.cat(chosen).tolist(),
        chosen_log_p.exp().tolist(),
        chosen_log_p.tolist(),
        torch.cat(top_ids).tolist(),
        torch.cat(top_log_p).exp().tolist(),
        torch.cat(weights).tolist() if weights[0] is not None else [None] * len(chosen_log_p),
    )
    steps: list[list[Step]] = [[] for _ in range(batch_size)]
    log_probs = [0.0] * batch_size
    for row, token, prob, lp, ids, probs, attends in columns:
        prob = probs[0] if token == ids[0] else prob  # the top-1's own number, so the two always agree
        steps[row].append(Step(token, prob, tuple(ids), tuple(probs), tuple(attends) if attends else None))
        log_probs[row] += lp
    return [Decoded(tuple(row), lp, row[-1].token_id == end_id) for row, lp in zip(steps, log_probs)]


@torch.inference_mode()
def beam_search(
    model: StepModel,
    features: torch.Tensor,
    *,
    start_id: int,
    end_id: int,
    beam_size: int = 3,
    max_length: int = 20,
    top_k: int = 5,
    length_penalty: float = 0.0,
    temperature: float = 1.0,
    suppress_ids: tuple[int, ...] = (),
    no_repeat_ngram: int = 0,
) -> list[Decoded]:
    """Beam search for each image in the batch (one image at a time, beams batched).

    Hypotheses are ranked by ``log_prob / length ** length_penalty`` (0 = plain
    log-probability, 1 = per-token average). With ``no_repeat_ngram`` n > 0 no hypothesis
    may contain the same n words twice ("a red shirt and a red shirt"); the probabilities
    recorded per step stay the model's own. The search stops once ``beam_size`` hypotheses
    have ended or after ``max_length`` tokens. ``beam_size=1`` is greedy.
    """
    if beam_size < 1:
        raise ValueError("beam_size must be at least 1")
    return [
        _beam_search_one(
            model,
            features[i : i + 1],
            [],
            start_id=start_id,
            end_id=end_id,
            beam_size=beam_size,
            max_length=max_length,
            top_k=top_k,
            length_penalty=length_penalty,
            temperature=temperature,
            suppress_ids=suppress_ids,
            no_repeat_ngram=no_repeat_ngram,
        )
        for i in range(features.shape[0])
    ]


# A hypothesis word: (step number, row among that step's hypotheses, word id, its log-probability).
_Link = tuple[int, int, int, float]


@torch.inference_mode()
def constrained_beam_search(
    model: StepModel,
    features: torch.Tensor,
    constraints: Sequence[Sequence[frozenset[int]]],
    *,
    start_id: int,
    end_id: int,
    beam_size: int = 1,
    max_length: int = 20,
    top_k: int = 5,
    length_penalty: float = 0.0,
    temperature: float = 1.0,
    suppress_ids: tuple[int, ...] = (),
    no_repeat_ngram: int = 0,
) -> list[Decoded]:
    """Beam search whose caption of image ``i`` contains one token of each set in ``constraints[i]``
    (constrained beam search, Anderson et al. 2017).

    Every subset of an image's constraints met so far keeps ``beam_size`` hypotheses of its own,
    so a required word enters where the model finds the rest of the sentence most probable,
    not at the first step it is allowed. The caption is the best finished hypothesis that meets
    all the constraints; where none does within ``max_length``, the best that meets the most.
    An image without constraints gets :func:`beam_search`'s caption (greedy's at ``beam_size`` 1).
    Ranking, ``no_repeat_ngram`` and the recorded probabilities are as in :func:`beam_search`.
    """
    if beam_size < 1:
        raise ValueError("beam_size must be at least 1")
    if len(constraints) != features.shape[0]:
        raise ValueError(f"{len(constraints)} constraint lists for {features.shape[0]} images")
    options = {
        "start_id": start_id,
        "end_id": end_id,
        "beam_size": beam_size,
        "max_length": max_length,
        "top_k": top_k,
        "length_penalty": length_penalty,
        "temperature": temperature,
        "suppress_ids": suppress_ids,
        "no_repeat_ngram": no_repeat_ngram,
    }
    return [
        _beam_search_one(model, features[i : i + 1], [set(c) for c in sets if c], **options)
        for i, sets in enumerate(constraints)
    ]


def _beam_search_one(
    model: StepModel,
    features: torch.Tensor,
    sets: list[set[int]],
    *,
    start_id: int,
    end_id: int,
    beam_size: int,
    max_length: int,
    top_k: int,
    length_penalty: float,
    temperature: float,
    suppress_ids: tuple[int, ...],
    no_repeat_ngram: int,
) -> Decoded:
    """Beam search for one image whose caption must hold a token of each of ``sets`` (none:
    plain beam search). Hypotheses are grouped by the bit mask of the sets they meet, and each
    group keeps its own best ``beam_size``; per-step top-k and attention stay tensors, and
    ``Step`` objects are built for the winner only."""
    device = features.device
    full = (1 << len(sets)) - 1
    distribution = _WordDistribution(temperature, suppress_ids, device)
    state = model.init_state(features)
    tokens = torch.tensor([start_id], device=device)
    scores = torch.zeros(1, device=device)
    met = [0]  # each hypothesis's sets met, as bits
    histories: list[list[_Link]] = [[]]
    finished: list[tuple[int, float, list[_Link], float, bool]] = []  # (met, rank score, links, log-prob, ended)
    records = []
    bits: torch.Tensor | None = None  # (V,) the sets each word meets
    exhausted = False
    for t in range(max_length):
        logits, state = model.step(tokens, state)
        log_p = distribution(logits)
        if sets and bits is None:
            bits = torch.zeros(log_p.shape[1], dtype=torch.long, device=device)
            for number, tokens_of_set in enumerate(sets):
                bits[sorted(tokens_of_set)] |= 1 << number
        top_log_p, top_ids = log_p.topk(top_k, dim=-1)
        records.append((top_log_p, top_ids, model.attention_weights(state)))
        allowed = _block_repeats(log_p, histories, no_repeat_ngram) if no_repeat_ngram else log_p
        candidates = scores[:, None] + allowed  # (n_alive, V)
        landing = None  # the group each continuation joins (without sets: all the one group)
        if bits is not None:
            met_now = torch.tensor(met, device=device)
            landing = met_now[:, None] | bits[None, :]
            landing[:, end_id] = met_now  # <end> meets nothing
        vocab = log_p.shape[1]
        alive: list[tuple[int, int, float, int, list[_Link]]] = []  # (parent, word, score, met, links)
        for group in range(full + 1):
            in_group = candidates if landing is None else torch.where(landing == group, candidates, float("-inf"))
            in_group = in_group.view(-1)
            best_scores, best_flat = in_group.topk(min(2 * beam_size, in_group.numel()))
            ranked = zip(best_flat.tolist(), best_scores.tolist(), log_p.view(-1)[best_flat].tolist())
            kept = 0
            for rank, (flat, score, word_log_p) in enumerate(ranked):
                if score == float("-inf"):
                    break
                parent, word = divmod(flat, vocab)
                history = [*histories[parent], (t, parent, word, word_log_p)]
                if word == end_id:
                    if rank < beam_size:
                        finished.append((group, _normalised(score, len(history), length_penalty), history, score, True))
                elif kept < beam_size:
                    alive.append((parent, word, score, group, history))
                    kept += 1
        if sum(group == full for group, *_ in finished) >= beam_size or not alive:
            break
        parents, words, alive_scores, met, histories = (list(column) for column in zip(*alive))
        state = model.select_state(state, torch.tensor(parents, device=device))
        tokens = torch.tensor(words, device=device)
        scores = torch.tensor(alive_scores, device=device)
    else:
        exhausted = True  # max_length reached: the live hypotheses compete unfinished
    if exhausted or not finished:  # (or every continuation was blocked)
        finished.extend(
            (group, _normalised(score, len(h), length_penalty), h, score, False)
            for group, h, score in zip(met, histories, scores.tolist())
        )
    *_, links, log_prob, ended = max(finished, key=lambda item: (item[0].bit_count(), item[1]))
    return Decoded(tuple(_beam_step(records, link) for link in links), log_prob, ended)


def _normalised(log_prob: float, length: int, length_penalty: float) -> float:
    """A hypothesis's rank score: ``log_prob / length ** length_penalty``."""
    return log_prob / (max(length, 1) ** length_penalty)


def _beam_step(records: list, link: _Link) -> Step:
    """The ``Step`` of one hypothesis word, read from that step's recorded tensors."""
    t, row, word, word_log_p = link
    top_log_p, top_ids, weights = records[t]
    return Step(
        word,
        math.exp(word_log_p),
        tuple(top_ids[row].tolist()),
        tuple(top_log_p[row].exp().tolist()),
        tuple(weights[row].tolist()) if weights is not None else None,
    )


def _block_repeats(log_p: torch.Tensor, histories: list[list[_Link]], n: int) -> torch.Tensor:
    """``log_p`` (hypotheses, V) with -inf for each word that would repeat an n-gram of its hypothesis."""
    blocked = log_p.clone()
    for row, history in enumerate(histories):
        words = [link[2] for link in history]
        prefix = words[len(words) - n + 1 :] if n > 1 else []  # the last n-1 words
        banned = [words[i + n - 1] for i in range(len(words) - n + 1) if words[i : i + n - 1] == prefix]
        if banned:
            blocked[row, banned] = float("-inf")
    return blocked


@torch.inference_mode()
def sample_decode(
    model: StepModel,
    features: torch.Tensor,
    *,
    start_id: int,
    end_id: int,
    max_length: int = 20,
    top_k: int = 5,
    temperature: float = 1.0,
    suppress_ids: tuple[int, ...] = (),
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> list[Decoded]:
    """Sample each word from the temperature-scaled softmax, keeping the smallest set of
    words whose probability reaches ``top_p`` (nucleus sampling). Probabilities recorded
    per step are those of the distribution actually sampled from."""
    if not 0.0 < top_p <= 1.0:
        raise ValueError("top_p must be in (0, 1]")
    if temperature <= 0:
        raise ValueError("temperature must be positive")

    distribution = _WordDistribution(temperature, suppress_ids, features.device)

    def nucleus_sample(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = distribution(logits).exp()  # (B, V)
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p  # words past the nucleus
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        sorted_probs = sorted_probs / sorted_probs.sum(dim=-1, keepdim=True)
        nucleus = torch.zeros_like(probs).scatter(1, order, sorted_probs)
        return nucleus.log(), torch.multinomial(nucleus, 1, generator=generator).squeeze(1)

    return _decode_batch(
        model, features, nucleus_sample, start_id=start_id, end_id=end_id, max_length=max_length, top_k=top_k
    )
