"""The query layer: top-k passages per input by BM25, dense kNN or hybrid, for one query or many.

Hybrid search asks the store for both rankings (``depth`` each, ids and scores only) and fuses them here, with
reciprocal-rank or normalised linear fusion, then reads the texts of the fused top k alone (``texts="fetch"``), or
has the rankings carry every candidate's text and answers in one round trip (``texts="inline"``). RRF and linear
*retrievers* inside Elasticsearch need an Enterprise licence (and the rank-rrf module); fusing client-side works on
every cluster and keeps each component's score.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ralm_es.errors import RalmError
from ralm_es.onnx_runtime import RUNTIMES, vector_kind
from ralm_es.retrieve import fusion
from ralm_es.retrieve.cache import CacheHit
from ralm_es.retrieve.settings import RANK_FUSIONS, RETRIEVAL_MODES, Mode, RetrievalMode, RetrievalSettings
from ralm_es.store.base import Backend, EncoderRecord, Filter, Hit, SearchRequest

if TYPE_CHECKING:
    # Only dense and hybrid search encode: a BM25-only search never imports torch.
    from ralm_es.embed import Encoder

MAX_BM25_WORDS = 1024
# Extra hits fetched per query when self-matches are dropped after the search.
EXCLUDE_SLACK = 4


class RetrievalError(RalmError):
    """A query that cannot be answered as asked (empty, dense without an encoder, dimension mismatch)."""


def check_query(query: str) -> None:
    """Refuse text that no search can take: empty, or not valid Unicode (a lone surrogate, which JSON can carry
    but UTF-8, and so Elasticsearch and the tokenizer, cannot)."""
    if not isinstance(query, str) or not query.strip():
        raise RetrievalError("empty query: give some text to search for")
    try:
        query.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RetrievalError(
            f"text is not valid Unicode: lone surrogate \\u{ord(query[exc.start]):04x} at character {exc.start}"
        ) from None


@dataclass
class RetrievedHit(CacheHit):
    """A hit of a live search: the cache's fields plus each component's rank and the passage's metadata."""

    ranks: dict[str, int | None] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def search_requests(
    s: RetrievalSettings,
    query: str,
    vector: Sequence[float] | None,
    mode: Mode,
    k: int,
    filters: list[Filter],
    exclude_ids: Sequence[str],
    bodies: bool = True,
) -> list[SearchRequest]:
    """The store searches one query becomes under settings ``s``: one per component of the mode (``depth`` each
    when they are fused). ``bodies=False``: the hits are ids and scores, read in full once fusion has cut them to
    k."""
    m = RETRIEVAL_MODES[mode]
    depth = max(k, s.depth) if m.fused else k
    common = {"k": depth, "filters": filters, "exclude_ids": list(exclude_ids), "bodies": bodies}
    requests = {
        "bm25": lambda: SearchRequest(mode="bm25", text=query, title_boost=s.title_boost, **common),
        "dense": lambda: SearchRequest(
            mode="dense", vector=vector, num_candidates=max(s.num_candidates, depth), **common
        ),
    }
    return [requests[component]() for component in m.components]


def retrieval_mode(mode: str) -> RetrievalMode:
    if mode not in RETRIEVAL_MODES:
        raise RetrievalError(f"unknown mode '{mode}': use {', '.join(RETRIEVAL_MODES)}")
    return RETRIEVAL_MODES[mode]


def _one_of(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def check_query_encoder(recorded: EncoderRecord | None, query: EncoderRecord) -> None:
    """Refuse a query encoder whose vectors are not comparable with the ones the index recorded: other weights, or
    another kind of runtime (torch, torch-bf16 and fp32 onnx mix, int8 mixes with none). An index that recorded no
    encoder (made elsewhere) is not checked; one that recorded no runtime was filled by torch."""
    if recorded is None:
        return
    conflict = recorded.conflict(query)
    if conflict == "revision":
        raise RetrievalError(
            f"the index was embedded by encoder {recorded.revision} but the query encoder is {query.revision}; "
            "use the model the index was built with"
        )
    if conflict == "runtime":
        filled = recorded.runtime
        raise RetrievalError(
            f"the index was embedded with runtime {filled} but queries would be encoded with {query.runtime}; "
            f"use --runtime {_one_of([r for r in RUNTIMES if vector_kind(r) == vector_kind(filled)])}"
        )


class Retriever:
    """Answers "the best k passages for each of these inputs" over any Backend."""

    def __init__(
        self,
        backend: Backend,
        encoder: Encoder | None = None,
        settings: RetrievalSettings | None = None,
        notice: Callable[[str], None] | None = None,
    ) -> None:
        self.backend = backend
        self.encoder = encoder
        self.settings = settings or RetrievalSettings()
        self.notice = notice or (lambda message: None)
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._dims_checked = False
        self._fusion_noticed = False

    def with_settings(self, settings: RetrievalSettings) -> Retriever:
        """The same store and encoder under other settings, sharing the query-vector cache."""
        other = Retriever(self.backend, self.encoder, settings, self.notice)
        other._vectors = self._vectors
        other._dims_checked = self._dims_checked
        other._fusion_noticed = self._fusion_noticed
        return other

    @property
    def query_encoder(self) -> Encoder | None:
        """The encoder this retriever's mode encodes queries with: none for BM25 alone, even when it holds one
        (a retriever with other settings shares its encoder)."""
        return self.encoder if RETRIEVAL_MODES[self.settings.mode].encodes else None

    # -- queries -------------------------------------------------------------------------------------
    def _prepare(self, query: str) -> str:
        check_query(query)
        query = " ".join(query.split())
        if self.encoder is not None:
            limit = self.encoder.max_length - 2
            # verbose=False: the tokenizer's "indexing errors" warning is for untruncated model input; this counts.
            encoded = self.encoder.tokenizer(
                query, add_special_tokens=False, return_offsets_mapping=True, verbose=False
            )
            if len(encoded["input_ids"]) > limit:
                cut = encoded["offset_mapping"][limit - 1][1]
                self.notice(f"query truncated from {len(encoded['input_ids'])} to {limit} tokens")
                return query[:cut]
            return query
        words = query.split(" ")
        if len(words) > MAX_BM25_WORDS:
            self.notice(f"query truncated from {len(words)} to {MAX_BM25_WORDS} words")
            return " ".join(words[:MAX_BM25_WORDS])
        return query

    def check_mode(self) -> None:
        """Refuse now what the default mode's first search would: for dense and hybrid, an index without vectors,
        or with vectors of another size or encoder (a server would start healthy and answer every search 400)."""
        if RETRIEVAL_MODES[self.settings.mode].encodes:
            self._check_dims()

    def _check_dims(self) -> None:
        if self._dims_checked:
            return
        if self.encoder is None:
            raise RetrievalError("dense and hybrid search need a query encoder (--model), or use --mode bm25")
        info = self.backend.info()
        if info.dims is None:
            if info.vector_note:
                raise RetrievalError(f"index '{info.index}': {info.vector_note}")
            raise RetrievalError(f"index '{info.index}' has no vectors: use --mode bm25, or ingest with embeddings")
        if info.dims != self.encoder.dim:
            raise RetrievalError(
                f"the query model gives {self.encoder.dim}-dimensional vectors but the index holds {info.dims}; "
                "use the model the index was built with"
            )
        check_query_encoder(info.model, self.encoder.info())
        self._dims_checked = True

    def encode(self, queries: Sequence[str]) -> np.ndarray:
        """Query vectors, batched, with a small LRU cache (training data repeats inputs across runs)."""
        assert self.encoder is not None
        missing = list(dict.fromkeys(q for q in queries if q not in self._vectors))
        if missing:
            for query, vector in zip(
                missing, self.encoder.encode(missing, batch_size=self.settings.query_batch), strict=True
            ):
                self._vectors[query] = vector
        out = np.stack([self._vectors[q] for q in queries]) if queries else np.zeros((0, 0), np.float32)
        for query in queries:
            self._vectors.move_to_end(query)
        while len(self._vectors) > self.settings.query_cache_size:
            self._vectors.popitem(last=False)
        return out

    # -- requests ------------------------------------------------------------------------------------
    def _bodies(self, mode: Mode) -> bool:
        """Whether the component searches should return passage texts: only a fused mode fetches more (``depth``)
        than it keeps; excluding inputs by content reads the texts of every candidate, and ``texts="inline"`` saves
        the request that reads them after fusion."""
        s = self.settings
        return not RETRIEVAL_MODES[mode].fused or "content" in s.exclude or s.texts == "inline"

    def _fuse(self, mode: Mode, parts: list[list[Hit]], k: int) -> list[tuple[fusion.Fused, Hit]]:
        """The top k of one query's component lists, each fused score beside the store's hit for it."""
        s = self.settings
        m = RETRIEVAL_MODES[mode]
        # A passage in several lists keeps the hit of the first component (BM25's in hybrid).
        by_id = {h.id: h for hits in reversed(parts) for h in hits}
        if m.fused:
            rankings = {c: [(h.id, h.score) for h in hits] for c, hits in zip(m.components, parts, strict=True)}
            # Equal weights are plain RRF; dense_weight 0.5 keeps the textbook formula up to a factor.
            weights = {"bm25": 1.0 - s.dense_weight, "dense": s.dense_weight}
            fused = RANK_FUSIONS[s.fusion].fuse(rankings, weights, s)
        else:
            # One list: it is its own single component.
            (component,) = m.components
            fused = [
                fusion.Fused(h.id, h.score, {component: fusion.Component(h.score, i)})
                for i, h in enumerate(parts[0], 1)
            ]
        return [(f, by_id[f.id]) for f in fused[:k]]

    def _hits(self, ranked: list[list[tuple[fusion.Fused, Hit]]]) -> list[list[RetrievedHit]]:
        """Every query's fused top k as hits, the ones the store returned without text read in one ``fetch``."""
        missing = [h.id for pairs in ranked for _, h in pairs if not h.complete]
        full = self.backend.fetch(missing) if missing else {}
        if gone := sorted(set(missing) - set(full)):
            raise RetrievalError(
                f"passages {', '.join(gone[:5])} left index '{self.backend.index}' between the search and reading "
                "them (the index changed); search again"
            )
        out = []
        for pairs in ranked:
            hits = []
            for i, (f, found) in enumerate(pairs, 1):
                h, comps = (found if found.complete else full[found.id]), f.components
                hits.append(
                    RetrievedHit(
                        id=h.id,
                        doc_id=h.doc_id,
                        rank=i,
                        score=f.score,
                        scores={name: comps[name].score if name in comps else None for name in ("bm25", "dense")},
                        ranks={name: comps[name].rank if name in comps else None for name in ("bm25", "dense")},
                        title=h.title,
                        text=h.text,
                        metadata=h.metadata,
                    )
                )
            out.append(hits)
        return out

    def search(
        self,
        query: str,
        k: int | None = None,
        mode: Mode | None = None,
        filters: list[Filter] | None = None,
        exclude_ids: Sequence[str] = (),
    ) -> list[RetrievedHit]:
        # A lone query is no input of a data set: it has no id for retrieval.exclude's doc (as /search).
        return self.search_many([query], k=k, mode=mode, filters=filters, exclude_ids=[exclude_ids], input_ids=[None])[
            0
        ]

    def search_many(
        self,
        queries: Sequence[str],
        k: int | None = None,
        mode: Mode | None = None,
        filters: list[Filter] | None = None,
        exclude_ids: Sequence[Sequence[str]] | None = None,
        input_ids: Sequence[str | None] | None = None,
    ) -> list[list[RetrievedHit]]:
        """Top-k for every query: queries embedded in batches, searches packed into ``_msearch`` chunks.

        ``input_ids`` name the inputs for self-exclusion (``settings.exclude``): a hit whose ``doc_id`` is the
        input's id, or whose text is the query's text, is dropped; an input whose id is None (a free query) is
        not excluded by id.
        """
        k = self._k(k)
        exclude = self.settings.exclude
        if exclude != "none" and input_ids is None and "doc" in exclude:
            raise RetrievalError("excluding inputs by document id needs their ids")
        fetch = self._fetch_size(k)
        mode = mode or self.settings.mode
        m = retrieval_mode(mode)
        texts = [self._prepare(q) for q in queries]
        excludes = list(exclude_ids) if exclude_ids is not None else [()] * len(texts)
        if len(excludes) != len(texts):
            raise RetrievalError(f"exclude_ids has {len(excludes)} entries for {len(texts)} queries")
        vectors: np.ndarray | None = None
        if m.encodes:
            self._check_dims()
            vectors = self.encode(texts)
        if m.fused and not self._fusion_noticed:
            self._fusion_noticed = True
            self.notice(self.backend.fusion_notice())
        requests: list[SearchRequest] = []
        bodies = self._bodies(mode)
        for i, text in enumerate(texts):
            vector = vectors[i].tolist() if vectors is not None else None
            filters_i = list(filters or [])
            requests += search_requests(self.settings, text, vector, mode, fetch, filters_i, excludes[i], bodies)
        per_query = len(m.components)
        results = self.backend.search_many(requests)
        ranked = []
        for q, start in enumerate(range(0, len(results), per_query)):
            parts = results[start : start + per_query]
            if exclude != "none":
                own_id = input_ids[q] if input_ids is not None else None
                parts = [[h for h in hits if not self._is_self(h, own_id, texts[q])] for hits in parts]
            ranked.append(self._fuse(mode, parts, k))
        return self._hits(ranked)

    def _k(self, k: int | None) -> int:
        """The k asked for, or the settings' when none is; the settings' check holds for an argument too."""
        if k is None:
            return self.settings.k
        if k < 1:
            raise RetrievalError(f"k must be at least 1, got {k}")
        return k

    def _fetch_size(self, k: int) -> int:
        """Hits each search asks for: ``k``, and some slack where self-matches are dropped after the search."""
        return k + EXCLUDE_SLACK if self.settings.exclude != "none" else k

    def _is_self(self, hit: Hit, input_id: str | None, text: str) -> bool:
        exclude = self.settings.exclude
        if "doc" in exclude and hit.doc_id == input_id:
            return True
        return "content" in exclude and " ".join(hit.text.split()).lower() == text.lower()

    def explain(
        self,
        query: str,
        k: int | None = None,
        mode: Mode | None = None,
        filters: list[Filter] | None = None,
        exclude_ids: Sequence[str] = (),
    ) -> list[dict[str, Any]]:
        """The exact Elasticsearch request bodies ``search`` with these arguments sends (for Kibana's Dev Tools)."""
        k = self._fetch_size(self._k(k))
        mode = mode or self.settings.mode
        m = retrieval_mode(mode)
        text = self._prepare(query)
        vector = None
        if m.encodes:
            self._check_dims()
            vector = self.encode([text])[0].tolist()
        return [
            self.backend.request_body(r)
            for r in search_requests(
                self.settings, text, vector, mode, k, list(filters or []), exclude_ids, self._bodies(mode)
            )
        ]
