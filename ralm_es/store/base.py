"""The narrow interface every passage store implements, and the values that cross it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, Protocol

from ralm_es.config import check_bounds, check_choices
from ralm_es.corpus.types import Passage
from ralm_es.errors import RalmError
from ralm_es.onnx_runtime import vector_kind

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


def filter_fields(requests: Sequence[SearchRequest]) -> set[str]:
    return {f.field for r in requests for f in r.filters}


def check_filter_fields(where: str, wanted: set[str], known: set[str]) -> None:
    """Refuse filters on fields that no passage has (every backend): such a filter can only match nothing, and an
    empty answer would hide the typo."""
    missing = sorted(wanted - known)
    if missing:
        names = ", ".join(f"'{m}'" for m in missing)
        listing = ", ".join(sorted(known)[:20]) + (", ..." if len(known) > 20 else "") if known else "none"
        raise StoreError(f"filter on {names}: no passage in {where} has this field; its filterable fields: {listing}")


@dataclass(frozen=True)
class BulkSettings:
    """How writes are grouped into bulk requests (at most ``docs`` passages and ``bytes`` bytes a request), and how
    often passages refused for a passing reason are sent again (``retries`` times, ``backoff`` seconds doubling)."""

    docs: int = 500
    bytes: int = 8 * 1024 * 1024
    retries: int = 5
    backoff: float = 1.0

    def __post_init__(self) -> None:
        # Checked before anything is written: a zero request size would stall or crash mid-run.
        check_bounds("bulk", self, ("docs", "bytes"), 1)
        check_bounds("bulk", self, ("retries", "backoff"), 0)


DEFAULT_BULK = BulkSettings()

Similarity = Literal["cosine", "dot_product", "l2_norm", "max_inner_product"]
IndexType = Literal["hnsw", "int8_hnsw", "int4_hnsw", "bbq_hnsw", "flat"]


@dataclass(frozen=True)
class IndexSettings:
    """How a new index is built: the vectors' similarity, the kNN structure (``m`` and ``ef_construction`` shape
    the HNSW types' graph), shards and replicas."""

    similarity: Similarity = "cosine"
    index_type: IndexType = "hnsw"
    m: int = 16
    ef_construction: int = 100
    shards: int = 1
    replicas: int = 0

    def __post_init__(self) -> None:
        check_bounds("index", self, ("m", "ef_construction", "shards"), 1)
        check_bounds("index", self, ("replicas",), 0)
        check_choices("index", self, ("similarity", "index_type"))


@dataclass(frozen=True)
class Chunking:
    """The settings that shape an index's passages; passages cut with other ones must not share the index."""

    max_tokens: int
    overlap: int
    tokenizer: str  # a content hash of the tokenizer's files

    def describe(self) -> str:
        return f"max_tokens={self.max_tokens}, overlap={self.overlap}, tokenizer {self.tokenizer}"


@dataclass(frozen=True)
class EncoderRecord:
    """The encoder that made an index's vectors (or a retrieval cache's dense hits), as the index records it
    (``Encoder.info()`` when it was filled): its name, content revision, vector size, pooling, folder and runtime.
    Read back from records this version did not write, too: an index made elsewhere may name fewer of them, and one
    that names no runtime was filled by torch."""

    name: str | None = None
    revision: str | None = None
    dim: int | None = None
    pooling: str | None = None
    path: str | None = None
    runtime: str = "torch"

    def to_json(self) -> dict[str, Any]:
        return {name: value for name, value in asdict(self).items() if value is not None}

    @classmethod
    def from_json(cls, data: object) -> EncoderRecord | None:
        """The record in an index's metadata or a cache header; None where there is none. Keys this version does
        not know are left out."""
        if not isinstance(data, dict) or not data:
            return None
        known = {f.name for f in fields(cls)}
        return cls(**{name: value for name, value in data.items() if name in known and value is not None})

    def conflict(self, other: EncoderRecord) -> Literal["revision", "runtime"] | None:
        """What keeps vectors of ``other``'s encoder from sharing an index with this one's: other weights (where both
        name a revision), or another kind of runtime (torch, torch-bf16 and fp32 onnx agree to 1e-3 cosine and mix;
        int8 mixes with none)."""
        if self.revision and other.revision and self.revision != other.revision:
            return "revision"
        if vector_kind(self.runtime) != vector_kind(other.runtime):
            return "runtime"
        return None


def check_index_settings(where: str, given: IndexSettings, built: dict[str, Any]) -> None:
    """Refuse index settings given away from their defaults that differ from what ``where`` was built with
    (``built``: the settings it records, by name): they shape a new index and would do nothing to this one."""
    default = IndexSettings()
    differ = [
        f"index.{name}={getattr(given, name)} (it has {value})"
        for name, value in built.items()
        if getattr(given, name) != getattr(default, name) and getattr(given, name) != value
    ]
    if differ:
        raise StoreError(
            f"{where} exists, and {', '.join(differ)} would shape a new index; leave them out, or --reindex to "
            "rebuild the index with them"
        )


def check_shape(where: str, spec: IndexSpec, model: EncoderRecord | None, chunking: Chunking | None) -> None:
    """Refuse passages shaped otherwise (another encoder, other chunking) than the ones ``where`` holds.

    ``model`` and ``chunking`` are what the index recorded; an index that recorded nothing (made elsewhere, or
    before indices recorded their chunking) is not checked."""
    if model and spec.model:
        conflict, wanted = model.conflict(spec.model), spec.model
        if conflict == "revision":
            raise StoreError(
                f"{where} was embedded by encoder {model.revision} but this ingest uses {wanted.revision}; "
                "use that encoder, or --reindex to rebuild the index with this one"
            )
        if conflict == "runtime":
            raise StoreError(
                f"{where} was embedded with encoder runtime {model.runtime} but this ingest uses {wanted.runtime}; "
                f"use --set runtime={model.runtime}, or --reindex to rebuild the index with {wanted.runtime}"
            )
    if chunking is not None and spec.chunking is not None and chunking != spec.chunking:
        raise StoreError(
            f"{where} holds passages cut with {chunking.describe()}, but this ingest cuts them with "
            f"{spec.chunking.describe()}; use the same settings, or --reindex to rebuild the index with these"
        )


@dataclass(frozen=True)
class Refresh:
    """An index's refresh interval before a bulk load paused it; ``interval=None``: not set (the default)."""

    interval: str | None


@dataclass
class IndexSpec:
    """What an index must hold. ``dims=None`` makes a BM25-only index."""

    name: str
    dims: int | None = None
    settings: IndexSettings = field(default_factory=IndexSettings)
    model: EncoderRecord | None = None
    chunking: Chunking | None = None


@dataclass
class WriteResult:
    """The outcome of writing one passage; ``source`` is its ``file:line``."""

    id: str
    source: str
    ok: bool
    created: bool = False
    error: str | None = None
    status: int = 0


RANGE_BOUNDS = ("gte", "gt", "lte", "lt")
# Elasticsearch refuses a document _id over 512 bytes, and with it the whole bulk request it is in; ingest holds
# the limit whatever the backend, so a corpus that fills a local index fills an Elasticsearch one.
MAX_ID_BYTES = 512


@dataclass
class Filter:
    """A metadata filter: ``term`` (value), ``terms`` (values) or ``range`` (gte/lte/gt/lt). Checked here, so
    every backend and every path in (CLI, REST, Python API) refuses the same filters."""

    field: str
    kind: Literal["term", "terms", "range"] = "term"
    value: Any = None

    def __post_init__(self) -> None:
        if not self.field:
            raise StoreError("a filter needs a field name")
        where = f"filter on '{self.field}'"
        if self.kind not in ("term", "terms", "range"):
            raise StoreError(f"{where}: unknown kind {self.kind!r} (use term, terms or range)")
        if self.kind == "term" and isinstance(self.value, (list, tuple, set, dict)):
            raise StoreError(f"term {where} takes one value, got {self.value!r} (a list is kind terms)")
        if self.kind == "terms" and not (isinstance(self.value, (list, tuple, set, frozenset)) and self.value):
            raise StoreError(f"terms {where} takes a non-empty list of values, got {self.value!r}")
        if self.kind == "range" and not (
            isinstance(self.value, dict) and self.value and set(self.value) <= set(RANGE_BOUNDS)
        ):
            raise StoreError(f"range {where} takes a dict of {', '.join(RANGE_BOUNDS)}, got {self.value!r}")


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
    # False: the hits carry id, doc_id and score only (``Hit.complete`` False), for candidate lists that fusion
    # cuts down; ``Backend.fetch`` then reads the few that remain. Elasticsearch otherwise loads every
    # candidate's stored _source, which holds its vector.
    bodies: bool = True


@dataclass
class Hit:
    id: str
    doc_id: str
    score: float
    text: str = ""
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    # False for a hit of a search with ``bodies=False``: text, title and metadata are not read yet.
    complete: bool = True


class Backend(Protocol):
    """A passage store: Elasticsearch, or a folder on disk."""

    name: str
    # The alias or index name (Elasticsearch), or the folder (local): what messages and summaries show.
    index: str

    def check_bulk(self, bulk: BulkSettings) -> None:
        """Refuse bulk settings this store cannot honour; an ingest asks before it makes anything."""

    def ensure_index(self, spec: IndexSpec) -> None: ...

    def staging(self, spec: IndexSpec, resume: str | None = None) -> Backend:
        """A new index for ``--reindex``, not yet behind the alias (or ``resume``, the one an interrupted reindex
        left), as a backend bound to it."""
        ...

    def swap_alias(self, staged: str, drop_old: bool) -> list[str]:
        """Point the alias at ``staged`` atomically; returns the indices it left (deleted when ``drop_old``)."""
        ...

    def refresh_interval(self) -> Refresh:
        """The refresh interval of the one index written to."""
        ...

    def bulk_load(self, before: Refresh) -> AbstractContextManager[None]:
        """Refresh off on the one index written to while the block runs, then back to ``before`` (what
        ``refresh_interval`` said before this run or the interrupted run it resumes) and refreshed."""
        ...

    def tuned_settings(self) -> dict[str, Any]:
        """Retrieval settings recorded with the index by ``evaluate --sweep --save`` (empty when none)."""
        ...

    def record_tuned_settings(self, settings: dict[str, Any]) -> None:
        """Record retrieval settings with the index (the one written to), replacing any recorded before."""
        ...

    def existing_ids(self, ids: Sequence[str]) -> set[str]: ...

    def write(self, passages: Iterable[Passage], bulk: BulkSettings = DEFAULT_BULK) -> Iterator[WriteResult]: ...

    def count(self) -> int: ...

    def search(self, request: SearchRequest) -> list[Hit]: ...

    def search_many(self, requests: Sequence[SearchRequest]) -> list[list[Hit]]: ...

    def fetch(self, ids: Sequence[str]) -> dict[str, Hit]:
        """The passages with these ids, complete (score 0), by id; an id the store does not hold is left out."""
        ...

    def info(self) -> IndexInfo: ...

    def fusion_notice(self) -> str:
        """Why hybrid fusion runs in ralm-es on this store (said once per Retriever)."""
        ...

    def request_body(self, request: SearchRequest) -> dict[str, Any]:
        """The Elasticsearch request body ``request`` becomes (``--explain-dsl``); a store that sends none refuses."""
        ...

    def health(self) -> StoreHealth:
        """Whether the store answers, and its own word for its state; never raises for an unreachable store."""
        ...

    def list_indices(self) -> list[IndexListing]:
        """The indices this store can serve from (hidden ones left out), each marked if it is the one served."""
        ...


@dataclass(frozen=True)
class IndexInfo:
    """What a store says about the passages behind a name."""

    backend: str
    # The alias or index name (Elasticsearch), or the folder (local).
    index: str
    count: int
    # The vector field's dimensions; None where the passages have no vectors.
    dims: int | None
    # The encoder the index recorded when it was filled; None where none did.
    model: EncoderRecord | None
    # Elasticsearch: the text analyzer the index recorded.
    analyzer: str | None = None
    # Why an index that holds vectors has none to search here: a field map naming the wrong field, or indices of
    # several vector sizes behind one alias.
    vector_note: str = ""


@dataclass(frozen=True)
class StoreHealth:
    reachable: bool
    # The cluster's name (Elasticsearch) or the folder (local).
    name: str | None = None
    # green/yellow/red on Elasticsearch; None where the store has no such word.
    status: str | None = None
    # Why it is unreachable (on Elasticsearch, the client exception's class name).
    error: str | None = None


@dataclass(frozen=True)
class IndexListing:
    index: str
    docs: int | None
    # green/yellow/red on Elasticsearch; None where the store has no such word.
    health: str | None
    aliases: list[str]
    # dense_vector fields and their dimension.
    vectors: dict[str, int]
    # Whether this backend searches it (its name or one of its aliases is the backend's ``index``).
    serving: bool
