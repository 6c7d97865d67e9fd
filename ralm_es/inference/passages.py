"""The passages a model reads: each example's hits from the retrieval cache, and the frozen passage encoder of a
fusion mode that embeds them once. Shared by training's splits and a run's predictions."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from textwrap import shorten

import numpy as np

from ralm_es.config import ConfigError
from ralm_es.embed import Encoder
from ralm_es.model.spec import ModelSettings, ModelSpec, ScoreScale
from ralm_es.model.strategies import fusion_strategy
from ralm_es.model.token_store import TokenStore, default_folder
from ralm_es.model_folder import ModelError
from ralm_es.onnx_runtime import vector_kind
from ralm_es.retrieve.cache import CacheEntry, CacheHeader, CacheHit, read_cache, require
from ralm_es.tasks import DataError, Example


def header_scale(header: CacheHeader) -> ScoreScale:
    return ScoreScale(header.mode, header.fusion, header.encoder.revision if header.encoder else None)


def check_score_scale(spec: ModelSpec, found: ScoreScale, where: str) -> None:
    """Refuse hits whose scores are on another scale than the ones a run that reads scores was trained on."""
    if spec.score_scale is not None and found != spec.score_scale:
        raise DataError(
            f"{where}: retrieval {found.describe()}, but the run reads scores on the scale of its training "
            f"retrieval, {spec.score_scale.describe()}: retrieve with those settings"
        )


def cached_hits(
    examples: list[Example],
    cache: str | Path | None,
    spec: ModelSpec,
    split: str,
    made_from: str | Path | None = None,
) -> list[list[CacheHit]]:
    """Each example's hits from the retrieval cache (made from the file ``made_from``); a missing cache or entry
    fails naming the examples, or the command that makes the cache, and so does a cache of another retrieval than
    the one a run that reads scores was trained on."""
    if not fusion_strategy(spec.fusion).uses_passages:
        return [[] for _ in examples]
    if cache is None:
        raise DataError(f"fusion '{spec.fusion}' needs retrieved passages: set data.{split}_cache (ralm-es retrieve)")
    header, entries = read_cache(cache, made_from)
    if spec.k > header.k:
        # The slots past the cache's k would stay empty in every example: trained (or predicted) on fewer passages
        # than the model records, and a scores model sized for slots it never saw filled.
        raise DataError(
            f"{cache}: model.k is {spec.k}, but this cache holds at most {header.k} hits an input; retrieve with "
            f"-k {spec.k}, or set model.k to {header.k} or less"
        )
    check_score_scale(spec, header_scale(header), str(cache))
    require(entries, [ex.id for ex in examples], cache)
    check_queries(entries, examples, cache, made_from)
    return [entries[ex.id].hits for ex in examples]


def check_queries(
    entries: dict[str, CacheEntry], examples: list[Example], cache: str | Path, made_from: str | Path | None
) -> None:
    """Refuse a cache whose entry for an example's id was retrieved for other text: ids such as ``dev-d0-s0`` or a
    line number repeat across files, so a cache of another file would otherwise be read without a word. An entry
    that records no query (a cache made by hand) is not checked."""
    for ex in examples:
        entry = entries[ex.id]
        if not entry.answers(ex.text):
            raise DataError(
                f"{cache}: the passages of {ex.id!r} were retrieved for {shorten(entry.query, 60)!r}, but that example "
                f"({ex.source}) reads {shorten(ex.text, 60)!r}: the cache was made from other data; make it with "
                f"`ralm-es retrieve {made_from or 'INPUT'} --out {cache}` (or `ralm-es doc-context`)"
            )


@dataclass
class FrozenPassages:
    """The fixed passage encoder of a mode with frozen passages: called on texts, it gives their vectors; with a
    token store, ``token_states`` gives each passage's token states, encoding only those the store lacks."""

    encoder: Encoder
    store: TokenStore | None = None

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def __call__(self, texts: list[str]) -> np.ndarray:
        return self.encoder.encode(texts, batch_size=128)

    def token_states(self, ids: list[str], texts: list[str]) -> list[np.ndarray]:
        if self.store is None:
            raise ValueError("token states need a token store")
        # One store serves every index and cache of an encoder: a passage id is unique only within its index, so
        # the key holds a digest of the text too, and an id that names other text elsewhere gets states of its own.
        keys = [
            f"{pid}@{hashlib.sha1(text.encode('utf-8')).hexdigest()[:16]}" for pid, text in zip(ids, texts, strict=True)
        ]
        self.store.extend(keys, texts, self.encoder, batch_size=128)
        return self.store.get(keys)


def frozen_embedder(settings: ModelSettings, device: str) -> FrozenPassages | None:
    """The initial encoder, loaded once, when the fusion mode embeds passages with it (and the token store it
    fills, when it keeps token states); None otherwise. ``settings`` from a run (a ``ModelSpec``) must name the
    encoder revision the run was trained with."""
    strategy = fusion_strategy(settings.fusion)
    if not strategy.stored_tokens(settings):
        # The settings of the frozen token memory alone: refused for any other mode.
        for name, is_set in (
            ("token_store", settings.token_store is not None),
            ("passage_case_features", settings.passage_case_features),
        ):
            if is_set:
                raise ConfigError(
                    f"model.{name} applies to fusion attention with passage_encoder frozen and passage_memory "
                    f"tokens, not fusion {settings.fusion} (passage_encoder {settings.passage_encoder}, "
                    f"passage_memory {settings.passage_memory})"
                )
    if not strategy.frozen_passages(settings):
        if settings.runtime != "torch":
            raise ConfigError(
                f"model.runtime {settings.runtime} applies to the frozen passage encoder (fusion attention with "
                f"passage_encoder frozen), not fusion {settings.fusion} (passage_encoder {settings.passage_encoder})"
            )
        return None
    encoder = Encoder(settings.encoder, device=device, max_length=settings.passage_max_length, runtime=settings.runtime)
    trained = settings.frozen_revision if isinstance(settings, ModelSpec) else ""
    if trained and trained != encoder.revision:
        raise ModelError(
            f"model.encoder {encoder.path} is revision {encoder.revision}, but the run was trained with frozen "
            f"passages from revision {trained}: give it the encoder folder it was trained with"
        )
    if not strategy.stored_tokens(settings):
        return FrozenPassages(encoder)
    kind = vector_kind(settings.runtime)
    folder = settings.token_store or default_folder(encoder.revision, settings.passage_max_length, kind)
    store = TokenStore.open(folder, encoder.revision, encoder.dim, settings.passage_max_length, kind)
    return FrozenPassages(encoder, store)
