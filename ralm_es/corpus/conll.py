"""CoNLL column files (``token POS chunk NER``, ``-DOCSTART-`` between documents, blank lines between sentences)
read as sentences with deterministic ids, shared by the corpus reader and the NER task so both name a sentence
the same way."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ralm_es.corpus.lines import iter_lines
from ralm_es.corpus.types import ReadError

DOCSTART = "-DOCSTART-"
TAG = re.compile(r"^(O|[BIES]-\S+)$")
MAX_LINE_BYTES = 1 << 16


def conll_stem(file: str | Path) -> str:
    """``train`` for ``data/train.txt`` and ``data/train.txt.gz``."""
    return Path(Path(file).name.removesuffix(".gz")).stem


def conll_sentence_id(file: str | Path, doc: int, sentence: int) -> str:
    """The id of sentence ``sentence`` (0-based, within its document) of document ``doc`` (0-based) of ``file``."""
    return f"{conll_stem(file)}-d{doc}-s{sentence}"


@dataclass(frozen=True)
class ConllSentence:
    """One sentence: its tokens and, per token, the other columns (POS, chunk, NER for CoNLL-2003)."""

    id: str
    doc: int
    index: int
    tokens: tuple[str, ...]
    columns: tuple[tuple[str, ...], ...]
    source: str

    @property
    def labels(self) -> tuple[str, ...]:
        """The last column of each token: the NER tag in CoNLL-2003."""
        return tuple(cols[-1] for cols in self.columns)


def looks_like_conll(lines: Sequence[str]) -> bool:
    """A ``-DOCSTART-`` line, or lines of two or more columns whose last column is an IOB tag."""
    if not lines:
        return False
    if lines[0].startswith(DOCSTART):
        return True
    return all(len(parts := line.split()) >= 2 and TAG.match(parts[-1]) for line in lines)


def read_conll(path: Path, columns: int | None = None) -> Iterator[ConllSentence | ReadError]:
    """Sentences of ``path`` in order. ``columns`` is the expected column count, by default the one most lines of
    the first sentence have (one, for a file of tokens alone, as predict reads). A sentence with a bad line (wrong
    column count, invalid UTF-8) becomes a ``ReadError`` at that line and still takes its index, so the ids of the
    sentences after it do not shift."""
    doc, index, doc_open = 0, 0, False
    rows: list[list[str]] = []
    # Line number and text of each row while the column count is not known yet, to name a short line then.
    held: list[tuple[int, str]] = []
    start = 0
    error: ReadError | None = None

    def finish() -> ConllSentence | ReadError:
        nonlocal columns
        if columns is None and rows:
            # The count most of its lines have (the wider on a tie), so a line missing its tag, or with one column
            # too many, is that line's error rather than every other's.
            counts = Counter(len(row) for row in rows)
            columns = max(counts, key=lambda n: (counts[n], n))
            short = [(number, text, len(row)) for row, (number, text) in zip(rows, held, strict=True)]
            bad = next((s for s in short if s[2] != columns), None)
            if bad is not None and error is None:
                return ReadError(f"{path}:{bad[0]}", f"expected {columns} columns, found {bad[2]}: {bad[1][:80]!r}")
        if error is not None:
            return error
        return ConllSentence(
            id=conll_sentence_id(path, doc, index),
            doc=doc,
            index=index,
            tokens=tuple(row[0] for row in rows),
            columns=tuple(tuple(row[1:]) for row in rows),
            source=f"{path}:{start}",
        )

    for line in iter_lines(path, MAX_LINE_BYTES):
        parts = line.text.split()
        if line.problem is None and (not parts or parts[0] == DOCSTART):
            if rows or error:
                yield finish()
                index += 1
                rows, held, error = [], [], None
            if parts:
                if doc_open:
                    doc += 1
                doc_open, index = True, 0
            continue
        if not rows and error is None:
            start, doc_open = line.number, True
        if line.problem is not None:
            error = error or ReadError(f"{path}:{line.number}", line.problem)
            continue
        if columns is None:
            held.append((line.number, line.text))
        elif len(parts) != columns:
            error = error or ReadError(
                f"{path}:{line.number}", f"expected {columns} columns, found {len(parts)}: {line.text[:80]!r}"
            )
        rows.append(parts)
    if rows or error:
        yield finish()
