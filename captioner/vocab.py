"""Vocabulary and tokenizer: words <-> ids, stored as a plain token list (never pickled)."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Sequence

__all__ = ["PAD", "START", "END", "UNK", "SPECIAL_TOKENS", "Vocabulary", "tokenize"]

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIAL_TOKENS = (PAD, START, END, UNK)

# Words (with inner apostrophes or hyphens) and numbers; punctuation is dropped, as in the
# Karpathy preprocessing most captioning work evaluates with.
_WORD_PATTERN = r"[a-z0-9]+(?:['\-][a-z0-9]+)*"


@functools.cache
def _tokenizer():  # noqa: ANN202 - nltk's RegexpTokenizer
    """Karpathy-style word tokenizer (needs no downloaded nltk data). Imported on first use:
    captioning never tokenizes, and importing nltk costs a serving process ~75 MB."""
    from nltk.tokenize import RegexpTokenizer

    return RegexpTokenizer(_WORD_PATTERN)


def tokenize(text: str) -> list[str]:
    """Lower-case ``text`` and split it into word tokens (punctuation removed)."""
    return _tokenizer().tokenize(text.lower())


class Vocabulary:
    """Maps tokens to ids. Ids 0..3 are always ``<pad> <start> <end> <unk>``."""

    def __init__(self, tokens: Sequence[str]) -> None:
        if tuple(tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(
                f"a vocabulary must start with the special tokens {SPECIAL_TOKENS}, got {tuple(tokens[:4])}"
            )
        if len(set(tokens)) != len(tokens):
            raise ValueError("vocabulary tokens must be unique")
        self.tokens: list[str] = list(tokens)
        self._index = {token: i for i, token in enumerate(self.tokens)}

    @classmethod
    def build(cls, captions: Iterable[str], *, min_count: int = 5) -> Vocabulary:
        """Build from raw captions, keeping words seen at least ``min_count`` times."""
        counts = Counter(word for caption in captions for word in tokenize(caption))
        words = sorted(w for w, c in counts.items() if c >= min_count)
        # Most frequent first (ties alphabetical) so ids are stable and readable.
        words.sort(key=lambda w: -counts[w])
        return cls([*SPECIAL_TOKENS, *words])

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.tokens == other.tokens

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def start_id(self) -> int:
        return 1

    @property
    def end_id(self) -> int:
        return 2

    @property
    def unk_id(self) -> int:
        return 3

    @property
    def never_generated_ids(self) -> tuple[int, ...]:
        """Tokens a caption never contains: ``<pad>``, ``<start>`` and ``<unk>``."""
        return (self.pad_id, self.start_id, self.unk_id)

    def id_of(self, token: str) -> int:
        """Id of ``token``; unknown tokens map to ``<unk>``."""
        return self._index.get(token, self.unk_id)

    def encode(self, text: str, *, add_special: bool = True) -> list[int]:
        """Tokenize ``text`` into ids, wrapped in ``<start> ... <end>`` by default."""
        ids = [self.id_of(word) for word in tokenize(text)]
        return [self.start_id, *ids, self.end_id] if add_special else ids

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Ids to words, stopping at ``<end>`` and dropping ``<start>``/``<pad>``."""
        words = []
        for i in ids:
            if i == self.end_id:
                break
            if i in (self.start_id, self.pad_id):
                continue
            words.append(self.tokens[i])
        return words
