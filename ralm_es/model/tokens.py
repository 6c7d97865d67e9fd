"""Subwords of pre-split words with the word each came from and a word-case class, and the table of distinct
retrieved passages that the fusion strategies fill."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from transformers import PreTrainedTokenizerBase

from ralm_es.retrieve.cache import CacheHit

# Word-case classes. The default encoder is uncased, so capitalisation (a strong cue for names) is given back to
# every fusion mode alike as a learned embedding per class.
CASE_PAD, CASE_DIGIT, CASE_OTHER, CASE_UPPER, CASE_TITLE, CASE_LOWER, CASE_MIXED = range(7)
N_CASES = 7


def case_of(word: str) -> int:
    letters = [c for c in word if c.isalpha()]
    if not letters:
        return CASE_DIGIT if any(c.isdigit() for c in word) else CASE_OTHER
    if all(c.isupper() for c in letters):
        return CASE_UPPER if len(letters) > 1 else CASE_TITLE
    if letters[0].isupper() and all(c.islower() for c in letters[1:]):
        return CASE_TITLE
    if all(c.islower() for c in letters):
        return CASE_LOWER
    return CASE_MIXED


def passage_text(hit: CacheHit) -> str:
    return " ".join(part for part in (hit.title, hit.text) if part).strip()


@dataclass
class Tokenized:
    ids: list[int]
    cases: list[int]
    word_ids: list[int]


def tokenize_words(tokenizer: PreTrainedTokenizerBase, texts: Sequence[Sequence[str]]) -> list[Tokenized]:
    """Subwords of pre-split texts (no special tokens), with the word each subword came from."""
    if not texts:
        return []
    enc = tokenizer([list(t) for t in texts], is_split_into_words=True, add_special_tokens=False)
    out = []
    for i, words in enumerate(texts):
        word_ids = [w for w in enc.word_ids(i) if w is not None]
        cases = [case_of(words[w]) for w in word_ids]
        out.append(Tokenized(list(enc["input_ids"][i]), cases, word_ids))
    return out


@dataclass
class PassageTable:
    """Each distinct retrieved passage once (``keys``: text to row; ``ids``: the passage id of the row's first
    hit); the fusion strategy fills in its subwords, a frozen vector or frozen token states (tokens, dim) per row."""

    keys: dict[str, int] = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    tokens: list[Tokenized] = field(default_factory=list)
    vectors: np.ndarray | None = None
    states: list[np.ndarray] | None = None
