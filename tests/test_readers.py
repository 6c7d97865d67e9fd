"""Corpus readers on small files for every format, every kind of bad input, the shared CoNLL data and the samples."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from itertools import islice
from pathlib import Path

import pytest

from ralm_es.config import ConfigError
from ralm_es.corpora.benchmarks import (
    BenchmarkDataError,
    conll_paths,
    sample_path,
    scifact_paths,
    shared_data_dir,
)
from ralm_es.corpus.conll import conll_sentence_id, read_conll
from ralm_es.corpus.readers import CorpusError, ReadOptions, detect_format, read_corpus
from ralm_es.corpus.types import ReadError, Record


def split(items: object) -> tuple[list[Record], list[ReadError]]:
    items = list(items)  # type: ignore[call-overload]
    return [i for i in items if isinstance(i, Record)], [i for i in items if isinstance(i, ReadError)]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def jsonl(*objs: object) -> list[str]:
    return [json.dumps(o) for o in objs]


# --- JSONL and BEIR ---------------------------------------------------------------------------------------------


def test_jsonl_fields_sources_and_ids(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "c.jsonl",
        [
            *jsonl({"_id": "a", "title": "T", "text": "alpha", "metadata": {"year": 2001}}),
            "",
            *jsonl({"id": 7, "text": "beta"}, {"text": "gamma"}),
        ],
    )
    records, errors = split(read_corpus(path))
    assert errors == []
    # A record without an id gets the first 16 hex digits of its text's SHA-1.
    assert [r.id for r in records] == ["a", "7", "ff70f4c33de2200b"]
    assert [r.source for r in records] == [f"{path}:1", f"{path}:3", f"{path}:4"]
    assert records[0].title == "T" and records[0].metadata == {"year": 2001}
    assert len(records[2].id) == 16


def test_jsonl_configurable_fields(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "c.jsonl", jsonl({"doc": "x1", "head": "H", "body": "text one", "lang": "en"}))
    (record,) = read_corpus(
        path, ReadOptions(id_field="doc", text_field="body", title_field="head", metadata_fields=["lang", "absent"])
    )
    assert record == Record(id="x1", text="text one", source=f"{path}:1", title="H", metadata={"lang": "en"})


def test_beir_folder(tmp_path: Path) -> None:
    write_lines(tmp_path / "corpus.jsonl", jsonl({"_id": "d1", "title": "", "text": "one", "metadata": {}}))
    write_lines(tmp_path / "queries.jsonl", jsonl({"_id": "q1", "text": "a query"}))
    for fmt in ("auto", "beir"):
        records, errors = split(read_corpus(tmp_path, ReadOptions(format=fmt)))
        assert ([r.id for r in records], errors) == (["d1"], [])


def test_beir_format_needs_corpus_file(tmp_path: Path) -> None:
    write_lines(tmp_path / "other.jsonl", jsonl({"text": "x"}))
    with pytest.raises(CorpusError, match=r"corpus\.jsonl"):
        read_corpus(tmp_path, ReadOptions(format="beir"))


def test_jsonl_bad_input_is_reported_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    lines = [
        json.dumps({"_id": "ok1", "text": "first"}).encode(),
        b'{"_id": "broken", "text": ',
        json.dumps({"_id": "nt"}).encode(),
        json.dumps({"_id": "empty", "text": "   "}).encode(),
        b'{"_id": "latin", "text": "caf\xe9"}',
        json.dumps({"_id": "ok1", "text": "again"}).encode(),
        json.dumps({"_id": "big", "text": "x" * 50}).encode(),
        json.dumps(["not", "an", "object"]).encode(),
        json.dumps({"_id": "ok2", "text": "last"}).encode(),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    records, errors = split(read_corpus(path, ReadOptions(max_chars=40)))
    assert [r.id for r in records] == ["ok1", "ok2"]
    assert [r.source for r in records] == [f"{path}:1", f"{path}:9"]
    reasons = {e.source: e.reason for e in errors}
    assert list(reasons) == [f"{path}:{n}" for n in (2, 3, 4, 5, 6, 7, 8)]
    assert "malformed JSON" in reasons[f"{path}:2"]
    assert "missing text field" in reasons[f"{path}:3"]
    assert "empty text field" in reasons[f"{path}:4"]
    assert "invalid UTF-8" in reasons[f"{path}:5"]
    assert "duplicate id 'ok1'" in reasons[f"{path}:6"] and f"{path}:1" in reasons[f"{path}:6"]
    assert "over 40" in reasons[f"{path}:7"]
    assert "JSON object" in reasons[f"{path}:8"]


def test_overlong_line_is_skipped_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "long.jsonl"
    max_chars = 10
    huge = json.dumps({"_id": "huge", "text": "y" * (6 * max_chars + (1 << 20) + 100)})
    write_lines(path, [huge, *jsonl({"_id": "after", "text": "short"})])
    records, errors = split(read_corpus(path, ReadOptions(max_chars=max_chars)))
    assert [r.id for r in records] == ["after"] and records[0].source == f"{path}:2"
    assert [e.source for e in errors] == [f"{path}:1"] and "longer than" in errors[0].reason


def test_duplicates_are_found_across_files_of_a_folder(tmp_path: Path) -> None:
    write_lines(tmp_path / "a.jsonl", jsonl({"id": "same", "text": "one"}))
    write_lines(tmp_path / "b.jsonl", jsonl({"id": "same", "text": "two"}, {"id": "other", "text": "three"}))
    records, errors = split(read_corpus(tmp_path))
    assert [r.id for r in records] == ["same", "other"]
    assert [e.source for e in errors] == [f"{tmp_path / 'b.jsonl'}:1"]


# --- CSV / TSV --------------------------------------------------------------------------------------------------


def test_csv_with_quoted_multiline_field(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text('id,title,text,lang\n1,T1,"line one\nline two",en\n\n2,T2,"has, comma",de\n', encoding="utf-8")
    records, errors = split(read_corpus(path))
    assert errors == []
    assert [(r.id, r.title, r.text, r.source) for r in records] == [
        ("1", "T1", "line one\nline two", f"{path}:2"),
        ("2", "T2", "has, comma", f"{path}:5"),
    ]
    assert records[0].metadata == {"lang": "en"}


def test_tsv_does_not_treat_quotes_specially(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "c.tsv", ["_id\ttext", 'a\t"quoted" start', "b\tplain"])
    records, errors = split(read_corpus(path))
    assert errors == []
    assert [(r.id, r.text, r.source) for r in records] == [
        ("a", '"quoted" start', f"{path}:2"),
        ("b", "plain", f"{path}:3"),
    ]


def test_csv_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(b"id,text\n1,good\n2,caf\xe9\n3,too,many\n4,\n1,dup\n5,fine\n")
    records, errors = split(read_corpus(path))
    assert [(r.id, r.source) for r in records] == [("1", f"{path}:2"), ("5", f"{path}:7")]
    reasons = {e.source: e.reason for e in errors}
    assert list(reasons) == [f"{path}:{n}" for n in (3, 4, 5, 6)]
    assert "invalid UTF-8" in reasons[f"{path}:3"]
    assert "expected 2 fields, found 3" in reasons[f"{path}:4"]
    assert "empty text field" in reasons[f"{path}:5"]
    assert "duplicate id" in reasons[f"{path}:6"]


def test_csv_quotes_left_open_or_closed_early_are_reported_and_the_rows_after_them_read(tmp_path: Path) -> None:
    path = tmp_path / "quotes.csv"
    # Row 3 closes its quote before the field ends; row 5 opens one it never closes (the lenient csv reader made
    # it one record holding every line after it).
    rows = ["id,title,text", "1,a,ok", '2,b,"closed"early', '3,c,"multi', 'line"', '4,d,"he said hi', "5,e,fifth"]
    write_lines(path, [*rows, "6,f,sixth"])
    records, errors = split(read_corpus(path))
    assert [(r.id, r.text, r.source) for r in records] == [
        ("1", "ok", f"{path}:2"),
        ("3", "multi\nline", f"{path}:4"),
        ("5", "fifth", f"{path}:7"),
        ("6", "sixth", f"{path}:8"),
    ]
    reasons = {e.source: e.reason for e in errors}
    assert list(reasons) == [f"{path}:3", f"{path}:6"]
    assert reasons[f"{path}:6"] == (
        "malformed row: a quote opened in this row is never closed; the lines after it are read alone"
    )
    # An open quote that a later row's quote closes took the rows between; they are read again too.
    write_lines(path, ["id,title,text", "1,a,ok", '2,b,"open quote', "3,c,third", '4,d,"quoted" later', "5,e,fifth"])
    records, errors = split(read_corpus(path))
    assert [r.id for r in records] == ["1", "3", "5"]
    assert [e.source for e in errors] == [f"{path}:3", f"{path}:5"]


def test_csv_header_without_text_column(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "c.csv", ["id,body", "1,hello"])
    records, errors = split(read_corpus(path))
    assert records == [] and [e.source for e in errors] == [f"{path}:1"]
    assert "no 'text' column" in errors[0].reason


def test_csv_columns_the_header_leaves_unnamed(tmp_path: Path) -> None:
    """A trailing comma (as spreadsheets write) made an empty field name, which Elasticsearch refused for every
    row; a value in such a column is its row's error."""
    path = tmp_path / "trailing.csv"
    path.write_bytes(b"id,text,\r\n1,hello world,\r\n2,second row,stray\r\n3,third row,\r\n")
    records, errors = split(read_corpus(path))
    assert [(r.id, r.metadata) for r in records] == [("1", {}), ("3", {})]
    assert [(e.source, e.reason) for e in errors] == [
        (f"{path}:3", "a value in column 3, which the header leaves unnamed")
    ]


# --- plain text -------------------------------------------------------------------------------------------------


def test_text_paragraphs_and_files(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    write_lines(folder / "a.txt", ["First para", "continues here.", "", "", "Second para."])
    write_lines(folder / "sub" / "b.md", ["Only one."])
    write_lines(folder / ".hidden.txt", ["skipped"])
    records, errors = split(read_corpus(folder))
    assert errors == []
    assert [(r.id, r.text, r.source) for r in records] == [
        ("a.txt-p0", "First para\ncontinues here.", f"{folder / 'a.txt'}:1"),
        ("a.txt-p1", "Second para.", f"{folder / 'a.txt'}:5"),
        ("sub/b.md-p0", "Only one.", f"{folder / 'sub' / 'b.md'}:1"),
    ]
    assert records[1].metadata == {"path": "a.txt", "paragraph": 1}
    whole, errors = split(read_corpus(folder / "a.txt", ReadOptions(unit="file")))
    assert errors == [] and [(r.id, r.text) for r in whole] == [
        ("a.txt", "First para\ncontinues here.\n\n\nSecond para.")
    ]


def test_text_bad_paragraph_keeps_the_others_and_their_ids(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_bytes(b"good one\n\nbad \xff line\nrest\n\n" + b"z" * 30 + b"\n\nlast one\n")
    records, errors = split(read_corpus(path, ReadOptions(format="text", max_chars=20)))
    assert [(r.id, r.source) for r in records] == [("t.txt-p0", f"{path}:1"), ("t.txt-p3", f"{path}:8")]
    assert [(e.source, "invalid UTF-8" in e.reason) for e in errors] == [(f"{path}:3", True), (f"{path}:6", False)]


# --- CoNLL ------------------------------------------------------------------------------------------------------

CONLL = [
    "-DOCSTART- -X- -X- O",
    "",
    "EU NNP I-NP B-ORG",
    "rejects VBZ I-VP O",
    "",
    "Peter NNP I-NP B-PER",
    "Blackburn NNP I-NP I-PER",
    "",
    "-DOCSTART- -X- -X- O",
    "",
    "BRUSSELS NNP I-NP B-LOC",
]


def test_conll_sentences(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "train.txt", CONLL)
    records, errors = split(read_corpus(path))
    assert errors == []
    assert [(r.id, r.text, r.source, r.metadata) for r in records] == [
        ("train-d0-s0", "EU rejects", f"{path}:3", {"doc_id": 0, "sentence": 0}),
        ("train-d0-s1", "Peter Blackburn", f"{path}:6", {"doc_id": 0, "sentence": 1}),
        ("train-d1-s0", "BRUSSELS", f"{path}:11", {"doc_id": 1, "sentence": 0}),
    ]
    assert conll_sentence_id(path, 1, 0) == conll_sentence_id(tmp_path / "train.txt.gz", 1, 0) == "train-d1-s0"
    sentences = list(read_conll(path))
    assert sentences[1].labels == ("B-PER", "I-PER")  # type: ignore[union-attr]


def test_conll_malformed_line_keeps_following_ids(tmp_path: Path) -> None:
    lines = list(CONLL)
    lines[3] = "rejects VBZ O"
    path = write_lines(tmp_path / "dev.txt", lines)
    records, errors = split(read_corpus(path, ReadOptions(format="conll")))
    assert [r.id for r in records] == ["dev-d0-s1", "dev-d1-s0"]
    assert [e.source for e in errors] == [f"{path}:4"] and "expected 4 columns, found 3" in errors[0].reason


def test_conll_on_shared_train_head(shared_data: Path, tmp_path: Path) -> None:
    with (shared_data / "conll2003" / "train.txt").open(encoding="utf-8") as fh:
        head = [line.rstrip("\n") for line in islice(fh, 200)]
    path = write_lines(tmp_path / "head.txt", head)
    blocks = "\n".join(head).split("\n\n")
    sentences = [b.strip() for b in blocks if b.strip() and not b.strip().startswith("-DOCSTART-")]
    records, errors = split(read_corpus(path))
    assert errors == []
    assert len(records) == len(sentences)
    assert [r.text for r in records] == [" ".join(line.split()[0] for line in s.splitlines()) for s in sentences]
    assert max(r.metadata["doc_id"] for r in records) == sum(line.startswith("-DOCSTART-") for line in head) - 1


# --- gzip, detection, errors ------------------------------------------------------------------------------------


def test_gzip_by_suffix_and_by_magic_bytes(tmp_path: Path) -> None:
    content = ("\n".join([*jsonl({"_id": "g1", "text": "zipped"}), "{bad"]) + "\n").encode()
    (tmp_path / "c.jsonl.gz").write_bytes(gzip.compress(content))
    (tmp_path / "c.data").write_bytes(gzip.compress("\n".join(CONLL).encode()))
    records, errors = split(read_corpus(tmp_path / "c.jsonl.gz"))
    assert [r.id for r in records] == ["g1"] and [e.source for e in errors] == [f"{tmp_path / 'c.jsonl.gz'}:2"]
    assert detect_format(tmp_path / "c.data") == "conll"
    assert [r.id for r in read_corpus(tmp_path / "c.data")] == ["c-d0-s0", "c-d0-s1", "c-d1-s0"]  # type: ignore[union-attr]


def test_truncated_gzip_is_a_read_error(tmp_path: Path) -> None:
    lines = jsonl(*({"_id": str(i), "text": f"record number {i} " * 20} for i in range(200)))
    data = gzip.compress(("\n".join(lines) + "\n").encode())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    records, errors = split(read_corpus(path))
    assert 0 < len(records) < 200
    assert len(errors) == 1 and "cannot read further" in errors[0].reason


@pytest.mark.parametrize(
    ("name", "lines", "expected"),
    [
        ("a.txt", ['{"text": "x"}'], "jsonl"),
        ("a.txt", ["-DOCSTART- -X- -X- O"], "conll"),
        ("a.txt", ["EU NNP I-NP B-ORG", "rejects VBZ I-VP O"], "conll"),
        ("a", ["id\ttext", "1\thello"], "tsv"),
        ("a", ["id,title,text", "1,t,hello"], "csv"),
        ("a.txt", ["Hello, world. This is prose, not a table.", "", "More prose"], "text"),
        ("a.txt", ["Four words in here"], "text"),
        ("a.csv", ["anything"], "csv"),
    ],
)
def test_detect_format(tmp_path: Path, name: str, lines: list[str], expected: str) -> None:
    assert detect_format(write_lines(tmp_path / name, lines)) == expected


@pytest.mark.parametrize(
    ("lines", "expected"),
    [(['{"id": "a", "text": "alpha doc"}'], "jsonl"), (["-DOCSTART-", "", "EU NNP B-NP B-ORG"], "conll")],
)
def test_a_bom_does_not_hide_the_format(tmp_path: Path, lines: list[str], expected: str) -> None:
    """A BOM-led JSONL or CoNLL file was sniffed as plain text and indexed as such: raw JSON, or gold tags, as
    passage text."""
    path = tmp_path / "saved.txt"
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode() + b"\n")
    assert detect_format(path) == expected


def test_undecidable_and_missing_inputs_raise(tmp_path: Path) -> None:
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01\x02binary")
    with pytest.raises(CorpusError, match=r"blob\.bin"):
        read_corpus(tmp_path / "blob.bin")
    write_lines(tmp_path / "arr.json", ['[{"text": "x"}]'])
    with pytest.raises(CorpusError, match=r"arr\.json"):
        read_corpus(tmp_path / "arr.json")
    with pytest.raises(CorpusError, match="nope"):
        read_corpus(tmp_path / "nope.jsonl")
    folder = tmp_path / "mixed"
    folder.mkdir()
    write_lines(folder / "good.jsonl", jsonl({"text": "fine"}))
    (folder / "blob.bin").write_bytes(b"\x00binary")
    with pytest.raises(CorpusError, match=r"blob\.bin"):
        read_corpus(folder)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"format": "xml"}, r"^read\.format must be one of auto, jsonl, beir, csv, tsv, text, conll, got 'xml'$"),
        ({"unit": "line"}, r"^read\.unit must be one of paragraph, file, got 'line'$"),
        ({"max_chars": 0}, r"^read\.max_chars must be at least 1, got 0$"),
        (
            {"max_chars": 2**63 - 1},
            r"^read\.max_chars must be at most 2147483647 \(Elasticsearch .*got 9223372036854775807$",
        ),
    ],
)
def test_read_options_built_in_code_are_refused_naming_the_setting(options: dict[str, object], message: str) -> None:
    # Options made in Python, not from a config's `read:` section, meet the same checks.
    with pytest.raises(ConfigError, match=message):
        ReadOptions(**options)  # type: ignore[arg-type]


# --- shipped samples and benchmark locations --------------------------------------------------------------------


def test_sample_corpus_parses() -> None:
    records, errors = split(read_corpus(sample_path("sample_corpus.jsonl")))
    assert errors == [] and len(records) >= 50
    assert all(r.title and {"topic", "year"} <= set(r.metadata) for r in records)
    assert len(Counter(r.metadata["topic"] for r in records)) >= 4


def test_sample_claims_parse_and_cite_the_corpus() -> None:
    records, errors = split(
        read_corpus(sample_path("sample_claims.jsonl"), ReadOptions(metadata_fields=["label", "evidence"]))
    )
    assert errors == [] and len(records) >= 30
    assert {r.metadata["label"] for r in records} == {"SUPPORT", "CONTRADICT", "NOT_ENOUGH_INFO"}
    corpus_ids = {r.id for r in read_corpus(sample_path("sample_corpus.jsonl"))}  # type: ignore[union-attr]
    for r in records:
        assert set(r.metadata["evidence"]) <= corpus_ids
        assert bool(r.metadata["evidence"]) == (r.metadata["label"] != "NOT_ENOUGH_INFO")


def test_sample_ner_parses_with_valid_iob2() -> None:
    path = sample_path("sample_ner.txt")
    sentences = list(read_conll(path))
    assert all(not isinstance(s, ReadError) for s in sentences) and len(sentences) >= 30
    assert len({s.doc for s in sentences}) >= 4  # type: ignore[union-attr]
    types = set()
    for s in sentences:
        previous = "O"
        for tag in s.labels:  # type: ignore[union-attr]
            assert tag == "O" or tag[:2] in ("B-", "I-")
            if tag.startswith("I-"):
                assert previous[2:] == tag[2:], f"{s.source}: {tag} after {previous}"  # type: ignore[union-attr]
            types.add(tag[2:])
            previous = tag
    assert types >= {"PER", "ORG", "LOC", "MISC"}
    assert detect_format(path) == "conll"
    records, errors = split(read_corpus(path))
    assert errors == [] and [r.id for r in records] == [s.id for s in sentences]  # type: ignore[union-attr]


def test_unknown_sample_is_an_error() -> None:
    with pytest.raises(BenchmarkDataError, match=r"sample_corpus\.jsonl"):
        sample_path("nothing.txt")


def test_benchmark_paths(shared_data: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RALM_ES_DATA", str(shared_data))
    assert shared_data_dir() == shared_data
    assert scifact_paths()["corpus"] == shared_data / "scifact" / "corpus.jsonl"
    assert all(p.is_file() for p in conll_paths().values())
    monkeypatch.setenv("RALM_ES_DATA", str(tmp_path))
    with pytest.raises(BenchmarkDataError, match=r"corpus\.jsonl"):
        scifact_paths()
    monkeypatch.setenv("RALM_ES_DATA", str(tmp_path / "absent"))
    with pytest.raises(BenchmarkDataError, match="RALM_ES_DATA"):
        shared_data_dir()
