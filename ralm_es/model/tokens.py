"""Subwords of pre-split words with the word each came from and a word-case class, and the table of distinct
retrieved passages that the fusion strategies fill."""

from __future__ import annotations

import bisect
import re
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


def stored_token_cases(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """The word-case class of every token of each text as an encoder tokenizes the text on its own ([CLS] and [SEP]
    included, as ``CASE_PAD``; cut to ``max_length``): the tokens whose states a frozen encoder stores. A subword's
    class is that of the whitespace-separated word it starts in, as for the input's words."""
    if not texts:
        return []
    enc = tokenizer(
        list(texts),
        truncation=True,
        max_length=max_length,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        verbose=False,
    )
    out = []
    for text, offsets, special in zip(texts, enc["offset_mapping"], enc["special_tokens_mask"], strict=True):
        words = [m.span() for m in re.finditer(r"\S+", text)]
        starts = [start for start, _ in words]
        cases = []
        for (start, _), is_special in zip(offsets, special, strict=True):
            if is_special:
                cases.append(CASE_PAD)
                continue
            first, last = words[bisect.bisect_right(starts, start) - 1]
            cases.append(case_of(text[first:last]))
        out.append(cases)
    return out


@dataclass
class PassageTable:
    """Each distinct retrieved passage once (``keys``: text to row; ``ids``: the passage id of the row's first
    hit); the fusion strategy fills in its subwords, a frozen vector or frozen token states (tokens, dim) per row,
    and with ``passage_case_features`` the word-case class of each stored token."""

    keys: dict[str, int] = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    tokens: list[Tokenized] = field(default_factory=list)
    vectors: np.ndarray | None = None
    states: list[np.ndarray] | None = None
    state_cases: list[list[int]] | None = None
