"""``concat``: the passages' subwords appended to the input, each after a [SEP], within ``max_length``; and the same
appended to the input of a mode that also reads the passages apart from it (``model.concat_passages``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from transformers import PreTrainedTokenizerBase

from ralm_es.model.strategies.base import Embed, FusionStrategy, Wrapped
from ralm_es.model.tokens import CASE_PAD, PassageTable
from ralm_es.retrieve.cache import CacheHit

if TYPE_CHECKING:
    from ralm_es.model.inputs import Features, FeatureSet
    from ralm_es.model.spec import ModelSpec

# A passage cut to fewer tokens than this is left out rather than appended as a stub.
MIN_CONCAT_PIECE = 8


def append_passages(fs: FeatureSet, feature: Features, rows: list[int]) -> None:
    """Append the passages (``rows`` of ``fs.table``, in rank order) to the input, each after a [SEP], until
    ``max_length`` is full."""
    for row in rows:
        room = fs.spec.max_length - len(feature.input_ids) - 1
        tok = fs.table.tokens[row]
        if room < min(MIN_CONCAT_PIECE, len(tok.ids)):
            break
        feature.input_ids += [*tok.ids[:room], fs.sep_id]
        feature.case_ids += [*tok.cases[:room], CASE_PAD]
        feature.token_type_ids += [1] * (len(tok.ids[:room]) + 1)


class ConcatFusion(FusionStrategy):
    name = "concat"

    def add_passages(self, fs: FeatureSet, feature: Features, rows: list[int], hits: list[CacheHit]) -> None:
        append_passages(fs, feature, rows)


class WithContext(Wrapped):
    """``attention`` with its passages also appended to the input, as ``concat`` appends them
    (``model.concat_passages``): the encoder reads the nearest passages with the input in its own self-attention,
    and the input's states then attend over all k passages as the inner mode has them. The appended text cannot be
    dropped or cleared from a slot, so the regularisers that do that (``train.passage_dropout``,
    ``train.consistency_weight``) are refused, as for ``concat``."""

    def __init__(self, inner: FusionStrategy) -> None:
        super().__init__(inner)
        self.slotted = False

    def fill_table(
        self, spec: ModelSpec, table: PassageTable, tokenizer: PreTrainedTokenizerBase, embed: Embed | None
    ) -> None:
        self.inner.fill_table(spec, table, tokenizer, embed)
        if self.frozen_passages(spec):
            # The inner mode read the frozen encoder's states or vectors, not the subwords appended here.
            FusionStrategy.fill_table(self, spec, table, tokenizer, embed)

    def add_passages(self, fs: FeatureSet, feature: Features, rows: list[int], hits: list[CacheHit]) -> None:
        self.inner.add_passages(fs, feature, rows, hits)
        append_passages(fs, feature, rows)
