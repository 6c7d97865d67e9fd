"""The narrow interface every passage store implements, and the values that cross it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ralm_es.corpus.types import Passage
from ralm_es.errors import RalmError

Mode = Literal["bm25", "dense"]


class StoreError(RalmError):
    """A store-level failure (unknown index, mapping conflict, blocked index) with the store's reason."""


def check_dims(where: str, existing: int | None, wanted: int | None, fix: str) -> None:
    """Refuse a model whose vectors do not fit an existing index, naming both numbers (every backend)."""
    if wanted is None:
        return
    if existing is None:
        raise StoreError(f"{where} has no vectors (BM25 only); ingest with --no-embed, or {fix}")
    if existing != wanted:
        raise StoreError(
            f"{where} holds {existing}-dimensional vectors but the model gives {wanted}; use a matching model or {fix}"
        )


@dataclass
class IndexSpec:
    """What an index must hold. ``dims=None`` makes a BM25-only index."""

    name: str
    dims: int | None = None
    similarity: str = "cosine"
    index_type: str = "hnsw"
    m: int = 16
    ef_construction: int = 100
    shards: int = 1
    replicas: int = 0
    model: dict[str, Any] | None = None


@dataclass
class WriteResult:
    """The outcome of writing one passage; ``source`` is its ``file:line``."""

    id: str
    source: str
    ok: bool
    created: bool = False
    error: str | None = None
    status: int = 0


@dataclass
class Filter:
    """A metadata filter: ``term`` (value), ``terms`` (values) or ``range`` (gte/lte/gt/lt)."""

    field: str
    kind: Literal["term", "terms", "range"] = "term"
    value: Any = None


@dataclass
class SearchRequest:
    """One single-mode search. Hybrid search is two of these fused by the Retriever."""

    mode: Mode
    text: str = ""
    vector: Sequence[float] | None = None
    k: int = 10
    num_candidates: int = 100
    title_boost: float = 1.0
    filters: list[Filter] = field(default_factory=list)
    exclude_ids: list[str] = field(default_factory=list)


@dataclass
class Hit:
    id: str
    doc_id: str
    score: float
    text: str = ""
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    """A passage store: Elasticsearch, or a folder on disk."""

    name: str
    # The alias or index name (Elasticsearch), or the folder (local): what messages and summaries show.
    index: str

    def ensure_index(self, spec: IndexSpec) -> None: ...

    def existing_ids(self, ids: Sequence[str]) -> set[str]: ...

    def write(self, passages: Iterable[Passage]) -> Iterator[WriteResult]: ...

    def count(self) -> int: ...

    def search(self, request: SearchRequest) -> list[Hit]: ...

    def search_many(self, requests: Sequence[SearchRequest]) -> list[list[Hit]]: ...

    def info(self) -> dict[str, Any]: ...
