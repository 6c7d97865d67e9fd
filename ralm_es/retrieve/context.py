"""Document context as a retrieval source: for each sentence of a CoNLL file, the other sentences of its own
document, nearest first. They are unlabeled text that is there at prediction time too (a news story arrives
whole); a sentence never gets itself, and labels are never read (the reader drops them).

The result is an ordinary retrieval cache, so training and prediction read it as they read cross-document
retrieval; ``merge`` puts context first and fills the rest of the k slots from a cross-document cache.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from ralm_es.corpus.conll import DOCSTART, MAX_LINE_BYTES
from ralm_es.corpus.lines import iter_lines
from ralm_es.corpus.readers import CorpusError, ReadOptions, detect_format, read_corpus
from ralm_es.corpus.types import ReadError, Record
from ralm_es.retrieve.cache import CacheEntry, CacheHeader, CacheHit

SOURCE = "document-context"
NEEDS = "document context needs a CoNLL file (a token and its tags a line, -DOCSTART- between documents)"
# A word with a sentence mark closing it: how a line of prose ends, and no tag does.
PROSE_END = re.compile(r"[^\W\d_]{2,}[.!?]$")


def document_context(path: str | Path, k: int) -> Iterator[CacheEntry | ReadError]:
    """One entry per readable sentence: up to ``k`` other sentences of its document, ordered by distance (the one
    before, then the one after, then two before ...), each scored ``1 / distance``. ``k`` and the file's format
    are checked here, before anything is read or written."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    # A structured file would be read as one long "sentence" of mismatched columns; say what it is instead.
    # "text" stays allowed: a CoNLL file whose first line is bad, or of tokens alone, sniffs as text.
    if (found := detect_format(Path(path))) not in ("conll", "text"):
        raise CorpusError(f"{path} reads as {found}, not CoNLL: {NEEDS}")
    _check_lines(Path(path))
    return _entries(path, k)


def _check_lines(path: Path) -> None:
    """Refuse prose and a file without sentences before anything is written. Read as CoNLL, each line of prose
    would be a token row whose first word is the token, so a paragraph would become a "sentence" of first words.
    A CoNLL line's last column is a tag (NER, POS or chunk: ``B-PER``, ``NNP``, ``.``), never a word closed by a
    sentence mark, as a line of prose ends; a lone token is a CoNLL line too (a file of tokens alone, as predict
    reads). Other bad lines (wrong column count, invalid UTF-8) are left to the reader, which reports each."""
    empty = True
    for line in iter_lines(path, MAX_LINE_BYTES):
        parts = line.text.split()
        if line.problem is None and (not parts or parts[0] == DOCSTART):
            continue
        empty = False
        if line.problem is None and len(parts) > 1 and PROSE_END.search(parts[-1]):
            raise CorpusError(
                f"{path}:{line.number}: {line.text[:80]!r} reads as prose, not a CoNLL line (a token, then its "
                f"tags): {NEEDS}"
            )
    if empty:
        raise CorpusError(f"{path} holds no sentence: {NEEDS}")


def _entries(path: str | Path, k: int) -> Iterator[CacheEntry | ReadError]:
    documents: dict[object, list[Record]] = {}
    order: list[Record | ReadError] = []
    for item in read_corpus(path, ReadOptions(format="conll")):
        order.append(item)
        if isinstance(item, Record):
            documents.setdefault(item.metadata["doc_id"], []).append(item)
    for item in order:
        if isinstance(item, ReadError):
            yield item
            continue
        sentences = documents[item.metadata["doc_id"]]
        here = sentences.index(item)
        others = sorted(
            (s for i, s in enumerate(sentences) if i != here),
            key=lambda s: (abs(s.metadata["sentence"] - item.metadata["sentence"]), s.metadata["sentence"]),
        )[:k]
        hits = [
            CacheHit(
                id=s.id,
                doc_id=s.id,
                rank=rank,
                score=1.0 / abs(s.metadata["sentence"] - item.metadata["sentence"]),
                scores={"context": float(abs(s.metadata["sentence"] - item.metadata["sentence"]))},
                text=s.text,
            )
            for rank, s in enumerate(others, 1)
        ]
        yield CacheEntry(item.id, item.text, hits)


def context_header(k: int, merged: CacheHeader | None, most: int | None = None) -> CacheHeader:
    """The header of a context cache, or of context (at most ``most`` passages of it) merged with the
    cross-document cache ``merged``."""
    if merged is None:
        return CacheHeader(index=SOURCE, mode=SOURCE, k=k, backend="none")
    return replace(merged, mode=f"{SOURCE}+{merged.mode}", k=k, context=most)


def merge(context: CacheEntry, retrieved: CacheEntry | None, k: int, most: int | None = None) -> list[CacheHit]:
    """Context hits first (the nearest ``most`` of them, all when None), then the retrieved ones not already there
    (by id), ``k`` in all, ranked anew."""
    hits = context.hits[:most]
    seen = {h.id for h in hits}
    hits += [h for h in (retrieved.hits if retrieved else []) if h.id not in seen]
    return [replace(h, rank=rank) for rank, h in enumerate(hits[:k], 1)]
