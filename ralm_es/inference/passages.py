"""The passages a model reads: each example's hits from the retrieval cache, and the frozen passage encoder of a
fusion mode that embeds them once. Shared by training's splits and a run's predictions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ralm_es.embed import Encoder
from ralm_es.model.spec import ModelSettings
from ralm_es.model.strategies import fusion_strategy
from ralm_es.retrieve.cache import CacheHit, read_cache, require
from ralm_es.tasks import DataError, Example


def cached_hits(
    examples: list[Example],
    cache: str | Path | None,
    settings: ModelSettings,
    split: str,
    made_from: str | Path | None = None,
) -> list[list[CacheHit]]:
    """Each example's hits from the retrieval cache (made from the file ``made_from``); a missing cache or entry
    fails naming the examples, or the command that makes the cache."""
    if not fusion_strategy(settings.fusion).uses_passages:
        return [[] for _ in examples]
    if cache is None:
        raise DataError(
            f"fusion '{settings.fusion}' needs retrieved passages: set data.{split}_cache (ralm-es retrieve)"
        )
    _, entries = read_cache(cache, made_from)
    require(entries, [ex.id for ex in examples], cache)
    return [entries[ex.id].hits for ex in examples]


@dataclass
class FrozenPassages:
    """The fixed passage encoder of a mode with frozen passages: called on texts, it gives their vectors."""

    encoder: Encoder

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def __call__(self, texts: list[str]) -> np.ndarray:
        return self.encoder.encode(texts, batch_size=128)


def frozen_embedder(settings: ModelSettings, device: str) -> FrozenPassages | None:
    """The initial encoder, loaded once, when the fusion mode embeds passages with it; None otherwise."""
    if not fusion_strategy(settings.fusion).frozen_passages(settings):
        return None
    return FrozenPassages(Encoder(settings.encoder, device=device, max_length=settings.passage_max_length))
