"""Examples and their retrieved passages as padded tensors: subword tokens, first-subword labels and word-case
ids, with the passages laid out by the fusion strategy of ``spec.fusion``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedTokenizerBase

from ralm_es.model.labelling import LABELLINGS, pad
from ralm_es.model.spec import ModelSpec
from ralm_es.model.strategies import FusionError, FusionStrategy, strategy_of
from ralm_es.model.strategies.base import Embed
from ralm_es.model.tokens import CASE_PAD, PassageTable, Tokenized, passage_text, tokenize_words
from ralm_es.retrieve.cache import CacheHit
from ralm_es.tasks.base import Example, LabelMap


@dataclass
class Features:
    input_ids: list[int]
    token_type_ids: list[int]
    case_ids: list[int]
    # Token position of each word's first subword; -1 for a word cut off by truncation (or with no subword).
    word_starts: list[int]
    truncated: bool
    labels: list[int] | int | None = None
    # Rows of the passage table and their retrieval scores, for a strategy that batches passages on their own.
    passages: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    # Each kept hit's retrieval signals, for a strategy that reads the scores rather than the texts (``scores``).
    signals: list[list[float]] = field(default_factory=list)


@dataclass
class FeatureSet:
    """One split ready for batching. ``truncated`` counts inputs cut to the length budget."""

    examples: list[Example]
    features: list[Features]
    hits: list[list[CacheHit]]
    table: PassageTable
    spec: ModelSpec
    fusion: FusionStrategy
    pad_id: int
    cls_id: int
    sep_id: int
    truncated: int = 0

    def __len__(self) -> int:
        return len(self.features)

    def batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        feats = [self.features[i] for i in indices]
        width = max(len(f.input_ids) for f in feats)
        batch = {
            "input_ids": pad([f.input_ids for f in feats], width, self.pad_id),
            "token_type_ids": pad([f.token_type_ids for f in feats], width, 0),
            "case_ids": pad([f.case_ids for f in feats], width, CASE_PAD),
            "attention_mask": pad([[1] * len(f.input_ids) for f in feats], width, 0),
        }
        if feats[0].labels is not None:
            batch["labels"] = LABELLINGS[self.spec.task].batch([f.labels for f in feats], width)  # type: ignore[misc]
        batch.update(self.fusion.batch(self, feats))
        return batch


def build_features(
    examples: list[Example],
    hits: Sequence[Sequence[CacheHit]],
    tokenizer: PreTrainedTokenizerBase,
    spec: ModelSpec,
    labels: LabelMap | None,
    embed_passages: Embed | None = None,
) -> FeatureSet:
    """Tokenize ``examples`` with the hits their fusion mode keeps (the top ``spec.k``). ``labels`` None means
    unlabelled (prediction). ``embed_passages`` gives the vectors or token states of a mode with frozen passages."""
    fusion = strategy_of(spec)
    if spec.task not in fusion.tasks:
        tasks = " and ".join(fusion.tasks)
        raise FusionError(f"fusion '{spec.fusion}' (model.fusion) is for {tasks} tasks, not task.type {spec.task}")
    kept = [fusion.passages_of(spec, h) for h in hits]
    table = PassageTable()
    for ex_hits in kept:
        for hit in ex_hits:
            text = passage_text(hit)
            if text not in table.keys:
                table.keys[text] = len(table.texts)
                table.texts.append(text)
                table.ids.append(hit.id)
    fusion.fill_table(spec, table, tokenizer, embed_passages)
    fs = FeatureSet(
        examples=examples,
        features=[],
        hits=kept,
        table=table,
        spec=spec,
        fusion=fusion,
        pad_id=int(tokenizer.pad_token_id or 0),
        cls_id=int(tokenizer.cls_token_id),
        sep_id=int(tokenizer.sep_token_id),
    )
    mains = tokenize_words(tokenizer, [ex.words for ex in examples])
    pairs = tokenize_words(tokenizer, [ex.pair_words or () for ex in examples])
    for ex, main, pair, ex_hits in zip(examples, mains, pairs, kept, strict=True):
        fs.features.append(_features(fs, ex, main, pair if ex.pair_words else None, ex_hits, labels))
    return fs


def _features(
    fs: FeatureSet,
    ex: Example,
    main: Tokenized,
    pair: Tokenized | None,
    hits: list[CacheHit],
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
    feature = Features(
        input_ids=ids, token_type_ids=types, case_ids=cases, word_starts=word_starts, truncated=truncated
    )
    fs.fusion.add_passages(fs, feature, [fs.table.keys[passage_text(h)] for h in hits], hits)
    if labels is not None:
        feature.labels = LABELLINGS[spec.task].labels(ex, labels, word_starts, len(feature.input_ids))
    return feature
