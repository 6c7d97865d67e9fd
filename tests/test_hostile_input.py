"""Hostile input, property-based (hypothesis): every corpus reader, ``ralm-es search`` and the REST app.

Readers get valid records interleaved with junk (broken JSON, wrong column counts, invalid UTF-8, raw control
characters and NULs, over-long lines, odd Unicode) in every format, plain and gzipped: each valid record comes out
exactly once with its ``file:line``, each junk line is reported once at its line, and nothing raises but a
``RalmError`` for a file whose format cannot be decided. The CLI and the REST app get hostile query text and
bodies: one clear line and exit 0/1, never a traceback; never a 5xx.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from elasticsearch import Elasticsearch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ralm_es.cli.main import main
from ralm_es.config import Secret
from ralm_es.corpora.benchmarks import sample_path
from ralm_es.corpus.conll import DOCSTART, conll_sentence_id
from ralm_es.corpus.readers import FORMATS, ReadOptions, read_corpus
from ralm_es.corpus.types import ReadError, Record
from ralm_es.embed import Encoder
from ralm_es.errors import RalmError
from ralm_es.ingest import Ingest, IngestSettings
from ralm_es.retrieve.retriever import RetrievalSettings, Retriever
from ralm_es.serve.app import create_app
from ralm_es.serve.settings import ServeSettings
from ralm_es.store.elastic import ElasticsearchBackend

MAX_CHARS = 2000
# Over ReadOptions.max_line_bytes for MAX_CHARS (6 * max_chars + 1 MiB), so the reader must skip it unread.
HUGE_LINE = b"x" * (6 * MAX_CHARS + (1 << 20) + 10)
# No deadline: these test what bad input does, not how fast; speed is the benchmarks' to measure.
READERS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
ENDPOINTS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Odd Unicode on purpose: RTL marks and scripts, zero-width characters, combining marks, non-characters, emoji.
ODD = st.sampled_from(
    ["\u200f", "\u202e", "\u200b", "\u200d", "\ufeff", "\u0301", "\u0338", "\ufffe", "\u05e9", "\u0627", "\U0001f642"]
)
# Any character but the surrogates a UTF-8 file cannot hold; line breaks are left to each format.
CHAR = st.one_of(st.characters(exclude_categories=["Cs"], exclude_characters="\n\r"), ODD)
INVALID_UTF8 = st.sampled_from([b"\xff", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"])
CONTROL = st.sampled_from([chr(c) for c in range(32) if chr(c) not in "\n\r"] + ["\x7f"])


@dataclass
class Corpus:
    """Physical lines of a file and what reading it must give: valid records by line, junk lines."""

    lines: list[bytes] = field(default_factory=list)
    records: dict[int, tuple[str, str]] = field(default_factory=dict)
    junk: set[int] = field(default_factory=set)

    def add(self, line: bytes, *, record: tuple[str, str] | None = None, junk: bool = False) -> None:
        self.lines.append(line)
        if record is not None:
            self.records[len(self.lines)] = record
        if junk:
            self.junk.add(len(self.lines))


def text_of(min_size: int = 1, max_size: int = 40, exclude: str = "") -> st.SearchStrategy[str]:
    chars = CHAR.filter(lambda c: c not in exclude) if exclude else CHAR
    return st.text(chars, min_size=min_size, max_size=max_size).filter(lambda t: t.strip())


def with_invalid_byte(draw: st.DrawFn, line: bytes) -> bytes:
    at = draw(st.integers(0, len(line)))
    return line[:at] + draw(INVALID_UTF8) + line[at:]


def blank(draw: st.DrawFn) -> bytes:
    return draw(st.sampled_from(["", " ", "\t", "\u3000", "\u2028", "\x0c"])).encode()


def not_a_record(line: str) -> bool:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        return True
    return not (isinstance(obj, dict) and isinstance(obj.get("text"), str) and obj["text"].strip())


@st.composite
def jsonl_corpus(draw: st.DrawFn) -> Corpus:
    corpus = Corpus()
    ids = draw(st.lists(text_of(max_size=12), unique=True, min_size=1, max_size=8))
    junk_kinds = ["truncated", "non_object", "no_text", "bad_utf8", "control", "random", "huge", "duplicate"]
    for i, record_id in enumerate(ids):
        text = draw(text_of())
        obj: dict[str, Any] = {draw(st.sampled_from(["_id", "id"])): record_id, "text": text}
        if draw(st.booleans()):
            obj["title"] = draw(st.text(CHAR, max_size=10))
        line = json.dumps(obj, ensure_ascii=draw(st.booleans()))
        corpus.add(line.encode(), record=(record_id, text))
        for _ in range(draw(st.integers(0, 2))):
            kind = draw(st.sampled_from(junk_kinds))
            if kind == "truncated":
                junk = line[: draw(st.integers(1, len(line) - 1))].encode()
            elif kind == "non_object":
                junk = json.dumps(draw(st.one_of(st.integers(), st.lists(st.integers()), text_of()))).encode()
            elif kind == "no_text":
                junk = json.dumps(draw(st.sampled_from([{"id": "x"}, {"text": 5}, {"text": " \u3000\t"}]))).encode()
            elif kind == "bad_utf8":
                junk = with_invalid_byte(draw, line.encode())
            elif kind == "control":
                # Raw C0 controls are not allowed in JSON strings (DEL is).
                junk = ('{"text": "a' + draw(CONTROL.filter(lambda c: c < " ")) + 'b"}').encode()
            elif kind == "random":
                junk = draw(text_of().filter(not_a_record)).encode()
            elif kind == "huge":
                junk = HUGE_LINE
            else:
                junk = json.dumps({"id": ids[draw(st.integers(0, i))], "text": "again"}).encode()
            corpus.add(junk, junk=True)
        if draw(st.booleans()):
            corpus.add(blank(draw))
    return corpus


@st.composite
def delimited_corpus(draw: st.DrawFn, delimiter: str) -> Corpus:
    corpus = Corpus()
    corpus.add(delimiter.join(["id", "text"]).encode())
    # TSV is read unquoted, so its cells cannot hold a tab; CSV quotes what it needs.
    cell = text_of(exclude="\t" if delimiter == "\t" else "")
    junk_cell = text_of(max_size=10, exclude=',"\t')
    ids = draw(st.lists(text_of(max_size=12, exclude="\t"), unique=True, min_size=1, max_size=8))
    for record_id in ids:
        text = draw(cell)
        if delimiter == ",":
            out = io.StringIO()
            csv.writer(out, lineterminator="").writerow([record_id, text])
            line = out.getvalue().encode()
        else:
            line = f"{record_id}\t{text}".encode()
        corpus.add(line, record=(record_id, text))
        for _ in range(draw(st.integers(0, 2))):
            kind = draw(st.sampled_from(["columns", "bad_utf8", "huge"]))
            if kind == "columns":
                cells = draw(st.lists(junk_cell, min_size=1, max_size=4).filter(lambda c: len(c) != 2))
                junk = delimiter.join(cells).encode()
            elif kind == "bad_utf8":
                junk = with_invalid_byte(draw, line)
            else:
                junk = HUGE_LINE
            corpus.add(junk, junk=True)
    return corpus


@st.composite
def text_corpus(draw: st.DrawFn) -> Corpus:
    """Paragraphs; a paragraph with a bad line is one error at that line. ``records`` is keyed by first line."""
    corpus = Corpus()
    line_text = text_of()
    for paragraph in range(draw(st.integers(1, 6))):
        if paragraph:
            corpus.add(blank(draw))
        lines = draw(st.lists(line_text, min_size=1, max_size=3))
        bad = draw(st.sampled_from([None, None, "bad_utf8", "huge"]))
        start = len(corpus.lines) + 1
        for n, line in enumerate(lines):
            corpus.add(line.encode())
            if bad and n == len(lines) - 1:
                corpus.add(with_invalid_byte(draw, line.encode()) if bad == "bad_utf8" else HUGE_LINE, junk=True)
        if not bad:
            corpus.records[start] = (f"p{paragraph}", "\n".join(lines).strip())
    return corpus


@st.composite
def conll_corpus(draw: st.DrawFn) -> Corpus:
    corpus = Corpus()
    corpus.add(f"{DOCSTART} -X- -X- O".encode())
    token = st.text(CHAR, min_size=1, max_size=8).filter(lambda t: not any(c.isspace() for c in t) and t != DOCSTART)
    for sentence in range(draw(st.integers(1, 6))):
        corpus.add(blank(draw))
        tokens = draw(st.lists(token, min_size=1, max_size=4))
        bad = draw(st.sampled_from([None, None, "columns", "bad_utf8"]))
        start = len(corpus.lines) + 1
        for tok in tokens:
            corpus.add(f"{tok} NN I-NP {draw(st.sampled_from(['O', 'B-PER', 'I-LOC']))}".encode())
        if bad == "columns":
            corpus.add(f"{tokens[0]} NN O".encode(), junk=True)
        elif bad == "bad_utf8":
            corpus.add(with_invalid_byte(draw, f"{tokens[0]} NN I-NP O".encode()), junk=True)
        else:
            corpus.records[start] = (f"s{sentence}", " ".join(tokens))
    return corpus


def write(folder: Path, name: str, corpus: Corpus, gz: bool, crlf: bool) -> Path:
    data = b"".join(line + (b"\r\n" if crlf else b"\n") for line in corpus.lines)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def read_all(path: Path, fmt: str) -> tuple[dict[str, Record], dict[str, list[ReadError]]]:
    records: dict[str, Record] = {}
    errors: dict[str, list[ReadError]] = {}
    for item in read_corpus(
        path, ReadOptions(format=fmt, id_field="id" if fmt in ("csv", "tsv") else None, max_chars=MAX_CHARS)
    ):
        if isinstance(item, ReadError):
            errors.setdefault(item.source, []).append(item)
        else:
            assert isinstance(item, Record)
            assert item.source not in records, f"{item.source} yielded twice"
            records[item.source] = item
    return records, errors


def check(file: Path, corpus: Corpus, records: dict[str, Record], errors: dict[str, list[ReadError]]) -> None:
    assert set(records) == {f"{file}:{n}" for n in corpus.records}
    assert {s: len(e) for s, e in errors.items()} == {f"{file}:{n}": 1 for n in corpus.junk}
    for error in (e for found in errors.values() for e in found):
        assert error.reason.strip()


def tmp_folder(factory: pytest.TempPathFactory) -> Path:
    return factory.mktemp("hostile", numbered=True)


@pytest.mark.parametrize("fmt", ["jsonl", "auto", "beir"])
@READERS
@given(corpus=jsonl_corpus(), gz=st.booleans(), crlf=st.booleans())
def test_jsonl_and_beir_keep_every_valid_record_and_report_junk(
    fmt: str, corpus: Corpus, gz: bool, crlf: bool, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_folder(tmp_path_factory)
    file = write(folder, "corpus.jsonl", corpus, gz, crlf)
    records, errors = read_all(folder if fmt == "beir" else file, fmt)
    check(file, corpus, records, errors)
    for line, (record_id, text) in corpus.records.items():
        record = records[f"{file}:{line}"]
        assert (record.id, record.text) == (record_id, text)


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
@READERS
@given(data=st.data(), gz=st.booleans(), crlf=st.booleans())
def test_csv_and_tsv_keep_every_valid_row_and_report_junk(
    fmt: str, data: st.DataObject, gz: bool, crlf: bool, tmp_path_factory: pytest.TempPathFactory
) -> None:
    corpus = data.draw(delimited_corpus("," if fmt == "csv" else "\t"))
    file = write(tmp_folder(tmp_path_factory), f"corpus.{fmt}", corpus, gz, crlf)
    records, errors = read_all(file, "auto")
    check(file, corpus, records, errors)
    for line, (record_id, text) in corpus.records.items():
        record = records[f"{file}:{line}"]
        assert (record.id, record.text) == (record_id, text)


@READERS
@given(corpus=text_corpus(), gz=st.booleans(), crlf=st.booleans())
def test_text_keeps_every_clean_paragraph_and_reports_the_bad_line(
    corpus: Corpus, gz: bool, crlf: bool, tmp_path_factory: pytest.TempPathFactory
) -> None:
    file = write(tmp_folder(tmp_path_factory), "notes.txt", corpus, gz, crlf)
    records, errors = read_all(file, "text")
    check(file, corpus, records, errors)
    for line, (paragraph, text) in corpus.records.items():
        record = records[f"{file}:{line}"]
        assert (record.id, record.text) == (f"{file.name}-{paragraph}", text)


@READERS
@given(corpus=conll_corpus(), gz=st.booleans(), crlf=st.booleans())
def test_conll_keeps_every_clean_sentence_and_reports_the_bad_line(
    corpus: Corpus, gz: bool, crlf: bool, tmp_path_factory: pytest.TempPathFactory
) -> None:
    file = write(tmp_folder(tmp_path_factory), "train.conll", corpus, gz, crlf)
    records, errors = read_all(file, "auto")
    check(file, corpus, records, errors)
    for line, (sentence, text) in corpus.records.items():
        record = records[f"{file}:{line}"]
        assert (record.id, record.text) == (conll_sentence_id(file, 0, int(sentence[1:])), text)


@pytest.mark.parametrize("fmt", FORMATS)
@READERS
@given(
    content=st.one_of(
        st.binary(max_size=3000),
        st.lists(st.one_of(st.binary(max_size=80), st.text(CHAR, max_size=80).map(str.encode)), max_size=30).map(
            b"\n".join
        ),
    ),
    gz=st.booleans(),
    truncate=st.integers(0, 40),
)
def test_any_bytes_give_records_read_errors_or_one_ralm_error(
    fmt: str, content: bytes, gz: bool, truncate: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_folder(tmp_path_factory)
    data = gzip.compress(content) if gz else content
    if gz and truncate:
        data = data[:-truncate]  # a cut-off download
    file = folder / (("corpus.jsonl" if fmt == "beir" else "blob.dat") + (".gz" if gz else ""))
    file.write_bytes(data)
    try:
        items = list(read_corpus(folder if fmt == "beir" else file, ReadOptions(format=fmt, max_chars=MAX_CHARS)))
    except RalmError as exc:
        assert str(file) in str(exc) or str(folder) in str(exc)
        return
    for item in items:
        assert isinstance(item, Record | ReadError)
        assert item.source.startswith(f"{file}:")
        if isinstance(item, Record):
            # A record must be indexable: its strings encode to UTF-8 (no lone surrogates).
            (item.id + item.text + item.title).encode("utf-8")


@READERS
@given(
    # One surrogate alone: a high and a low one in a row would be read back as a valid pair.
    text=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    where=st.sampled_from(["text", "id", "title"]),
)
def test_json_escaped_lone_surrogates_are_read_errors_not_crashes(
    text: str, where: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    obj = {"text": "fine text", "title": "t", "id": "ok"}
    obj[where] = obj[where] + text
    file = tmp_folder(tmp_path_factory) / "c.jsonl"
    # ensure_ascii writes the surrogates as \\udXXX escapes: valid JSON, but no valid UTF-8 string.
    file.write_text(json.dumps(obj) + "\n" + json.dumps({"id": "next", "text": "after"}) + "\n", encoding="ascii")
    items = list(read_corpus(file))
    assert [type(item) for item in items] == [ReadError, Record]
    assert items[0].source == f"{file}:1" and items[1].id == "next"


def test_a_huge_line_in_the_middle_costs_one_error(tmp_path: Path) -> None:
    file = tmp_path / "big.jsonl"
    file.write_bytes(b'{"id": "a", "text": "before"}\n' + HUGE_LINE * 3 + b'\n{"id": "b", "text": "after"}\n')
    records, errors = read_all(file, "jsonl")
    assert [r.id for r in records.values()] == ["a", "b"]
    assert list(errors) == [f"{file}:2"] and "longer than" in errors[f"{file}:2"][0].reason


# ---------------------------------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def local_index(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    index = tmp_path_factory.mktemp("local") / "idx"
    args = ["ingest", str(sample_path("sample_corpus.jsonl")), "--backend", "local", "--index", str(index)]
    code, _, err = run_main([*args, "--no-embed", "--model", str(tiny_model_dir), "--quiet"])
    assert code == 0, err
    return index


def run_main(args: list[str]) -> tuple[int, str, str]:
    """``ralm-es ARGS`` in this process, through the real entry point and its error handling; stdout strict
    UTF-8 and stderr with backslash escapes, as Python sets them up for a terminal."""
    out_bytes, err_bytes = io.BytesIO(), io.BytesIO()
    out = io.TextIOWrapper(out_bytes, encoding="utf-8", errors="strict", write_through=True)
    err = io.TextIOWrapper(err_bytes, encoding="utf-8", errors="backslashreplace", write_through=True)
    code = 0
    with mock.patch("sys.argv", ["ralm-es", *args]), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out_bytes.getvalue().decode("utf-8"), err_bytes.getvalue().decode("utf-8")


# Query text as it can reach argv: any character, NUL and lone surrogates included (argv is decoded with
# surrogateescape, so undecodable bytes arrive as U+DC80..U+DCFF).
QUERY = st.one_of(
    st.text(st.one_of(st.characters(), ODD, CONTROL), max_size=60),
    st.binary(max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.sampled_from(['{"match_all": {}}', "*", 'title:"x" OR 1=1', "\\", "   ", "a" * 5000]),
)


@ENDPOINTS
@given(query=QUERY, mode=st.sampled_from(["bm25", "hybrid", "dense"]), as_json=st.booleans())
def test_cli_search_with_hostile_query_exits_cleanly(
    query: str, mode: str, as_json: bool, local_index: Path, tiny_model_dir: Path
) -> None:
    args = ["search", "--backend", "local", "--index", str(local_index), "--mode", mode]
    args += ["--model", str(tiny_model_dir), "-k", "3", *(["--json"] if as_json else []), "--", query]
    code, out, err = run_main(args)
    assert "Traceback" not in out + err
    assert code in (0, 1), err
    if code == 1:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("ralm-es: error: "), err
    elif as_json:
        assert isinstance(json.loads(out), list)
    else:
        assert out.strip()


# ---------------------------------------------------------------------------------------------------- the REST app

TOKEN = "hostile-token"


@pytest.fixture(scope="module")
def client(
    es_client: Elasticsearch, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    name = f"t-hostile-{uuid.uuid4().hex[:8]}"
    encoder = Encoder(tiny_model_dir, device="cpu")
    backend = ElasticsearchBackend(es_client, name)
    Ingest(backend, IngestSettings(), encoder=encoder, checkpoint_dir=tmp_path_factory.mktemp("ckpt")).run(
        [sample_path("sample_corpus.jsonl")]
    )
    retriever = Retriever(backend, encoder, RetrievalSettings(mode="hybrid", k=5))
    app = create_app(ServeSettings(token=Secret(TOKEN), max_text_chars=2000), retriever)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
    es_client.indices.delete(index=",".join(backend.concrete_indices()))


JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.one_of(CHAR, CONTROL), max_size=30),
)
JSON_ANY = st.recursive(
    JSON_LEAF,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)
TEXT = st.one_of(st.text(st.one_of(CHAR, CONTROL), max_size=80), st.sampled_from(["", " ", "\u200b", "a" * 2500]))
FILTER = st.fixed_dictionaries(
    {
        "field": st.one_of(
            st.text(st.one_of(CHAR, CONTROL), max_size=20),
            st.sampled_from(["*", "_id", "vector", "text", "metadata.x"]),
        )
    },
    optional={
        "kind": st.sampled_from(["term", "terms", "range", "script"]),
        "value": JSON_ANY,
    },
)
OPTIONS = {
    "k": st.one_of(st.integers(-5, 150), st.sampled_from([2**63, "3", None])),
    "mode": st.sampled_from(["bm25", "dense", "hybrid", "knn", None]),
    "filters": st.lists(FILTER, max_size=3),
}
SEARCH_BODY = st.fixed_dictionaries(
    {"text": st.one_of(TEXT, JSON_ANY)},
    optional={**OPTIONS, "exclude_ids": st.lists(st.text(max_size=10), max_size=3), "extra": JSON_ANY},
)
RETRIEVE_BODY = st.fixed_dictionaries(
    {
        "inputs": st.lists(
            st.fixed_dictionaries(
                {"text": TEXT},
                optional={
                    "id": st.one_of(st.none(), st.text(max_size=10)),
                    "exclude_ids": st.lists(st.text(max_size=5), max_size=2),
                },
            ),
            max_size=5,
        )
    },
    optional=OPTIONS,
)
RAW_BODY = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    st.sampled_from([b"", b"{", b"null", b"[]", b'{"text": "a\x00b"}', b'{"text": "\\ud800"}', b"{" * 5000]),
)


def post(client: TestClient, path: str, headers_json: bool = False, **kwargs: Any) -> int:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if headers_json:
        headers["Content-Type"] = "application/json"
    response = client.post(path, headers=headers, **kwargs)
    assert response.status_code < 500, (path, response.status_code, response.text)
    assert "Traceback" not in response.text
    return response.status_code


@ENDPOINTS
@given(body=SEARCH_BODY)
def test_rest_search_never_answers_5xx(body: dict[str, Any], client: TestClient) -> None:
    post(client, "/search", json=body)


@ENDPOINTS
@given(body=RETRIEVE_BODY)
def test_rest_retrieve_never_answers_5xx(body: dict[str, Any], client: TestClient) -> None:
    post(client, "/retrieve", json=body)


@ENDPOINTS
@given(body=RAW_BODY, path=st.sampled_from(["/search", "/retrieve"]))
def test_rest_raw_bodies_never_answer_5xx(body: bytes, path: str, client: TestClient) -> None:
    post(client, path, content=body, headers_json=True)
