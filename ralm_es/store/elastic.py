"""The Elasticsearch passage store: template-built indices behind an alias, bulk writes, BM25 and kNN search."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from importlib.resources import files
from typing import Any

from elasticsearch import ApiError, Elasticsearch, NotFoundError, TransportError, helpers

from ralm_es.corpus.types import Passage
from ralm_es.store.base import (
    DEFAULT_BULK,
    BulkSettings,
    Chunking,
    EncoderRecord,
    Filter,
    Hit,
    IndexInfo,
    IndexListing,
    IndexSpec,
    Refresh,
    SearchRequest,
    StoreError,
    StoreHealth,
    WriteResult,
    check_dims,
    check_filter_fields,
    check_index_settings,
    check_shape,
    filter_fields,
)
from ralm_es.version import __version__

log = logging.getLogger(__name__)
FALLBACK_ANALYZER = "ralm_english_fallback"
HUNSPELL_ANALYZER = "ralm_english_hunspell"
# English stemming from core Elasticsearch alone: the hunspell filter over the en_US dictionary in the node's
# config folder (`ralm-es es start` puts it there), after lowercasing and the English stop list.
HUNSPELL_FILTER = {"type": "hunspell", "locale": "en_US", "dedup": True}
HUNSPELL_ANALYSIS = {
    "filter": {"ralm_en_us_hunspell": HUNSPELL_FILTER},
    "analyzer": {
        HUNSPELL_ANALYZER: {
            "type": "custom",
            "tokenizer": "standard",
            "filter": ["lowercase", "stop", "ralm_en_us_hunspell"],
        }
    },
}
MSEARCH_CHUNK = 64
# _msearch requests at once: one while the node answers the other.
MSEARCH_IN_FLIGHT = 2
# Ids per terms search of ``fetch``: far below index.max_terms_count and max_result_window.
FETCH_CHUNK = 1000
SHARD_RETRY_BACKOFF = (0.5, 1.0, 2.0, 4.0)
MAX_BACKOFF = 30.0
# Elasticsearch's rules for index and alias names; a pattern ('*', '_all', 'a,b') would reach other indices.
NAME_FORBIDDEN = re.compile(r'[\\/*?"<>| ,#:A-Z]')
HNSW_TYPES = ("hnsw", "int8_hnsw", "int4_hnsw", "bbq_hnsw")


def check_index_name(name: str) -> None:
    """Refuse what Elasticsearch would not take as one index or alias name, and every pattern."""
    problem = None
    if not name:
        problem = "it is empty"
    elif found := NAME_FORBIDDEN.search(name):
        problem = f'it contains {found.group()!r} (names are lowercase, without \\ / * ? " < > | , # : or spaces)'
    elif name[0] in "-_+":
        problem = f"it starts with {name[0]!r}"
    elif name in (".", ".."):
        problem = "it is a path"
    elif len(name.encode()) > 255:
        problem = "it is longer than 255 bytes"
    if problem:
        raise StoreError(f"index name {name!r} is not valid: {problem}")


@dataclass
class FieldMap:
    """Which fields of an index hold what; defaults are the fields of indices ralm-es creates.

    For an index made elsewhere: ``id`` must be a keyword field (or ``_id``), ``vector`` a ``dense_vector``,
    ``metadata`` an object whose keys filters name, and ``extra`` top-level fields shown and filtered as metadata.
    """

    id: str = "id"
    doc_id: str = "doc_id"
    text: str = "text"
    title: str = "title"
    vector: str = "vector"
    metadata: str = "metadata"
    extra: list[str] = field(default_factory=list)


def load_template() -> dict[str, Any]:
    return json.loads(files("ralm_es.mappings").joinpath("passages.json").read_text())


def english_analyzer(client: Elasticsearch) -> str:
    """The best English analyzer the cluster has: ``english``, else hunspell stemming, else no stemming (warned)."""
    if has_analyzer(client, "english"):
        return "english"
    try:
        tokens = client.indices.analyze(tokenizer="standard", filter=[HUNSPELL_FILTER], text="treatments")["tokens"]
    except ApiError:
        tokens = []
    if "treatment" in {t["token"] for t in tokens}:
        log.warning(
            "this cluster has no 'english' analyzer (analysis-common module missing): stemming with hunspell en_US "
            "instead (no possessive filter, dictionary stems rather than Porter's)"
        )
        return HUNSPELL_ANALYZER
    log.warning(
        "this cluster has no 'english' analyzer (analysis-common module missing) and no hunspell en_US dictionary: "
        "indexing without stemming ('treatments' will not match 'treatment'); install hunspell-en-us and restart "
        "the node with `ralm-es es start` to get it"
    )
    return FALLBACK_ANALYZER


def has_analyzer(client: Elasticsearch, name: str) -> bool:
    """Whether the cluster has a built-in analyzer (the integration-test node lacks analysis-common)."""
    try:
        client.indices.analyze(analyzer=name, text="running")
    except ApiError:
        return False
    return True


def index_body(spec: IndexSpec, analyzer: str) -> dict[str, Any]:
    """The create-index body for ``spec`` from ``mappings/passages.json``."""
    body = load_template()
    settings = body["settings"]["index"]
    settings.update(number_of_shards=spec.settings.shards, number_of_replicas=spec.settings.replicas)
    props = body["mappings"]["properties"]
    props["title"]["analyzer"] = props["text"]["analyzer"] = analyzer
    if analyzer == HUNSPELL_ANALYZER:
        analysis = body["settings"]["analysis"]
        analysis["filter"] = HUNSPELL_ANALYSIS["filter"]
        analysis["analyzer"].update(HUNSPELL_ANALYSIS["analyzer"])
    if spec.dims is None:
        del props["vector"]
    else:
        vector = props["vector"]
        built = spec.settings
        vector.update(dims=spec.dims, similarity=built.similarity)
        options: dict[str, Any] = {"type": built.index_type}
        if built.index_type in HNSW_TYPES:  # the flat types build no graph and refuse its parameters
            options.update(m=built.m, ef_construction=built.ef_construction)
        vector["index_options"] = options
    body["mappings"]["_meta"] = {
        "created_by": f"ralm-es {__version__}",
        "model": spec.model.to_json() if spec.model else None,
        "chunking": asdict(spec.chunking) if spec.chunking else None,
        "analyzer": analyzer,
    }
    return body


def recorded_chunking(meta: dict[str, Any]) -> Chunking | None:
    chunking = meta.get("chunking")
    return Chunking(**chunking) if isinstance(chunking, dict) else None


def filter_clause(f: Filter, fields: FieldMap) -> dict[str, Any]:
    path = f.field if f.field in fields.extra else f"{fields.metadata}.{f.field}"
    if f.kind == "term":
        return {"term": {path: f.value}}
    if f.kind == "terms":
        return {"terms": {path: list(f.value)}}
    return {"range": {path: dict(f.value)}}


def search_body(request: SearchRequest, f: FieldMap, light: bool = False) -> dict[str, Any]:
    """The exact request body for one search (what ``--explain-dsl`` prints): a pure function of the request and
    the index's field map ``f``, so Kibana snippets and tests need no cluster. ``light``: hits with ids and scores
    only (a request with ``bodies=False`` on an index whose id fields have doc values)."""
    filters = [filter_clause(flt, f) for flt in request.filters]
    must_not = [{"terms": {f.id: list(request.exclude_ids)}}] if request.exclude_ids else []
    # Light hits read ids from doc values and load no stored fields: _source, with its vector, is most of
    # what a search costs when it returns fusion's deep candidate lists.
    shown: dict[str, Any] = (
        {"stored_fields": "_none_", "docvalue_fields": [f.id, f.doc_id]}
        if light
        else {"_source": {"excludes": [f.vector]}}
    )
    if request.mode == "bm25":
        match = {
            "multi_match": {
                "query": request.text,
                "fields": [f"{f.title}^{request.title_boost:g}", f.text],
                "type": "best_fields",
            }
        }
        return {
            "size": request.k,
            "query": {"bool": {"must": [match], "filter": filters, "must_not": must_not}},
            **shown,
        }
    if request.vector is None:
        raise StoreError("dense search needs a query vector")
    knn: dict[str, Any] = {
        "field": f.vector,
        "query_vector": [float(x) for x in request.vector],
        "k": request.k,
        "num_candidates": max(request.num_candidates, request.k),
    }
    if filters or must_not:
        knn["filter"] = {"bool": {"filter": filters, "must_not": must_not}}
    return {"size": request.k, "knn": knn, **shown}


class ElasticsearchBackend:
    """Passages in an Elasticsearch index reached through ``alias`` (or a plain index of that name)."""

    name = "elasticsearch"

    def __init__(
        self,
        client: Elasticsearch,
        index: str,
        fields: FieldMap | None = None,
    ) -> None:
        check_index_name(index)
        self.client = client
        self.index = index
        self.fields = fields or FieldMap()
        # The names filters can use, read from the mappings when a filter first names one not seen yet.
        self._filterable: set[str] = set()
        self._fields_checked = False

    # -- index management ------------------------------------------------------------------------------
    def concrete_indices(self) -> list[str]:
        """The indices behind the alias (or the index itself); empty when neither exists."""
        try:
            return sorted(self.client.indices.get_alias(name=self.index).body)
        except NotFoundError:
            pass
        if self.client.indices.exists(index=self.index):
            return [self.index]
        return []

    def mapping(self, index: str | None = None) -> dict[str, Any]:
        """The mapping of ``index``, or of the newest index behind the alias."""
        if index is None:
            indices = self.concrete_indices()
            if not indices:
                raise self.unknown_index()
            index = indices[-1]
        return self.client.indices.get_mapping(index=index).body[index]["mappings"]

    def unknown_index(self) -> StoreError:
        names = sorted(
            i["index"] for i in self.client.cat.indices(format="json", h="index").body if not i["index"].startswith(".")
        )
        listing = ", ".join(names) if names else "none"
        return StoreError(f"index or alias '{self.index}' does not exist; indices on this cluster: {listing}")

    @cached_property
    def search_dims(self) -> int | None:
        """The alias's vector dimensions, read once: searches should not pay two metadata requests each."""
        return self.vector_dims()

    def vector_dims(self, index: str | None = None) -> int | None:
        return self._dims(self.mapping(index))

    def _vector_field(self, mapping: dict[str, Any]) -> dict[str, Any] | None:
        """The mapping of the field map's vector field when it is a ``dense_vector``."""
        vector = mapping.get("properties", {}).get(self.fields.vector)
        return vector if vector and vector.get("type") == "dense_vector" else None

    def _dims(self, mapping: dict[str, Any]) -> int | None:
        vector = self._vector_field(mapping)
        return int(vector["dims"]) if vector else None

    def check_bulk(self, bulk: BulkSettings) -> None:
        """Every bulk setting shapes this store's ``_bulk`` requests."""

    def ensure_index(self, spec: IndexSpec) -> None:
        """Create ``<alias>-<timestamp>`` behind the alias if nothing exists; else check that the passages to come
        fit the index written to (vector dims, encoder, chunking)."""
        if not self.concrete_indices():
            self.create_index(spec, alias=True)
            return
        target = self.write_index()
        where = f"index '{self.index}'"
        mapping = self.mapping(target)
        # Passages are written under the field map's names: with ralm-es's own into an index made elsewhere, they
        # would land beside its documents, unread by its field map (and mapped by guess).
        props = mapping.get("properties", {})
        # An index with nothing mapped yet takes ralm-es's names by dynamic mapping, as before.
        if props and self.fields.text not in set(_field_names(props)):
            raise StoreError(
                f"{where} has no field '{self.fields.text}' for the passage text (its fields: "
                f"{', '.join(sorted(props)) or 'none'}): an index made elsewhere needs its field map (--field "
                "text=FIELD, ...), or ingest into a new index name"
            )
        check_dims(where, self._dims(mapping), spec.dims, "--reindex into a new index")
        meta = mapping.get("_meta") or {}
        check_shape(where, spec, EncoderRecord.from_json(meta.get("model")), recorded_chunking(meta))
        check_index_settings(where, spec.settings, self.built_settings(target, mapping))

    def built_settings(self, index: str, mapping: dict[str, Any]) -> dict[str, Any]:
        """The ``IndexSettings`` that ``index`` (whose mapping is ``mapping``) has, by name; the vector field's
        only where it has one, and ``m`` and ``ef_construction`` only where it builds a graph."""
        index_settings = self.client.indices.get_settings(index=index).body[index]["settings"]["index"]
        built: dict[str, Any] = {
            "shards": int(index_settings["number_of_shards"]),
            "replicas": int(index_settings["number_of_replicas"]),
        }
        if vector := self._vector_field(mapping):
            options = vector.get("index_options", {})
            recorded = {"similarity": vector.get("similarity"), "index_type": options.get("type")}
            recorded |= {name: options.get(name) for name in ("m", "ef_construction")}
            # An index made elsewhere may leave some to the cluster's defaults: those are not compared.
            built |= {name: value for name, value in recorded.items() if value is not None}
        return built

    def write_index(self) -> str:
        """The one concrete index that writes through the alias reach (the index itself when it is no alias)."""
        try:
            behind = self.client.indices.get_alias(name=self.index).body
        except NotFoundError:
            return self.index
        if len(behind) == 1:
            return next(iter(behind))
        writers = [name for name, entry in behind.items() if entry["aliases"][self.index].get("is_write_index")]
        if len(writers) != 1:
            raise StoreError(
                f"alias '{self.index}' points to {len(behind)} indices and none is its write index; "
                "set is_write_index on one"
            )
        return writers[0]

    def bound(self, index: str) -> ElasticsearchBackend:
        """The same store settings, reaching ``index`` instead of the alias."""
        return ElasticsearchBackend(self.client, index, self.fields)

    def staging(self, spec: IndexSpec, resume: str | None = None) -> ElasticsearchBackend:
        if resume is not None and self.client.indices.exists(index=resume):
            return self.bound(resume)
        return self.bound(self.create_index(spec, alias=False))

    def create_index(self, spec: IndexSpec, alias: bool) -> str:
        """A new timestamped index from the template; the alias points at it when ``alias`` is true."""
        if self.fields != FieldMap():
            # The template's names are ralm-es's: passages written under the map's would be mapped by guess (text
            # without its analyzer, vectors not at all).
            raise StoreError(
                f"index '{self.index}' does not exist, and ralm-es makes a new index from its template with its own "
                "field names: leave --field (and a config file's fields:) out to create it; they are for an index "
                "made elsewhere"
            )
        analyzer = english_analyzer(self.client)
        concrete = f"{self.index}-{time.strftime('%Y%m%d%H%M%S')}-{time.time_ns() % 1000000:06d}"
        body = index_body(spec, analyzer)
        if alias:
            body["aliases"] = {self.index: {"is_write_index": True}}
        self.client.indices.create(index=concrete, **body)
        return concrete

    def swap_alias(self, new_index: str, drop_old: bool) -> list[str]:
        """Point the alias at ``new_index`` in one atomic request; returns the indices it left."""
        old = [i for i in self.concrete_indices() if i != new_index and i != self.index]
        actions: list[dict[str, Any]] = [{"remove": {"index": i, "alias": self.index}} for i in old]
        actions.append({"add": {"index": new_index, "alias": self.index, "is_write_index": True}})
        self.client.indices.update_aliases(actions=actions)
        if drop_old and old:
            self.client.indices.delete(index=",".join(old))
        return old

    def tuned_settings(self) -> dict[str, Any]:
        return dict((self.mapping().get("_meta") or {}).get("retrieval") or {})

    def record_tuned_settings(self, settings: dict[str, Any]) -> None:
        target = self.write_index()
        # _meta is replaced whole by a mapping update: keep what the index recorded at creation.
        meta = {**(self.mapping(target).get("_meta") or {}), "retrieval": settings}
        self.client.indices.put_mapping(index=target, meta=meta)

    def refresh_interval(self) -> Refresh:
        target = self.write_index()
        settings = self.client.indices.get_settings(index=target, name="index.refresh_interval").body
        return Refresh(settings.get(target, {}).get("settings", {}).get("index", {}).get("refresh_interval"))

    @contextlib.contextmanager
    def bulk_load(self, before: Refresh) -> Iterator[None]:
        target = self.write_index()
        self._set_refresh(target, "-1")
        try:
            yield
        except BaseException:
            # The cluster may be gone; a rerun that resumes restores refresh from the checkpoint then.
            with contextlib.suppress(Exception):
                self._set_refresh(target, before.interval)
            raise
        self._set_refresh(target, before.interval)
        self.client.indices.refresh(index=target)

    def _set_refresh(self, index: str, interval: str | None) -> None:
        self.client.indices.put_settings(index=index, settings={"index": {"refresh_interval": interval}})

    def refresh(self) -> None:
        self.client.indices.refresh(index=self.index)

    # -- writing ---------------------------------------------------------------------------------------
    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        resp = self.client.mget(index=self.index, ids=list(ids), source=False)
        return {d["_id"] for d in resp["docs"] if d.get("found")}

    def passages(self) -> Iterator[Passage]:
        """Every stored passage with its vector, in no particular order (a scroll), to copy an index elsewhere."""
        f = self.fields
        for raw in helpers.scan(self.client, index=self.index, query={"query": {"match_all": {}}}, size=500):
            src = raw["_source"]
            yield Passage(
                id=str(src.get(f.id, raw["_id"])),
                doc_id=str(src.get(f.doc_id, raw["_id"])),
                chunk=int(src.get("chunk", 0)),
                text=src.get(f.text, ""),
                source=src.get("source", ""),
                title=src.get(f.title, "") or "",
                start=int(src.get("start", 0)),
                end=int(src.get("end", 0)),
                metadata=dict(src.get(f.metadata) or {}),
                vector=src.get(f.vector),
            )

    def to_source(self, p: Passage, dims: int | None) -> dict[str, Any]:
        f = self.fields
        doc: dict[str, Any] = {
            f.id: p.id,
            f.doc_id: p.doc_id,
            "chunk": p.chunk,
            f.title: p.title,
            f.text: p.text,
            "start": p.start,
            "end": p.end,
            "source": p.source,
            f.metadata: p.metadata,
        }
        if dims is not None:
            doc[f.vector] = p.vector
        return doc

    def write(self, passages: Iterable[Passage], bulk: BulkSettings = DEFAULT_BULK) -> Iterator[WriteResult]:
        """Bulk-create passages in requests of ``bulk.docs`` passages and ``bulk.bytes`` bytes at most; one result
        per passage, in input order. Existing ids are kept (``created=False``).

        This is the one retry policy for writes: passages refused for a passing reason (429, 5xx: a node lost, a
        shard relocating) are sent again with backoff, ``bulk.retries`` times, so an ingest checkpoint never moves
        past a passage that could still be stored. Whole requests that fail are the transport's to retry."""
        target = self.write_index()
        batch = list(passages)
        dims = self.vector_dims(target)
        results: dict[str, WriteResult] = {}
        pending = []
        for p in batch:
            problem = _vector_problem(p, dims)
            if problem:
                results[p.id] = WriteResult(id=p.id, source=p.source, ok=False, error=problem, status=400)
            else:
                pending.append(p)
        for attempt in range(bulk.retries + 1):
            if attempt:
                time.sleep(min(bulk.backoff * 2 ** (attempt - 1), MAX_BACKOFF))
            sent = self._bulk_create(pending, target, dims, bulk, resent=attempt > 0)
            for p, outcome in zip(pending, sent, strict=True):
                results[p.id] = outcome
            pending = [p for p in pending if _transient(results[p.id])]
            if not pending:
                break
        for p in batch:
            yield results[p.id]

    def _bulk_create(
        self, passages: list[Passage], target: str, dims: int | None, bulk: BulkSettings, resent: bool
    ) -> list[WriteResult]:
        """One pass of ``streaming_bulk`` over ``passages``, its results in their order."""
        sources = {p.id: p.source for p in passages}
        actions = (
            {"_op_type": "create", "_index": target, "_id": p.id, "_source": self.to_source(p, dims)} for p in passages
        )
        out: dict[str, WriteResult] = {}
        for ok, item in helpers.streaming_bulk(
            self.client,
            actions,
            chunk_size=bulk.docs,
            max_chunk_bytes=bulk.bytes,
            raise_on_error=False,
            raise_on_exception=False,
            max_retries=0,
            yield_ok=True,
        ):
            result = item["create"]
            pid = result["_id"]
            status = int(result.get("status", 0))
            if ok:
                outcome = WriteResult(id=pid, source=sources[pid], ok=True, created=True, status=status)
            elif status == 409:
                # Sent again after a passing failure, a conflict means the earlier try stored it after all.
                outcome = WriteResult(id=pid, source=sources[pid], ok=True, created=resent, status=status)
            else:
                outcome = WriteResult(id=pid, source=sources[pid], ok=False, error=_reason(result), status=status)
            out[pid] = outcome
        return [out[p.id] for p in passages]

    # -- reading ---------------------------------------------------------------------------------------
    def count(self) -> int:
        return int(self.client.count(index=self.index)["count"])

    @cached_property
    def light_hits(self) -> bool:
        """Whether hits can be read from doc values alone: ``id`` a keyword field with doc values, and ``doc_id``
        one too or absent (the id then stands in). Read once, like ``search_dims``."""
        f = self.fields
        props = self.mapping().get("properties", {})

        def doc_valued(name: str) -> bool:
            spec = props.get(name) or {}
            return bool(spec.get("type") == "keyword" and spec.get("doc_values", True))

        return f.id != "_id" and doc_valued(f.id) and (f.doc_id not in props or doc_valued(f.doc_id))

    def request_body(self, request: SearchRequest) -> dict[str, Any]:
        return search_body(request, self.fields, light=not request.bodies and self.light_hits)

    def to_hit(self, raw: dict[str, Any]) -> Hit:
        f = self.fields
        # Light hits (stored_fields _none_) carry neither _source nor _id.
        if "_id" not in raw:
            values = raw.get("fields", {})
            if not values.get(f.id):
                raise StoreError(
                    f"a passage in index '{self.index}' has no '{f.id}' value: give every document one, or use "
                    "--field id=_id"
                )
            pid = str(values[f.id][0])
            return Hit(id=pid, doc_id=str(values.get(f.doc_id, [pid])[0]), score=float(raw["_score"]), complete=False)
        src = raw.get("_source", {})
        metadata = dict(src.get(f.metadata) or {})
        for name in f.extra:
            if name in src:
                metadata[name] = src[name]
        # Indices made elsewhere may lack an id or doc_id field: the Elasticsearch _id stands in.
        stored_id, stored_doc = _source_value(src, f.id), _source_value(src, f.doc_id)
        pid = str(stored_id if stored_id is not None else raw["_id"])
        return Hit(
            id=pid,
            doc_id=str(stored_doc if stored_doc is not None else pid),
            score=float(raw["_score"]),
            text=_source_value(src, f.text) or "",
            title=_source_value(src, f.title) or "",
            metadata=metadata,
        )

    def mapped_filter_fields(self) -> set[str]:
        """What filters can name, over every index behind the name: the metadata object's fields (dotted, with
        their multi-fields) and the field map's ``extra`` fields that are mapped."""
        try:
            mappings = self.client.indices.get_mapping(index=self.index).body.values()
        except NotFoundError:
            raise self.unknown_index() from None
        names: set[str] = set()
        for entry in mappings:
            props = entry["mappings"].get("properties", {})
            names |= set(_field_names(props.get(self.fields.metadata, {}).get("properties", {})))
            names |= set(self.fields.extra) & set(_field_names(props))
        return names

    def mapped_field_names(self) -> set[str]:
        """Every field any index behind the name maps (dotted, with multi-fields)."""
        try:
            mappings = self.client.indices.get_mapping(index=self.index).body.values()
        except NotFoundError:
            raise self.unknown_index() from None
        return {name for entry in mappings for name in _field_names(entry["mappings"].get("properties", {}))}

    def check_text_fields(self) -> None:
        """Refuse a field map whose text field, or a title field it names, no index behind the name maps: BM25
        searched nothing there and every hit's text came back empty, without a word."""
        names = self.mapped_field_names()
        f = self.fields
        # The default title may be absent (an index without titles); one the field map names must be there.
        wanted = [("text", f.text)] + ([("title", f.title)] if f.title != FieldMap.title else [])
        for role, name in wanted:
            if name not in names:
                shown = sorted(n for n in names if n != f.vector and not n.startswith(f"{f.metadata}."))
                raise StoreError(
                    f"index '{self.index}' has no field '{name}' for the passage {role} (its fields: "
                    f"{', '.join(shown[:20]) or 'none yet'}); name the right one with --field {role}=FIELD"
                )

    def _extra_hint(self, names: set[str]) -> str:
        """Filtered fields the index has outside the metadata object: the field map's ``extra`` reaches them."""
        outside = sorted(names & self.mapped_field_names())
        if not outside:
            return ""
        flags = " ".join(f"--field extra={name}" for name in outside)
        return f"; {', '.join(outside)} outside '{self.fields.metadata}': add to the field map with {flags}"

    def search(self, request: SearchRequest) -> list[Hit]:
        return self.search_many([request])[0]

    def search_many(self, requests: Sequence[SearchRequest]) -> list[list[Hit]]:
        """``_msearch`` in chunks of 64 searches, two chunks at a time."""
        if not requests:
            return []
        if request_needs_vectors(requests) and self.search_dims is None:
            raise StoreError(f"index '{self.index}' has no vector field, so dense search is not possible")
        if not self._fields_checked:
            self.check_text_fields()
            self._fields_checked = True
        wanted = filter_fields(requests)
        if wanted - self._filterable:
            # Read again, not once: dynamic mapping adds metadata fields as passages arrive.
            self._filterable = self.mapped_filter_fields()
            try:
                check_filter_fields(f"index '{self.index}'", wanted, self._filterable)
            except StoreError as exc:
                raise StoreError(f"{exc}{self._extra_hint(wanted - self._filterable)}") from None
        chunks = [requests[i : i + MSEARCH_CHUNK] for i in range(0, len(requests), MSEARCH_CHUNK)]
        if len(chunks) == 1:
            return self._msearch(chunks[0])
        with ThreadPoolExecutor(max_workers=MSEARCH_IN_FLIGHT) as pool:
            return [hits for chunk in pool.map(self._msearch, chunks) for hits in chunk]

    def _msearch(self, requests: Sequence[SearchRequest]) -> list[list[Hit]]:
        raw = self._msearch_bodies([self.request_body(r) for r in requests])
        return [[self.to_hit(h) for h in hits] for hits in raw]

    def fetch(self, ids: Sequence[str]) -> dict[str, Hit]:
        """One ``terms`` search on the id field per ``FETCH_CHUNK`` ids, all in one ``_msearch``."""
        f = self.fields
        unique = list(dict.fromkeys(ids))
        chunks = [unique[i : i + FETCH_CHUNK] for i in range(0, len(unique), FETCH_CHUNK)]
        bodies = [
            {"size": len(chunk), "query": {"terms": {f.id: chunk}}, "_source": {"excludes": [f.vector]}}
            for chunk in chunks
        ]
        found = [self.to_hit(raw) for hits in self._msearch_bodies(bodies) for raw in hits] if bodies else []
        return {hit.id: replace(hit, score=0.0) for hit in found}

    def _msearch_bodies(self, bodies: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        """One ``_msearch`` of these bodies, their raw hits; searches that failed on some shards (a node lost, a
        replica being promoted) are sent again with backoff rather than answered with partial results."""
        out: list[list[dict[str, Any]] | None] = [None] * len(bodies)
        pending = list(range(len(bodies)))
        for delay in (*SHARD_RETRY_BACKOFF, None):
            lines: list[dict[str, Any]] = []
            for i in pending:
                lines.append({"index": self.index, "allow_partial_search_results": False})
                lines.append(bodies[i])
            try:
                resp = self.client.msearch(searches=lines)
            except NotFoundError:
                raise self.unknown_index() from None
            retry = []
            for i, response in zip(pending, resp["responses"], strict=True):
                error = response.get("error")
                if error is None and not response.get("_shards", {}).get("failed"):
                    out[i] = response["hits"]["hits"]
                    continue
                if (error or {}).get("type") == "index_not_found_exception":
                    raise self.unknown_index()
                if delay is None or int(response.get("status", 503)) < 500:
                    raise StoreError(f"search on '{self.index}' failed: {_reason(response)}")
                retry.append(i)
            if not retry:
                break
            pending = retry
            time.sleep(delay)
        return [hits or [] for hits in out]

    def fusion_notice(self) -> str:
        """Why hybrid fusion runs client-side on this cluster (read once per Retriever)."""
        try:
            licence = self.client.license.get()["license"]["type"]
        except ApiError:
            return "the cluster licence is not readable here; ralm-es fuses the BM25 and kNN lists itself"
        if licence in ("enterprise", "trial"):
            return f"cluster licence {licence} allows the rrf retriever; ralm-es fuses client-side to keep each score"
        return f"cluster licence {licence}: the rrf and linear retrievers need Enterprise, so ralm-es fuses the lists"

    def info(self) -> IndexInfo:
        # The indices and their mappings read once: each read is a request.
        indices = self.concrete_indices()
        if not indices:
            raise self.unknown_index()
        found = self.client.indices.get_mapping(index=indices).body
        mappings = {name: entry["mappings"] for name, entry in found.items()}
        mapping = mappings[indices[-1]]
        meta = mapping.get("_meta") or {}
        dims = self._dims(mapping)
        others = [
            f"{name} ({spec.get('dims')} dims)"
            for name, spec in mapping.get("properties", {}).items()
            if spec.get("type") == "dense_vector" and name != self.fields.vector
        ]
        note = ""
        sizes = {name: self._dims(m) for name, m in mappings.items()}
        if len(set(sizes.values())) > 1:
            # A kNN search over the alias reaches every index behind it: one size, or its shards fail.
            listing = ", ".join(f"{name}: {size or 'none'}" for name, size in sorted(sizes.items()))
            dims, note = None, f"the indices behind it hold vectors of different sizes ({listing}); search one of them"
        elif dims is None and others:
            note = (
                f"no dense_vector field '{self.fields.vector}', but {', '.join(others)}: name it with --field "
                "vector=FIELD"
            )
        return IndexInfo(
            backend=self.name,
            index=self.index,
            count=self.count(),
            dims=dims,
            model=EncoderRecord.from_json(meta.get("model")),
            analyzer=meta.get("analyzer"),
            vector_note=note,
        )

    def health(self) -> StoreHealth:
        try:
            state = self.client.cluster.health().body
        except (ApiError, TransportError) as exc:
            return StoreHealth(reachable=False, error=type(exc).__name__)
        return StoreHealth(reachable=True, name=state["cluster_name"], status=state["status"])

    def list_indices(self) -> list[IndexListing]:
        rows = self.client.cat.indices(format="json", h="index,docs.count,health").body
        aliases = self.client.indices.get_alias(index="*").body
        mappings = self.client.indices.get_mapping(index="*").body
        out = []
        for row in sorted(rows, key=lambda r: r["index"]):
            name = row["index"]
            if name.startswith("."):
                continue
            names = sorted((aliases.get(name) or {}).get("aliases", {}))
            props = (mappings.get(name) or {}).get("mappings", {}).get("properties", {})
            docs = row.get("docs.count")
            out.append(
                IndexListing(
                    index=name,
                    docs=int(docs) if docs is not None else None,
                    health=row.get("health"),
                    aliases=names,
                    vectors={
                        f: int(p["dims"]) for f, p in props.items() if p.get("type") == "dense_vector" and "dims" in p
                    },
                    serving=self.index == name or self.index in names,
                )
            )
        return out


def _field_names(props: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """The dotted names of a mapping's leaf fields and their multi-fields."""
    for name, spec in props.items():
        path = f"{prefix}{name}"
        if "properties" in spec:
            yield from _field_names(spec["properties"], f"{path}.")
            continue
        yield path
        for sub in spec.get("fields", {}):
            yield f"{path}.{sub}"


def _source_value(source: dict[str, Any], path: str) -> Any:
    """A field's value in ``_source``: a key of that name, a path through objects (``content.body``), or a
    multi-field's parent (``body.english`` is searched, ``body`` is what is stored); None where there is none."""
    if path in source:
        return source[path]
    value: Any = source
    for part in path.split("."):
        if not isinstance(value, dict):
            break
        if part not in value:
            return None
        value = value[part]
    return value


def _vector_problem(p: Passage, dims: int | None) -> str | None:
    if dims is None:
        return None
    if p.vector is None:
        return f"passage {p.id} has no vector but the index expects {dims}-dimensional vectors"
    if len(p.vector) != dims:
        return f"passage {p.id} has a {len(p.vector)}-dimensional vector but the index expects {dims}"
    return None


def _transient(result: WriteResult) -> bool:
    return not result.ok and (result.status == 429 or result.status >= 500)


def request_needs_vectors(requests: Sequence[SearchRequest]) -> bool:
    return any(r.mode == "dense" for r in requests)


def _reason(result: dict[str, Any]) -> str:
    error = result.get("error")
    if not isinstance(error, dict):
        return str(error)
    reason = f"{error.get('type')}: {error.get('reason')}"
    # A search phase's error says only that shards failed ("all shards failed"); a failed shard's own reason, with
    # its index (one of several behind an alias), is what to fix.
    shards = [s for s in error.get("failed_shards") or [] if isinstance(s, dict) and isinstance(s.get("reason"), dict)]
    if shards and shards[0]["reason"].get("reason"):
        return reason + f" (index '{shards[0].get('index')}': {shards[0]['reason']['reason']})"
    cause = error.get("caused_by")
    if isinstance(cause, dict) and cause.get("reason"):
        reason += f" ({cause.get('reason')})"
    return reason
