"""Examples and their retrieved passages as padded tensors: subword tokens, first-subword labels, word-case ids,
and passages laid out for the chosen fusion (appended for ``concat``, a separate ``k`` axis for ``attention``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from ralm_es.model.spec import ModelSpec
from ralm_es.tasks.base import Example, LabelMap

IGNORE = -100
# Word-case classes. The default encoder is uncased, so capitalisation (a strong cue for names) is given back to
# every fusion mode alike as a learned embedding per class.
CASE_PAD, CASE_DIGIT, CASE_OTHER, CASE_UPPER, CASE_TITLE, CASE_LOWER, CASE_MIXED = range(7)
N_CASES = 7
# A passage cut to fewer tokens than this is left out of ``concat`` rather than appended as a stub.
MIN_CONCAT_PIECE = 8


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


def passage_text(hit: dict[str, Any]) -> str:
    return " ".join(part for part in (hit.get("title") or "", hit.get("text") or "") if part).strip()


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
    """Each distinct retrieved passage once: its subwords (shared encoder, concat) or a frozen vector."""

    keys: dict[str, int] = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)
    tokens: list[Tokenized] = field(default_factory=list)
    vectors: np.ndarray | None = None


@dataclass
class Features:
    input_ids: list[int]
    token_type_ids: list[int]
    case_ids: list[int]
    # Token position of each word's first subword; -1 for a word cut off by truncation (or with no subword).
    word_starts: list[int]
    labels: list[int] | int | None
    passages: list[int]
    scores: list[float]
    truncated: bool


@dataclass
class FeatureSet:
    """One split ready for batching. ``truncated`` counts inputs cut to the length budget."""

    examples: list[Example]
    features: list[Features]
    hits: list[list[dict[str, Any]]]
    table: PassageTable
    spec: ModelSpec
    pad_id: int
    cls_id: int
    sep_id: int
    truncated: int = 0
    passages_cut: int = 0

    def __len__(self) -> int:
        return len(self.features)

    def batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        feats = [self.features[i] for i in indices]
        width = max(len(f.input_ids) for f in feats)
        batch = {
            "input_ids": _pad([f.input_ids for f in feats], width, self.pad_id),
            "token_type_ids": _pad([f.token_type_ids for f in feats], width, 0),
            "case_ids": _pad([f.case_ids for f in feats], width, CASE_PAD),
            "attention_mask": _pad([[1] * len(f.input_ids) for f in feats], width, 0),
        }
        if feats[0].labels is not None:
            if self.spec.task == "ner":
                batch["labels"] = _pad([f.labels for f in feats], width, IGNORE)  # type: ignore[misc]
            else:
                batch["labels"] = torch.tensor([f.labels for f in feats], dtype=torch.long)
        if self.spec.fusion == "attention":
            batch.update(self._passage_batch(feats))
        return batch

    def _passage_batch(self, feats: list[Features]) -> dict[str, torch.Tensor]:
        k = self.spec.k
        valid = torch.zeros(len(feats), k, dtype=torch.bool)
        scores = torch.zeros(len(feats), k)
        for b, f in enumerate(feats):
            valid[b, : len(f.passages)] = True
            scores[b, : len(f.scores)] = torch.tensor(f.scores)
        out = {"passage_valid": valid, "passage_scores": scores}
        if self.spec.passage_encoder == "frozen":
            assert self.table.vectors is not None
            vectors = torch.zeros(len(feats), k, self.table.vectors.shape[1])
            for b, f in enumerate(feats):
                if f.passages:
                    vectors[b, : len(f.passages)] = torch.from_numpy(self.table.vectors[f.passages])
            out["passage_vectors"] = vectors
            return out
        rows = [[self.table.tokens[p] for p in f.passages] for f in feats]
        width = 2 + max((len(t.ids) for r in rows for t in r), default=0)
        ids = torch.full((len(feats), k, width), self.pad_id, dtype=torch.long)
        cases = torch.zeros((len(feats), k, width), dtype=torch.long)
        mask = torch.zeros((len(feats), k, width), dtype=torch.long)
        for b, row in enumerate(rows):
            for j, tok in enumerate(row):
                n = len(tok.ids) + 2
                ids[b, j, :n] = torch.tensor([self.cls_id, *tok.ids, self.sep_id])
                cases[b, j, 1 : n - 1] = torch.tensor(tok.cases, dtype=torch.long)
                mask[b, j, :n] = 1
        out.update({"passage_input_ids": ids, "passage_case_ids": cases, "passage_attention_mask": mask})
        return out


def _pad(rows: list[list[int]], width: int, value: int) -> torch.Tensor:
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def build_features(
    examples: list[Example],
    hits: list[list[dict[str, Any]]],
    tokenizer: PreTrainedTokenizerBase,
    spec: ModelSpec,
    labels: LabelMap | None,
    embed_passages: Callable[[list[str]], np.ndarray] | None = None,
) -> FeatureSet:
    """Tokenize ``examples`` with their top-``spec.k`` ``hits``. ``labels`` None means unlabelled (prediction).
    ``embed_passages`` gives the frozen vectors when ``spec.passage_encoder`` is ``frozen``."""
    hits = [h[: spec.k] if spec.uses_passages else [] for h in hits]
    table = _passage_table(hits, tokenizer, spec, embed_passages)
    fs = FeatureSet(
        examples=examples,
        features=[],
        hits=hits,
        table=table,
        spec=spec,
        pad_id=int(tokenizer.pad_token_id or 0),
        cls_id=int(tokenizer.cls_token_id),
        sep_id=int(tokenizer.sep_token_id),
    )
    mains = tokenize_words(tokenizer, [ex.words for ex in examples])
    pairs = tokenize_words(tokenizer, [ex.pair_words or () for ex in examples])
    for ex, main, pair, ex_hits in zip(examples, mains, pairs, hits, strict=True):
        fs.features.append(_features(fs, ex, main, pair if ex.pair_words else None, ex_hits, labels))
    return fs


def _passage_table(
    hits: list[list[dict[str, Any]]],
    tokenizer: PreTrainedTokenizerBase,
    spec: ModelSpec,
    embed_passages: Callable[[list[str]], np.ndarray] | None,
) -> PassageTable:
    table = PassageTable()
    for ex_hits in hits:
        for hit in ex_hits:
            text = passage_text(hit)
            if text not in table.keys:
                table.keys[text] = len(table.texts)
                table.texts.append(text)
    if spec.fusion == "attention" and spec.passage_encoder == "frozen":
        if embed_passages is None:
            raise ValueError("frozen passage vectors need an embed_passages function")
        table.vectors = embed_passages(table.texts)
    else:
        table.tokens = tokenize_words(tokenizer, [t.split() for t in table.texts])
        for tok in table.tokens:
            del tok.ids[spec.passage_max_length - 2 :], tok.cases[spec.passage_max_length - 2 :]
    return table


def _features(
    fs: FeatureSet,
    ex: Example,
    main: Tokenized,
    pair: Tokenized | None,
    hits: list[dict[str, Any]],
    labels: LabelMap | None,
) -> Features:
    spec = fs.spec
    budget = spec.max_length - (3 if pair else 2)
    a, b = len(main.ids), len(pair.ids) if pair else 0
    truncated = a + b > budget
    while a + b > budget:
        if a >= b:
            a -= 1
        else:
            b -= 1
    fs.truncated += truncated
    ids = [fs.cls_id, *main.ids[:a], fs.sep_id]
    cases = [CASE_PAD, *main.cases[:a], CASE_PAD]
    types = [0] * len(ids)
    if pair:
        ids += [*pair.ids[:b], fs.sep_id]
        cases += [*pair.cases[:b], CASE_PAD]
        types += [1] * (b + 1)
    word_starts = [-1] * len(ex.words)
    for pos, w in enumerate(main.word_ids[:a]):
        if word_starts[w] == -1:
            word_starts[w] = pos + 1
    rows = [fs.table.keys[passage_text(h)] for h in hits]
    if spec.fusion == "concat":
        for row in rows:
            room = spec.max_length - len(ids) - 1
            tok = fs.table.tokens[row]
            if room < min(MIN_CONCAT_PIECE, len(tok.ids)):
                fs.passages_cut += 1
                break
            fs.passages_cut += len(tok.ids) > room
            ids += [*tok.ids[:room], fs.sep_id]
            cases += [*tok.cases[:room], CASE_PAD]
            types += [1] * (len(tok.ids[:room]) + 1)
    label_ids: list[int] | int | None = None
    if labels is not None and spec.task == "ner":
        label_ids = [IGNORE] * len(ids)
        for w, pos in enumerate(word_starts):
            if pos >= 0:
                label_ids[pos] = labels.index((ex.tags or ())[w], ex.source)
    elif labels is not None:
        label_ids = labels.index(ex.label or "", ex.source)
    return Features(
        input_ids=ids,
        token_type_ids=types,
        case_ids=cases,
        word_starts=word_starts,
        labels=label_ids,
        passages=rows if spec.fusion == "attention" else [],
        scores=[float(h.get("score") or 0.0) for h in hits] if spec.fusion == "attention" else [],
        truncated=truncated,
    )
