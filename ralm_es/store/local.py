"""The local passage store: an index in a folder, for laptops with no cluster.

Layout of the folder:
- ``meta.json``: the :class:`IndexSpec` it was created with (dims, similarity, model).
- ``passages.jsonl``: one passage per line, append-only; line ``i`` is row ``i``.
- ``vectors.f32``: row-aligned unit vectors as raw float32, read through ``numpy.memmap``.

A write batch appends its vectors, fsyncs, then appends its lines and fsyncs, so after a crash the vector
file is never behind the passage file. On reopen a torn last line and vectors beyond the last passage are
ignored, and cut off before the next write. Threads may share an instance; one process writes at a time.

Search mirrors the Elasticsearch backend: BM25 (rank-bm25 with Lucene's idf and k1=1.2) scores ``title``
and ``text`` separately and keeps the better of ``title_boost * title`` and ``text`` (``best_fields``);
dense search is exact cosine, scored ``(1 + cos) / 2`` as Elasticsearch does. Filters apply to
``metadata`` and ``exclude_ids`` to passage ids, in both modes.
"""

from __future__ import annotations

import contextlib
import json
import math
import operator
import os
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

import numpy as np
from rank_bm25 import BM25Okapi
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

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
    IndexSettings,
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

FORMAT = "ralm-es-local-index"
VERSION = 1
META, PASSAGES, VECTORS = "meta.json", "passages.jsonl", "vectors.f32"
INDEX_SETTINGS = [f.name for f in dataclass_fields(IndexSettings)]
# Settings that only Elasticsearch reads: given to the local backend, they are refused rather than ignored.
ELASTICSEARCH_INDEX = ("index_type", "m", "ef_construction", "shards", "replicas")
NETWORK_BULK = ("bytes", "retries", "backoff")
SIMILARITIES = ("cosine", "dot_product")  # both rank unit vectors by their dot product
SCORE_BUDGET = 1 << 24  # query-by-row scores held at once by search_many (64 MB of float32)
RANGE_OPS = {"gte": operator.ge, "gt": operator.gt, "lte": operator.le, "lt": operator.lt}
TOKEN = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    """Lowercase words without English stop words (the local stand-in for the ``english`` analyzer)."""
    return [t for t in TOKEN.findall(text.lower()) if t not in ENGLISH_STOP_WORDS]


class LuceneBM25(BM25Okapi):
    """BM25Okapi with Lucene's idf, which stays positive, so small corpora rank as Elasticsearch does."""

    def _calc_idf(self, nd: dict[str, int]) -> None:
        for word, freq in nd.items():
            self.idf[word] = math.log(1 + (self.corpus_size - freq + 0.5) / (freq + 0.5))


@dataclass
class LexicalField:
    """BM25 statistics of one field and its postings (token -> rows), to score only matching rows."""

    bm25: LuceneBM25
    postings: dict[str, list[int]]

    @classmethod
    def build(cls, texts: list[str]) -> LexicalField | None:
        tokens = [tokenize(t) for t in texts]
        if not any(tokens):
            return None
        bm25 = LuceneBM25(tokens, k1=1.2, b=0.75)
        postings: dict[str, list[int]] = {}
        for row, freqs in enumerate(bm25.doc_freqs):
            for token in freqs:
                postings.setdefault(token, []).append(row)
        return cls(bm25, postings)

    def scores(self, tokens: list[str], rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.bm25.get_batch_scores(tokens, rows.tolist()), dtype=np.float64)

    def matching(self, tokens: list[str]) -> set[int]:
        return {row for t in tokens for row in self.postings.get(t, ())}


def _same(stored: Any, wanted: Any) -> bool:
    # Elasticsearch coerces between keyword and numeric terms ("5" matches 5); so do we.
    return stored == wanted or str(stored) == str(wanted)


def _in_range(stored: Any, bounds: dict[str, Any]) -> bool:
    try:
        return all(RANGE_OPS[key](stored, bound) for key, bound in bounds.items())
    except TypeError:  # a value of another type (text vs number) is outside any range, as an unmapped field would be
        return False


def _matches(metadata: dict[str, Any], f: Filter) -> bool:
    if f.field not in metadata:
        return False
    stored = metadata[f.field]
    values = stored if isinstance(stored, list) else [stored]
    if f.kind == "term":
        return any(_same(v, f.value) for v in values)
    if f.kind == "terms":
        return any(_same(v, w) for v in values for w in f.value)
    return any(_in_range(v, f.value) for v in values)


def _fsync_append(path: Path, data: bytes) -> None:
    with path.open("ab") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _changed(section: str, given: Any, default: Any, names: Sequence[str]) -> str:
    """``section.name=value`` for each of ``names`` whose value in ``given`` is not the default's."""
    return ", ".join(
        f"{section}.{name}={getattr(given, name)}" for name in names if getattr(given, name) != getattr(default, name)
    )


class LocalBackend:
    """Passages, BM25 statistics and vectors in the folder ``path``."""

    name = "local"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.index = str(self.path)
        self._spec: IndexSpec | None = None
        self._rows: list[dict[str, Any]] | None = None
        self._ids: dict[str, int] = {}
        self._passage_bytes = 0
        self._text: LexicalField | None = None
        self._title: LexicalField | None = None
        self._lexical_stale = True
        self._matrix: np.ndarray | None = None
        # Ingest writes from worker threads while it asks which ids are stored; state changes under this lock.
        self._lock = threading.RLock()

    # -- index -----------------------------------------------------------------------------------------
    def ensure_index(self, spec: IndexSpec) -> None:
        """Create the folder with ``meta.json``, or check that an existing one holds vectors of ``spec.dims``."""
        with self._lock:
            self._ensure_index(spec)

    def check_bulk(self, bulk: BulkSettings) -> None:
        if networked := _changed("bulk", bulk, DEFAULT_BULK, NETWORK_BULK):
            raise StoreError(f"{networked} concern bulk requests to Elasticsearch; a local index has none")

    def _ensure_index(self, spec: IndexSpec) -> None:
        if spec.settings.similarity not in SIMILARITIES:
            raise StoreError(
                f"the local backend supports similarity {' or '.join(SIMILARITIES)}, not {spec.settings.similarity}"
            )
        if shaped := _changed("index", spec.settings, IndexSettings(), ELASTICSEARCH_INDEX):
            raise StoreError(
                f"{shaped} shape an Elasticsearch index; the local backend has one folder and searches every "
                "vector exactly: leave them out with --backend local"
            )
        if (self.path / META).exists():
            stored = self.spec()
            where = f"local index {self.path}"
            check_dims(where, stored.dims, spec.dims, "a new index folder")
            check_shape(where, spec, stored.model, stored.chunking)
            if stored.dims is not None:
                check_index_settings(where, spec.settings, {"similarity": stored.settings.similarity})
            return
        if self.path.is_dir() and any(self.path.iterdir()):
            raise StoreError(f"{self.path} is not empty and holds no {META}: not a ralm-es local index")
        self.path.mkdir(parents=True, exist_ok=True)
        for name in (PASSAGES, VECTORS):
            (self.path / name).touch()
        stored = {**asdict(spec), "model": spec.model.to_json() if spec.model else None}
        self._write_meta({"format": FORMAT, "version": VERSION, "spec": stored})
        self._spec = spec

    def _write_meta(self, meta: dict[str, Any]) -> None:
        """Replace ``meta.json`` atomically and durably."""
        tmp = self.path / f"{META}.tmp"
        tmp.write_text(json.dumps(meta, indent=2))
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.path / META)
        dir_fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _read_meta(self) -> dict[str, Any]:
        meta_path = self.path / META
        if not meta_path.exists():
            raise StoreError(f"no local index at {self.path} (no {META}); ingest into it first")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise StoreError(f"{meta_path}: not a ralm-es local index ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise StoreError(f"{meta_path}: not a ralm-es local index (format is not {FORMAT!r})")
        return meta

    def fusion_notice(self) -> str:
        return "the local backend fuses the BM25 and dense lists in ralm-es"

    def request_body(self, request: SearchRequest) -> dict[str, Any]:
        raise StoreError(f"local index {self.path} sends no Elasticsearch requests; --explain-dsl needs an index")

    def tuned_settings(self) -> dict[str, Any]:
        return dict(self._read_meta().get("retrieval") or {})

    def record_tuned_settings(self, settings: dict[str, Any]) -> None:
        with self._lock:
            self._write_meta({**self._read_meta(), "retrieval": settings})

    def staging(self, spec: IndexSpec, resume: str | None = None) -> LocalBackend:
        raise StoreError("--reindex needs the Elasticsearch backend; ingest into a new local index folder instead")

    def swap_alias(self, staged: str, drop_old: bool) -> list[str]:
        raise StoreError("a local index has no alias to swap")

    def refresh_interval(self) -> Refresh:
        return Refresh(None)

    def bulk_load(self, before: Refresh) -> contextlib.AbstractContextManager[None]:
        # Every write batch is searchable once it is on disk: there is no refresh to pause.
        return contextlib.nullcontext()

    def spec(self) -> IndexSpec:
        if self._spec is None:
            meta = self._read_meta()
            try:
                fields = dict(meta["spec"])
                if fields.get("chunking") is not None:
                    fields["chunking"] = Chunking(**fields["chunking"])
                fields["model"] = EncoderRecord.from_json(fields.get("model"))
                # Folders written before the index settings were a section of their own keep them flat.
                built = fields.pop("settings", None) or {
                    name: fields.pop(name) for name in INDEX_SETTINGS if name in fields
                }
                self._spec = IndexSpec(**fields, settings=IndexSettings(**built))
            except (ValueError, KeyError, TypeError) as exc:
                raise StoreError(f"{self.path / META}: not a ralm-es local index ({exc})") from None
        return self._spec

    # -- loading and recovery --------------------------------------------------------------------------
    def _load(self) -> list[dict[str, Any]]:
        """Rows on disk, ignoring a torn last line and passages whose vector never reached the disk."""
        if self._rows is not None:
            return self._rows
        spec = self.spec()
        path = self.path / PASSAGES
        data = path.read_bytes() if path.exists() else b""
        rows: list[dict[str, Any]] = []
        offsets: list[int] = []
        end = 0
        # The piece after the last newline is empty, or a line torn by a crash: cut off before the next write.
        for lineno, line in enumerate(data.split(b"\n")[:-1], 1):
            try:
                rows.append(json.loads(line))
            except ValueError:
                raise StoreError(f"{path}:{lineno}: corrupt passage record") from None
            end += len(line) + 1
            offsets.append(end)
        if spec.dims is not None:
            vector_rows = (self.path / VECTORS).stat().st_size // (4 * spec.dims)
            rows = rows[:vector_rows]
        self._passage_bytes = offsets[len(rows) - 1] if rows else 0
        self._rows = rows
        self._ids = {row["id"]: i for i, row in enumerate(rows)}
        return rows

    def _repair(self) -> None:
        """Cut the files back to the rows loaded, so appends start on a clean boundary."""
        rows = self._load()
        spec = self.spec()
        if (self.path / PASSAGES).stat().st_size != self._passage_bytes:
            os.truncate(self.path / PASSAGES, self._passage_bytes)
        if spec.dims is not None and (self.path / VECTORS).stat().st_size != len(rows) * spec.dims * 4:
            os.truncate(self.path / VECTORS, len(rows) * spec.dims * 4)

    # -- writing ---------------------------------------------------------------------------------------
    def _check(self, p: Passage) -> tuple[bytes, np.ndarray | None]:
        """The passage's JSON line and unit vector; ValueError says why it cannot be stored."""
        dims = self.spec().dims
        vector = None
        if dims is None and p.vector is not None:
            raise ValueError(f"passage has a vector but local index {self.path} stores none (BM25 only)")
        if dims is not None:
            if p.vector is None:
                raise ValueError(f"passage has no vector but local index {self.path} stores {dims}-dimensional ones")
            if len(p.vector) != dims:
                raise ValueError(f"vector has {len(p.vector)} dimensions but the index expects {dims}")
            vector = np.asarray(p.vector, dtype=np.float64)
            norm = float(np.linalg.norm(vector))
            if not math.isfinite(norm) or norm == 0:
                raise ValueError("vector is zero or not finite; cosine similarity is undefined for it")
            vector = (vector / norm).astype(np.float32)
        record = {
            "id": p.id,
            "doc_id": p.doc_id,
            "chunk": p.chunk,
            "title": p.title,
            "text": p.text,
            "start": p.start,
            "end": p.end,
            "source": p.source,
            "metadata": p.metadata,
        }
        try:
            line = json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n"
        except (TypeError, ValueError) as exc:
            raise ValueError(f"metadata is not JSON-serialisable: {exc}") from None
        return line, vector

    def write(self, passages: Iterable[Passage], bulk: BulkSettings = DEFAULT_BULK) -> Iterator[WriteResult]:
        """Append new passages, ``bulk.docs`` a durable batch; one result per passage, yielded once its batch is on
        disk. A write to a local folder has no request size or passing failure to retry: the other bulk settings
        concern the network, and are refused where they are given."""
        self.check_bulk(bulk)
        batch: list[Passage] = []
        for p in passages:
            batch.append(p)
            if len(batch) >= bulk.docs:
                yield from self._write_batch(batch)
                batch = []
        yield from self._write_batch(batch)

    def _write_batch(self, batch: list[Passage]) -> list[WriteResult]:
        with self._lock:
            self._repair()
            results: list[WriteResult] = []
            lines: list[bytes] = []
            vectors: list[np.ndarray] = []
            pending: set[str] = set()
            for p in batch:
                if p.id in self._ids or p.id in pending:
                    results.append(WriteResult(p.id, p.source, ok=True, created=False, status=409))
                    continue
                try:
                    line, vector = self._check(p)
                except ValueError as exc:
                    results.append(WriteResult(p.id, p.source, ok=False, error=str(exc), status=400))
                    continue
                pending.add(p.id)
                lines.append(line)
                if vector is not None:
                    vectors.append(vector)
                results.append(WriteResult(p.id, p.source, ok=True, created=True, status=201))
            self._append(lines, vectors)
            return results

    def _append(self, lines: list[bytes], vectors: list[np.ndarray]) -> None:
        if not lines:
            return
        if vectors:  # vectors first: a crash between the two leaves extra vectors, never missing ones
            _fsync_append(self.path / VECTORS, np.stack(vectors).tobytes())
        data = b"".join(lines)
        _fsync_append(self.path / PASSAGES, data)
        rows = self._load()
        for line in lines:
            row = json.loads(line)
            self._ids[row["id"]] = len(rows)
            rows.append(row)
        self._passage_bytes += len(data)
        self._lexical_stale = True
        self._matrix = None

    # -- reading ---------------------------------------------------------------------------------------
    def count(self) -> int:
        with self._lock:
            return len(self._load())

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        with self._lock:
            self._load()
            return {i for i in ids if i in self._ids}

    def _vectors(self) -> np.ndarray:
        if self._matrix is None:
            dims = self.spec().dims
            if dims is None:
                raise StoreError(f"local index {self.path} has no vectors, so dense search is not possible")
            n = len(self._load())
            if n == 0:
                self._matrix = np.empty((0, dims), dtype=np.float32)
            else:
                self._matrix = np.memmap(self.path / VECTORS, dtype=np.float32, mode="r", shape=(n, dims))
        return self._matrix

    def _lexical(self) -> tuple[LexicalField | None, LexicalField | None]:
        if self._lexical_stale:
            rows = self._load()
            self._text = LexicalField.build([r["text"] for r in rows])
            self._title = LexicalField.build([r.get("title") or "" for r in rows])
            self._lexical_stale = False
        return self._text, self._title

    def _allowed(self, request: SearchRequest) -> np.ndarray:
        """Rows that pass the request's filters and exclusions."""
        rows = self._load()
        excluded = {self._ids[i] for i in request.exclude_ids if i in self._ids}
        if not request.filters:
            keep = np.ones(len(rows), dtype=bool)
        else:
            keep = np.fromiter(
                (all(_matches(r.get("metadata") or {}, f) for f in request.filters) for r in rows),
                dtype=bool,
                count=len(rows),
            )
        keep[list(excluded)] = False
        return keep

    def _hit(self, row: int, score: float, bodies: bool = True) -> Hit:
        data = self._load()[row]
        if not bodies:
            return Hit(id=data["id"], doc_id=str(data["doc_id"]), score=score, complete=False)
        return Hit(
            id=data["id"],
            doc_id=str(data["doc_id"]),
            score=score,
            text=data["text"],
            title=data.get("title") or "",
            metadata=dict(data.get("metadata") or {}),
        )

    def _hits(self, rows: np.ndarray, scores: np.ndarray, request: SearchRequest) -> list[Hit]:
        """The best ``request.k`` of ``rows`` by score, ties in insertion order."""
        k = request.k
        if k <= 0 or rows.size == 0:
            return []
        if rows.size > k:
            threshold = np.partition(scores, rows.size - k)[rows.size - k]
            top = scores >= threshold
            rows, scores = rows[top], scores[top]
        order = np.lexsort((rows, -scores))[:k]
        return [self._hit(int(rows[j]), float(scores[j]), request.bodies) for j in order]

    def _bm25(self, request: SearchRequest) -> list[Hit]:
        tokens = tokenize(request.text)
        text, title = self._lexical()
        matching = set().union(*(f.matching(tokens) for f in (text, title) if f is not None))
        allowed = self._allowed(request)
        rows = np.array(sorted(r for r in matching if allowed[r]), dtype=np.int64)
        if rows.size == 0:
            return []
        scores = text.scores(tokens, rows) if text is not None else np.zeros(rows.size)
        if title is not None:
            scores = np.maximum(scores, request.title_boost * title.scores(tokens, rows))
        return self._hits(rows, scores, request)

    def _query_matrix(self, requests: Sequence[SearchRequest]) -> np.ndarray:
        dims = self._vectors().shape[1]
        queries = np.empty((len(requests), dims), dtype=np.float32)
        for i, request in enumerate(requests):
            if request.vector is None:
                raise StoreError("dense search needs a query vector")
            if len(request.vector) != dims:
                raise StoreError(
                    f"query vector has {len(request.vector)} dimensions but local index {self.path} holds {dims}"
                )
            vector = np.asarray(request.vector, dtype=np.float64)
            norm = float(np.linalg.norm(vector))
            if not math.isfinite(norm) or norm == 0:
                raise StoreError("query vector is zero or not finite; cosine similarity is undefined for it")
            queries[i] = vector / norm
        return queries

    def search(self, request: SearchRequest) -> list[Hit]:
        return self.search_many([request])[0]

    def search_many(self, requests: Sequence[SearchRequest]) -> list[list[Hit]]:
        """One hit list per request; the dense ones share matrix products, ``SCORE_BUDGET`` scores at a time."""
        with self._lock:
            return self._search_many(requests)

    def _search_many(self, requests: Sequence[SearchRequest]) -> list[list[Hit]]:
        if wanted := filter_fields(requests):
            known = {name for row in self._load() for name in row.get("metadata") or {}}
            check_filter_fields(f"index '{self.index}'", wanted, known)
        out: list[list[Hit]] = [[] for _ in requests]
        dense = [i for i, r in enumerate(requests) if r.mode == "dense"]
        for i, request in enumerate(requests):
            if request.mode == "bm25":
                out[i] = self._bm25(request)
            elif request.mode != "dense":
                raise StoreError(f"unknown search mode '{request.mode}' (use bm25 or dense)")
        if not dense:
            return out
        matrix = self._vectors()
        queries = self._query_matrix([requests[i] for i in dense])
        step = max(1, SCORE_BUDGET // max(1, matrix.shape[0]))
        for start in range(0, len(dense), step):
            block = (1 + queries[start : start + step] @ matrix.T) / 2
            for scores, i in zip(block, dense[start : start + step], strict=True):
                rows = np.flatnonzero(self._allowed(requests[i]))
                out[i] = self._hits(rows, scores[rows].astype(np.float64), requests[i])
        return out

    def fetch(self, ids: Sequence[str]) -> dict[str, Hit]:
        with self._lock:
            self._load()
            return {i: self._hit(self._ids[i], 0.0) for i in dict.fromkeys(ids) if i in self._ids}

    def info(self) -> IndexInfo:
        spec = self.spec()
        return IndexInfo(
            backend=self.name,
            index=str(self.path),
            count=self.count(),
            dims=spec.dims,
            model=spec.model,
        )

    def health(self) -> StoreHealth:
        if not self.path.is_dir():
            return StoreHealth(reachable=False, name=str(self.path), error="no such folder")
        return StoreHealth(reachable=True, name=str(self.path))

    def list_indices(self) -> list[IndexListing]:
        dims = self.spec().dims
        vectors = {"vector": dims} if dims else {}
        return [IndexListing(self.index, self.count(), None, [], vectors, serving=True)]
