"""The retrieval cache: JSONL with a header line, then one line per input with its top-k hits.

Training, evaluation and GPU machines read this file instead of the cluster, and the header proves which
retrieval (index, mode, k, fusion, encoder) produced it. Appending is resumable: inputs already present
are skipped by the writer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from textwrap import shorten
from typing import Any

from ralm_es.corpus.lines import iter_json_lines
from ralm_es.errors import RalmError
from ralm_es.retrieve.settings import recorded_ranking
from ralm_es.store.base import EncoderRecord

FORMAT = "ralm-es-retrieval-cache"
# A line holds k hits with their texts: far below this, which only a runaway line reaches.
MAX_LINE_BYTES = 1 << 26
VERSION = 1


class CacheError(RalmError):
    """A cache file that is unreadable, from another retrieval, or lacks inputs that were asked for."""


@dataclass
class CacheHeader:
    index: str
    mode: str
    k: int
    fusion: dict[str, Any] = field(default_factory=dict)
    # The encoder of the index's vectors, where dense search took part.
    encoder: EncoderRecord | None = None
    backend: str = "elasticsearch"
    exclude: str | None = None
    # Document context merged with retrieval: at most this many context passages come before the retrieved ones.
    context: int | None = None

    def __post_init__(self) -> None:
        # A header read from a file, or made by hand, without a single mode's ranking settings has the defaults.
        self.fusion = recorded_ranking(self.mode, self.fusion)

    def to_json(self) -> dict[str, Any]:
        encoder = self.encoder.to_json() if self.encoder else None
        return {"format": FORMAT, "version": VERSION, **asdict(self), "encoder": encoder}


@dataclass
class CacheHit:
    """One retrieved passage as a cache line keeps it. A live search's ``RetrievedHit`` is one of these, with the
    component ranks and metadata only a search has, so the model reads both alike."""

    id: str
    doc_id: str
    rank: int
    score: float
    scores: dict[str, float | None] = field(default_factory=dict)
    title: str = ""
    text: str = ""

    def to_cache(self) -> dict[str, Any]:
        """The cache line's ``hits`` entry: the fields above, nothing a subclass adds."""
        return {
            "id": self.id,
            "doc_id": self.doc_id,
            "rank": self.rank,
            "score": self.score,
            "scores": self.scores,
            "title": self.title,
            "text": self.text,
        }

    @classmethod
    def from_cache(cls, raw: Any, rank: int, where: str) -> CacheHit:
        """A hit read back; ``rank`` (its position) stands in for a missing rank, ``where`` is ``file:line``."""
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
            raise CacheError(f"{where}: hit {rank} needs a string id")
        # A damaged hit fails here with its place, not as a ValueError in whichever command reads it.
        if raw.get("rank") is not None and not _is_number(raw["rank"], int):
            raise CacheError(f"{where}: hit {rank} needs an integer rank, found {raw['rank']!r}")
        if raw.get("score") is not None and not _is_number(raw["score"]):
            raise CacheError(f"{where}: hit {rank} needs a finite number score, found {raw['score']!r}")
        scores = raw.get("scores") or {}
        if not isinstance(scores, dict) or not all(v is None or _is_number(v) for v in scores.values()):
            raise CacheError(f"{where}: hit {rank} needs scores as an object of finite numbers, found {scores!r}")
        return cls(
            id=raw["id"],
            doc_id=str(raw.get("doc_id") or ""),
            rank=int(raw.get("rank") or rank),
            score=float(raw.get("score") or 0.0),
            scores=dict(scores),
            title=str(raw.get("title") or ""),
            text=str(raw.get("text") or ""),
        )


def _is_number(value: Any, kind: type | tuple[type, ...] = (int, float)) -> bool:
    # JSON true/false load as bools, which are ints to isinstance; Python's json reads NaN and Infinity, which
    # would turn every loss and attention weight they reach into NaN.
    if not isinstance(value, kind) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer past what a float holds
        return False


@dataclass
class CacheEntry:
    """One input's line: its id, the query sent for it, and its hits best first."""

    input_id: str
    query: str
    hits: list[CacheHit]

    def answers(self, text: str) -> bool:
        """Whether these hits were retrieved for ``text`` (whitespace aside). An entry that records no query (a
        cache made by hand) cannot be checked and is taken as it is."""
        query = " ".join(self.query.split())
        return not query or query == " ".join(text.split())


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    # Lines as the corpus readers read them (a BOM dropped, each bad line named), but a bad last line without its
    # line ending is a tail torn by an interrupted run: the writer rewrites it on resume.
    for line in iter_json_lines(path, MAX_LINE_BYTES):
        if line.problem is not None:
            if not line.complete:
                return
            raise CacheError(f"{path}:{line.number}: {line.problem}")
        yield line.number, line.obj


def read_header(path: str | Path) -> CacheHeader:
    path = Path(path)
    for lineno, first in _lines(path):
        if first.get("format") != FORMAT:
            raise CacheError(f"{path}:{lineno}: not a ralm-es retrieval cache (no header line)")
        fields = {k: v for k, v in first.items() if k not in ("format", "version")}
        try:
            return CacheHeader(**{**fields, "encoder": EncoderRecord.from_json(fields.get("encoder"))})
        except (TypeError, ValueError) as exc:  # a field missing, unknown, or of the wrong shape
            raise CacheError(f"{path}:{lineno}: a cache header this version cannot read ({exc})") from None
    raise CacheError(f"{path}: empty retrieval cache")


def read_cache(path: str | Path, made_from: str | Path | None = None) -> tuple[CacheHeader, dict[str, CacheEntry]]:
    """The header and each input's entry by input id. A missing file fails naming the command that makes it,
    for the inputs ``made_from`` when the caller knows them."""
    path = Path(path)
    if not path.is_file():
        raise CacheError(
            f"{path}: no such retrieval cache; make it with "
            f"`ralm-es retrieve {made_from or 'INPUT'} --index INDEX --out {path}` (passages from an index) or "
            f"`ralm-es doc-context {made_from or 'INPUT'} --out {path}` (the input's own document)"
        )
    header = read_header(path)
    entries: dict[str, CacheEntry] = {}
    first_seen: dict[str, int] = {}
    for lineno, line in _lines(path):
        if line.get("format") == FORMAT:
            continue
        if "input_id" not in line or not isinstance(line.get("hits"), list):
            raise CacheError(f"{path}:{lineno}: a cache line needs input_id and a list of hits")
        where = f"{path}:{lineno}"
        hits = [CacheHit.from_cache(raw, i, where) for i, raw in enumerate(line["hits"], 1)]
        entry = CacheEntry(str(line["input_id"]), str(line.get("query") or ""), hits)
        # The writer skips inputs already done: a repeat is a damaged or concatenated file, neither line surely right.
        if entry.input_id in first_seen:
            raise CacheError(
                f"{where}: input_id {entry.input_id!r} again (first at line {first_seen[entry.input_id]}); "
                "a retrieval cache holds each input once"
            )
        first_seen[entry.input_id] = lineno
        entries[entry.input_id] = entry
    return header, entries


def require(entries: dict[str, CacheEntry], input_ids: list[str], path: str | Path) -> None:
    """Fail naming the examples that have no cache entry (at most ten shown)."""
    missing = [i for i in input_ids if i not in entries]
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise CacheError(
            f"{path}: no retrieval for {len(missing)} example(s): {shown}; run `ralm-es retrieve` for this data"
        )


class CacheWriter:
    """Append-only writer. Reopening a cache with the same header resumes: ``done`` holds finished ids, and
    ``cached`` tells an input the file already answers from one edited since."""

    def __init__(self, path: str | Path, header: CacheHeader) -> None:
        self.path = Path(path)
        self.done: set[str] = set()
        self._resumed: dict[str, CacheEntry] = {}
        if self.path.exists() and self.path.stat().st_size:
            existing = read_header(self.path)
            if existing != header:
                raise CacheError(
                    f"{self.path} was made by another retrieval ({existing}); use a new --out or delete it"
                )
            # Before reading what is done: a last line without its newline (the run stopped mid-write) is cut off
            # even when it parses, so its input counts as not done and is retrieved again.
            self._truncate_torn_tail()
            _, entries = read_cache(self.path)
            self.done = set(entries)
            self._resumed = entries
            self._fh = self.path.open("a", encoding="utf-8")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("w", encoding="utf-8")
            self._fh.write(json.dumps(header.to_json()) + "\n")
            self._fh.flush()

    def _truncate_torn_tail(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            self.path.write_bytes(data[: data.rfind(b"\n") + 1])

    def cached(self, input_id: str, text: str, where: str) -> bool:
        """Whether the file this run resumes already answers input ``input_id`` (read at ``where``) for ``text``. The
        same id with other text is an input edited since, whose cached passages answer the old text: refused."""
        entry = self._resumed.get(input_id)
        if entry is None:
            return False
        if not entry.answers(text):
            raise CacheError(
                f"{self.path}: input {input_id} was retrieved for {shorten(entry.query, 60)!r}, but {where} now reads "
                f"{shorten(text, 60)!r}; the input changed since, so use a new --out or delete it"
            )
        return True

    def write(self, input_id: str, query: str, hits: Sequence[CacheHit]) -> None:
        line = {"input_id": input_id, "query": query, "hits": [hit.to_cache() for hit in hits]}
        self._fh.write(json.dumps(line, ensure_ascii=False) + "\n")
        self.done.add(input_id)

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
