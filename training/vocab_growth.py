"""Start a decoder from a checkpoint whose vocabulary is smaller: grow it, carry its rows over by token.

Fine-tuning on new captions adds their new words (:func:`grow_vocabulary`): every word keeps
its id and the new ones follow (a concept decoder's copy tokens stay last, after them).
:func:`start_from` then copies the checkpoint's weights into the larger decoder: every tensor
whose shape agrees as it is, and the vocabulary-sized ones (word embeddings, the word
classifier's weight and bias) row by row, by token, so a word keeps its rows whatever its new
id. A new word's rows start as the mean of the checkpoint's word rows (an "average word", whose
logit starts near the mean: no caption changes before it is trained); a new copy token's, as
the mean of the concept words' rows, so it begins as "some noun".

An average word's logit is far below the words a trained decoder puts where the new word goes,
and Adam moves each weight by about the learning rate a step, so it would take many steps to
catch up. :func:`rows_from_context` starts each new word instead as what the decoder expected
at the word's places in the new captions: the mean of the rows of the words it predicted there,
weighted by their probabilities ("zorblax" where the captions say "a black zorblax runs" starts
as mostly "dog"). Its logit then starts level with the word it replaces, and a few steps part them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from captioner.concepts import ConceptTable
from captioner.vocab import SPECIAL_TOKENS, Vocabulary

__all__ = ["grow_vocabulary", "rows_from_context", "start_from"]


def grow_vocabulary(vocab: Vocabulary, captions: Iterable[str], *, min_count: int) -> Vocabulary:
    """``vocab`` followed by the words of ``captions`` it lacks that occur at least ``min_count``
    times (most frequent first, as :meth:`Vocabulary.build` orders them)."""
    counted = Vocabulary.build(captions, min_count=min_count).tokens[len(SPECIAL_TOKENS) :]
    known = set(vocab.tokens)
    return Vocabulary([*vocab.tokens, *(word for word in counted if word not in known)])


def start_from(
    model: nn.Module, initial: nn.Module, initial_vocab: Vocabulary, vocab: Vocabulary, table: ConceptTable | None
) -> list[str]:
    """Copy ``initial``'s weights into ``model`` where names and shapes agree, and its vocabulary
    rows by token where ``model``'s vocabulary ``vocab`` extends ``initial_vocab``; tokens new
    to ``vocab`` get the rows the module docstring describes. Returns the names left as initialised."""
    own, theirs = model.state_dict(), initial.state_dict()
    fresh = []
    with torch.no_grad():
        for name, tensor in own.items():
            source = theirs.get(name)
            if source is not None and _vocabulary_rows(tensor, source, vocab, initial_vocab):
                _carry_rows(tensor, source, vocab, initial_vocab, table)
            elif source is not None and source.shape == tensor.shape:
                tensor.copy_(source)
            else:
                fresh.append(name)
    return fresh


def _vocabulary_rows(tensor: torch.Tensor, source: torch.Tensor, vocab: Vocabulary, initial_vocab: Vocabulary) -> bool:
    """True for a tensor with one row per token (embedding, classifier) of two different vocabularies."""
    return (
        vocab != initial_vocab
        and tensor.dim() >= 1
        and (tensor.shape[0], source.shape[0]) == (len(vocab), len(initial_vocab))
        and tensor.shape[1:] == source.shape[1:]
    )


def _carry_rows(
    tensor: torch.Tensor,
    source: torch.Tensor,
    vocab: Vocabulary,
    initial_vocab: Vocabulary,
    table: ConceptTable | None,
) -> None:
    old_ids = {token: i for i, token in enumerate(initial_vocab.tokens)}
    words = [i for token, i in old_ids.items() if token not in SPECIAL_TOKENS and not token.startswith("<")]
    mean_word = source[words].mean(dim=0) if words else source.mean(dim=0)
    singular = set(table.words) if table is not None else set()
    plural = set(table.plurals) if table is not None else set()
    for row, token in enumerate(vocab.tokens):
        if token in old_ids:
            tensor[row] = source[old_ids[token]]
        elif token.startswith("<concept"):  # a copy token: "the word in slot k" or its plural
            nouns = [old_ids[w] for w in (plural if token.startswith("<concepts") else singular) if w in old_ids]
            tensor[row] = source[nouns].mean(dim=0) if nouns else mean_word
        else:
            tensor[row] = mean_word


def rows_from_context(
    model: nn.Module,
    features: torch.Tensor,
    pairs: Sequence[tuple[int, torch.Tensor]],
    new_ids: Sequence[int],
    *,
    batch_size: int = 64,
) -> dict[int, list[tuple[int, float]]]:
    """Set each of ``new_ids``' vocabulary rows to the probability-weighted mean of the rows of the
    words ``model`` predicts (teacher-forced, dropout off) where the captions of ``pairs`` ((feature
    row, token ids), as training reads them) use it. Returns each new id's three heaviest words
    and their weights; a new id no caption uses keeps its rows."""
    vocab_size = model.config.vocab_size
    new = torch.tensor(list(new_ids), dtype=torch.long)
    used = [pair for pair in pairs if bool(torch.isin(pair[1][1:], new).any())]
    weights = torch.zeros(len(new), vocab_size)  # (N, V): summed predictions at each new word's places
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(used), batch_size):
            chunk = used[start : start + batch_size]
            rows = torch.tensor([row for row, _ in chunk], device=features.device)
            captions = pad_sequence([ids for _, ids in chunk], batch_first=True).to(features.device)
            logits = model(features[rows], captions).float().cpu()  # (B, T-1, V)
            logits[..., new] = float("-inf")  # the new words' own (placeholder) rows take no part
            predicted = logits.argmax(dim=-1)  # (B, T-1)
            targets = captions[:, 1:].cpu()
            for n, token in enumerate(new.tolist()):
                weights[n] += torch.bincount(predicted[targets == token], minlength=vocab_size).float()
    model.train(was_training)
    totals = weights.sum(dim=1, keepdim=True)
    weights = weights / totals.clamp(min=1e-12)
    found = totals.squeeze(1) > 0
    # every decoder's word embedding and word classifier; a tied classifier shares the embedding's tensor
    tensors = {t.data_ptr(): t for t in (model.embed.weight, model.head.weight, model.head.bias)}
    with torch.no_grad():
        for tensor in tensors.values():
            mixed = (weights[found].to(tensor) @ tensor.reshape(vocab_size, -1)).reshape(-1, *tensor.shape[1:])
            tensor[new[found].to(tensor.device)] = mixed
    top = weights.topk(min(3, vocab_size), dim=1)
    return {
        token: [(int(i), float(w)) for i, w in zip(top.indices[n], top.values[n])]
        for n, token in enumerate(new.tolist())
        if found[n]
    }
