"""``concat``: the passages' subwords appended to the input, each after a [SEP], within ``max_length``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ralm_es.model.strategies.base import FusionStrategy
from ralm_es.model.tokens import CASE_PAD
from ralm_es.retrieve.cache import CacheHit

if TYPE_CHECKING:
    from ralm_es.model.inputs import Features, FeatureSet

# A passage cut to fewer tokens than this is left out rather than appended as a stub.
MIN_CONCAT_PIECE = 8


class ConcatFusion(FusionStrategy):
    name = "concat"

    def add_passages(self, fs: FeatureSet, feature: Features, rows: list[int], hits: list[CacheHit]) -> None:
        for row in rows:
            room = fs.spec.max_length - len(feature.input_ids) - 1
            tok = fs.table.tokens[row]
            if room < min(MIN_CONCAT_PIECE, len(tok.ids)):
                fs.passages_cut += 1
                break
            fs.passages_cut += len(tok.ids) > room
            feature.input_ids += [*tok.ids[:room], fs.sep_id]
            feature.case_ids += [*tok.cases[:room], CASE_PAD]
            feature.token_type_ids += [1] * (len(tok.ids[:room]) + 1)
