"""Streaming corpus readers: JSONL, BEIR, CSV/TSV, plain text, CoNLL, each optionally gzipped, behind one
``read_corpus``. Records carry ``file:line``; bad input becomes a ``ReadError`` and the stream goes on."""

from __future__ import annotations

import codecs
import csv
import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from ralm_es.config import ConfigError, check_bounds, check_choices
from ralm_es.corpus.conll import looks_like_conll, read_conll
from ralm_es.corpus.lines import head_bytes, iter_json_lines, iter_lines
from ralm_es.corpus.types import ReadError, Record
from ralm_es.errors import RalmError

Format = Literal["auto", "jsonl", "beir", "csv", "tsv", "text", "conll"]
Unit = Literal["paragraph", "file"]
FORMATS: tuple[str, ...] = get_args(Format)
DEFAULT_MAX_CHARS = 1_000_000
# A longer record could never be indexed: Elasticsearch takes no HTTP request body over Integer.MAX_VALUE bytes
# (the ceiling of ``http.max_content_length``). The cap also keeps line and CSV field limits within a C long.
MAX_CHARS_CEILING = 2**31 - 1
DEFAULT_ID_FIELDS = ("_id", "id")
SUFFIX_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv", ".conll": "conll"}
BEIR_CORPUS = ("corpus.jsonl", "corpus.jsonl.gz")
SNIFF_LINES = 5


class CorpusError(RalmError):
    """A corpus path that cannot be read at all (missing, unknown or undecidable format); names the file."""


@dataclass(frozen=True)
class ReadOptions:
    """How records are found in the inputs. ``format`` ``auto`` decides per file (suffix, then content);
    ``id_field=None`` tries ``_id`` then ``id``; ``metadata_fields=None`` keeps the ``metadata`` object of JSON
    records and the remaining columns of CSV/TSV rows; ``unit`` cuts plain text per paragraph or per file;
    a record whose text is over ``max_chars`` characters is refused."""

    format: Format = "auto"
    id_field: str | None = None
    text_field: str = "text"
    title_field: str = "title"
    metadata_fields: list[str] | None = None
    unit: Unit = "paragraph"
    max_chars: int = DEFAULT_MAX_CHARS

    def __post_init__(self) -> None:
        check_choices("read", self, ("format", "unit"))
        check_bounds("read", self, ("max_chars",), 1)
        if self.max_chars > MAX_CHARS_CEILING:
            raise ConfigError(
                f"read.max_chars must be at most {MAX_CHARS_CEILING} (Elasticsearch takes no request over 2 GiB), "
                f"got {self.max_chars}"
            )

    @property
    def id_fields(self) -> tuple[str, ...]:
        return DEFAULT_ID_FIELDS if self.id_field is None else (self.id_field,)

    @property
    def max_line_bytes(self) -> int:
        # Room for JSON escapes (\uXXXX is 6 bytes a character) plus title and metadata; past this a line cannot
        # hold a record within the limit, so it is not kept in memory at all.
        return 6 * self.max_chars + (1 << 20)


def content_id(text: str) -> str:
    """The id of a record that has none: the first 16 hex digits of the SHA-1 of its text."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def read_corpus(
    paths: str | Path | Sequence[str | Path], options: ReadOptions = ReadOptions()
) -> Iterator[Record | ReadError]:
    """Stream the records of one or more files or folders, in order. Every path and the format of every file are
    checked before the first record is read, so a missing path, a file given twice or an undecidable file raises
    ``CorpusError`` here, not mid-ingest. Ids are unique over all the inputs together: a repeated id is a
    ``ReadError`` at the repeat that names the first place, whichever file either is in."""
    return _checked(plan_inputs(paths, options), options)


def plan_inputs(paths: str | Path | Sequence[str | Path], options: ReadOptions) -> list[tuple[Path, str, str]]:
    """``plan_files`` over every input path; a file reached twice (named twice, or also inside a folder given) is a
    ``CorpusError``: reading it twice would make every record of it a duplicate of itself."""
    roots = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    if not roots:
        raise CorpusError("no corpus path given")
    plan: list[tuple[Path, str, str]] = []
    reached: dict[Path, Path] = {}
    for root in roots:
        for file, fmt, name in plan_files(root, options.format, options.text_field):
            key = file.resolve()
            if key in reached:
                raise CorpusError(f"{file} would be read twice (via {reached[key]} and {root}); give each input once")
            reached[key] = root
            plan.append((file, fmt, name))
    return plan


def plan_files(root: Path, format: str, text_field: str = "text") -> list[tuple[Path, str, str]]:
    """``(file, format, name)`` for every file to read under ``root``; ``name`` (relative to a folder ``root``)
    is what plain-text ids are made of."""
    if root.is_file():
        return [(root, _file_format(root, format, text_field), root.name)]
    if not root.is_dir():
        raise CorpusError(f"corpus path {root} does not exist")
    if format in ("auto", "beir"):
        for name in BEIR_CORPUS:
            if (root / name).is_file():
                return [(root / name, "jsonl", name)]
        if format == "beir":
            raise CorpusError(f"{root} is not a BEIR folder: it has no {' or '.join(BEIR_CORPUS)}")
    files = sorted(p for p in root.rglob("*") if p.is_file() and not _hidden(p.relative_to(root)))
    if not files:
        raise CorpusError(f"corpus folder {root} holds no files")
    return [(f, _file_format(f, format, text_field), f.relative_to(root).as_posix()) for f in files]


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def detect_format(file: Path, text_field: str = "text") -> str:
    """The format of ``file`` by its suffix (``.gz`` aside), else by its first non-empty lines."""
    suffix = Path(file.name.removesuffix(".gz")).suffix.lower()
    if suffix in SUFFIX_FORMATS:
        return SUFFIX_FORMATS[suffix]
    # The readers drop a UTF-8 BOM; so does sniffing, or a JSONL or CoNLL file saved with one reads as plain text.
    head = head_bytes(file).removeprefix(codecs.BOM_UTF8)
    if b"\x00" in head:
        raise CorpusError(f"cannot tell the format of {file}: it looks binary")
    lines = [line.strip() for line in head.decode("utf-8", errors="replace").splitlines()]
    first_block: list[str] = []
    for line in lines:
        if line:
            first_block.append(line)
        elif first_block:
            break
    if not first_block:
        return "text"
    first = first_block[0]
    if first.startswith("{"):
        return "jsonl"
    if first.startswith("["):
        raise CorpusError(f"{file} looks like a JSON array; write it as JSON Lines (one object a line)")
    if looks_like_conll(first_block[:SNIFF_LINES]):
        return "conll"
    if "\t" in first and text_field in first.split("\t"):
        return "tsv"
    if "," in first and text_field in next(csv.reader([first])):
        return "csv"
    return "text"


def _file_format(file: Path, format: str, text_field: str) -> str:
    if format == "auto":
        return detect_format(file, text_field)
    return "jsonl" if format == "beir" else format


def _checked(plan: list[tuple[Path, str, str]], options: ReadOptions) -> Iterator[Record | ReadError]:
    seen: dict[str, str] = {}
    for file, fmt, name in plan:
        for item in READERS[fmt](file, name, options):
            if isinstance(item, Record):
                if len(item.text) > options.max_chars:
                    item = ReadError(item.source, f"text of {len(item.text)} characters is over {options.max_chars}")
                elif (first := seen.setdefault(item.id, item.source)) != item.source:
                    item = ReadError(item.source, f"duplicate id {item.id!r} (first at {first})")
            yield item


def record_from_fields(fields: Mapping[str, Any], source: str, options: ReadOptions) -> Record | ReadError:
    """A record from a JSON object or a CSV row, or the reason it is not one."""
    text = fields.get(options.text_field)
    if text is None:
        return ReadError(source, f"missing text field {options.text_field!r}")
    if not isinstance(text, str):
        return ReadError(source, f"text field {options.text_field!r} is a {type(text).__name__}, not a string")
    if not text.strip():
        return ReadError(source, f"empty text field {options.text_field!r}")
    title = fields.get(options.title_field)
    if title is not None and not isinstance(title, str):
        return ReadError(source, f"title field {options.title_field!r} is a {type(title).__name__}, not a string")
    raw_id = next((fields[k] for k in options.id_fields if fields.get(k) not in (None, "")), None)
    if raw_id is not None and (isinstance(raw_id, bool) or not isinstance(raw_id, str | int)):
        return ReadError(source, f"id is a {type(raw_id).__name__}; ids must be strings or integers")
    if options.metadata_fields is not None:
        metadata = {k: fields[k] for k in options.metadata_fields if k in fields}
    elif isinstance(fields.get("metadata"), dict):
        metadata = dict(fields["metadata"])
    elif "metadata" in fields:
        metadata = {"metadata": fields["metadata"]}
    else:
        metadata = {}
    record_id = content_id(text) if raw_id is None else str(raw_id)
    return Record(id=record_id, text=text, source=source, title=title or "", metadata=metadata)


def read_jsonl(file: Path, name: str, options: ReadOptions) -> Iterator[Record | ReadError]:
    for line in iter_json_lines(file, options.max_line_bytes):
        source = f"{file}:{line.number}"
        if line.problem is not None:
            yield ReadError(source, line.problem)
        else:
            yield record_from_fields(line.obj, source, options)


def _read_delimited(file: Path, options: ReadOptions, delimiter: str) -> Iterator[Record | ReadError]:
    problems: dict[int, str] = {}

    def texts(after: int) -> Iterator[str]:
        for line in iter_lines(file, options.max_line_bytes):
            if line.number <= after:
                continue
            if line.problem is not None:
                problems[line.number] = line.problem
            # csv needs the line ending back to join quoted fields that span lines.
            yield line.text + "\n"

    # A field can be as long as a record may be; the csv module's limit is process-wide, so it is only raised.
    if csv.field_size_limit() <= options.max_chars:
        csv.field_size_limit(options.max_chars + 1)
    # TSV corpora (MS MARCO, BEIR qrels) do not quote: a stray quote must not swallow the lines after it.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    header: list[str] | None = None
    # Strict: a quote left open is an error rather than a field holding the lines after it; the lines it took are
    # then read again, from the one after the row it opened in.
    skip = 0
    reader = csv.reader(texts(skip), delimiter=delimiter, quoting=quoting, strict=True)
    last = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            reason = "a quote opened in this row is never closed" if "end of data" in str(exc) else str(exc)
            if skip + reader.line_num > last + 1:
                # The row's quote ran over the lines after it (closed by a later quote, cut by the field limit or
                # by the end of the file): those lines are read again, on their own.
                yield ReadError(f"{file}:{last + 1}", f"malformed row: {reason}; the lines after it are read alone")
                skip = last = last + 1
                reader = csv.reader(texts(skip), delimiter=delimiter, quoting=quoting, strict=True)
            else:
                yield ReadError(f"{file}:{last + 1}", f"malformed row: {reason}")
                last = skip + reader.line_num
            continue
        start, last = last + 1, skip + reader.line_num
        bad = [n for n in range(start, last + 1) if n in problems]
        if bad:
            yield ReadError(f"{file}:{bad[0]}", problems[bad[0]])
            for n in bad:
                del problems[n]
            continue
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = row
            if options.text_field not in header:
                yield ReadError(
                    f"{file}:{start}", f"header has no {options.text_field!r} column (columns: {', '.join(header)})"
                )
                return
            continue
        if len(row) != len(header):
            yield ReadError(f"{file}:{start}", f"expected {len(header)} fields, found {len(row)}")
            continue
        # A column the header leaves unnamed (a trailing comma, as spreadsheets write) holds nothing to keep; a
        # value in one has no field name to be stored under.
        unnamed = [i + 1 for i, (name, cell) in enumerate(zip(header, row, strict=True)) if not name and cell.strip()]
        if unnamed:
            yield ReadError(f"{file}:{start}", f"a value in column {unnamed[0]}, which the header leaves unnamed")
            continue
        fields = {name: cell for name, cell in zip(header, row, strict=True) if name}
        if options.metadata_fields is None:
            named = {options.text_field, options.title_field, *options.id_fields}
            fields["metadata"] = {k: v for k, v in fields.items() if k not in named}
        yield record_from_fields(fields, f"{file}:{start}", options)


def read_csv(file: Path, name: str, options: ReadOptions) -> Iterator[Record | ReadError]:
    return _read_delimited(file, options, ",")


def read_tsv(file: Path, name: str, options: ReadOptions) -> Iterator[Record | ReadError]:
    return _read_delimited(file, options, "\t")


def read_text(file: Path, name: str, options: ReadOptions) -> Iterator[Record | ReadError]:
    """A record per blank-line separated paragraph (id ``<name>-p<n>``) or per file (id ``<name>``)."""
    per_file = options.unit == "file"
    lines: list[str] = []
    size, start, paragraph = 0, 0, 0
    error: ReadError | None = None

    def finish() -> Record | ReadError:
        if error is not None:
            return error
        if size > options.max_chars:
            return ReadError(f"{file}:{start}", f"text of over {options.max_chars} characters")
        source = f"{file}:{start}"
        if per_file:
            return Record(id=name, text="\n".join(lines).strip(), source=source, metadata={"path": name})
        metadata = {"path": name, "paragraph": paragraph}
        return Record(id=f"{name}-p{paragraph}", text="\n".join(lines).strip(), source=source, metadata=metadata)

    for line in iter_lines(file, options.max_line_bytes):
        if line.problem is None and not line.text.strip() and not per_file:
            if start:
                yield finish()
                paragraph += 1
                lines, size, start, error = [], 0, 0, None
            continue
        start = start or line.number
        if line.problem is not None:
            error = error or ReadError(f"{file}:{line.number}", line.problem)
            continue
        size += len(line.text) + (1 if size else 0)
        if size <= options.max_chars:
            lines.append(line.text)
    if error or size > options.max_chars or any(text.strip() for text in lines):
        yield finish()


def read_conll_records(file: Path, name: str, options: ReadOptions) -> Iterator[Record | ReadError]:
    """A record per sentence: tokens joined by spaces, labels dropped, id from ``conll_sentence_id``."""
    for item in read_conll(file):
        if isinstance(item, ReadError):
            yield item
            continue
        yield Record(
            id=item.id,
            text=" ".join(item.tokens),
            source=item.source,
            metadata={"doc_id": item.doc, "sentence": item.index},
        )


READERS: dict[str, Callable[[Path, str, ReadOptions], Iterator[Record | ReadError]]] = {
    "jsonl": read_jsonl,
    "csv": read_csv,
    "tsv": read_tsv,
    "text": read_text,
    "conll": read_conll_records,
}
