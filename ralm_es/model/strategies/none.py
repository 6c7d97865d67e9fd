"""``none``: the encoder alone, the baseline every retrieval-augmented mode is measured against."""

from __future__ import annotations

from collections.abc import Sequence

from ralm_es.model.spec import ModelSpec
from ralm_es.model.strategies.base import FusionStrategy
from ralm_es.retrieve.cache import CacheHit


class NoFusion(FusionStrategy):
    name = "none"
    uses_passages = False
    reads = frozenset()

    def passages_of(self, spec: ModelSpec, hits: Sequence[CacheHit]) -> list[CacheHit]:
        return []
