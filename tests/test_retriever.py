"""The query layer on the real node: modes, fusion, filters, exclusion, batching, the cache and bad input."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import subprocess
import sys
import typing
from collections.abc import Sequence
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from ralm_es.config import ConfigError
from ralm_es.corpora.benchmarks import sample_path
from ralm_es.embed import Encoder
from ralm_es.ingest import Ingest, IngestSettings
from ralm_es.model.spec import ModelSpec
from ralm_es.retrieve import fusion
from ralm_es.retrieve.cache import CacheError, CacheHeader, CacheHit, CacheWriter, read_cache, read_header
from ralm_es.retrieve.evaluate import sweep_settings
from ralm_es.retrieve.retriever import RetrievalError, RetrievalSettings, Retriever, search_requests
from ralm_es.retrieve.settings import RETRIEVAL_MODES, Mode
from ralm_es.store.base import Filter, Hit, StoreError
from ralm_es.store.elastic import ElasticsearchBackend, FieldMap, search_body

RALM = [sys.executable, "-m", "ralm_es.cli.main"]


def make(es_client: Elasticsearch, index: str, tiny_encoder: Encoder | None, **kw: object) -> Retriever:
    return Retriever(ElasticsearchBackend(es_client, index), tiny_encoder, RetrievalSettings(**kw))  # type: ignore[arg-type]


def test_each_mode_returns_k_ranked_hits(es_client: Elasticsearch, sample_index: str, tiny_encoder: Encoder) -> None:
    retriever = make(es_client, sample_index, tiny_encoder)
    for mode in ("bm25", "dense", "hybrid"):
        hits = retriever.search("insulin lowers blood glucose", k=5, mode=mode)
        assert len(hits) == 5
        assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
        assert all(h.id.startswith(h.doc_id + "#") and h.text for h in hits)
        assert all(a.score >= b.score for a, b in itertools.pairwise(hits))
        assert set(hits[0].scores) == {"bm25", "dense"}
    bm25 = retriever.search("peptide hormone of the pancreatic islets", k=3, mode="bm25")
    assert bm25[0].doc_id == "med-01" and bm25[0].scores["dense"] is None


def test_every_mode_the_settings_accept_has_its_strategy(
    es_client: Elasticsearch, sample_index: str, tiny_encoder: Encoder
) -> None:
    assert set(RETRIEVAL_MODES) == set(typing.get_args(Mode))
    with pytest.raises(ConfigError, match=r"retrieval\.mode must be one of bm25, dense, hybrid, got 'sparse'"):
        RetrievalSettings(mode="sparse")  # type: ignore[arg-type]
    retriever = make(es_client, sample_index, tiny_encoder)
    with pytest.raises(RetrievalError, match="unknown mode 'sparse': use bm25, dense, hybrid"):
        retriever.search("insulin", mode="sparse")  # type: ignore[arg-type]
    with pytest.raises(RetrievalError, match="unknown mode 'sparse': use bm25, dense, hybrid"):
        retriever.explain("insulin", mode="sparse")  # type: ignore[arg-type]


def test_hybrid_scores_are_rrf_of_the_component_ranks(
    es_client: Elasticsearch, sample_index: str, tiny_encoder: Encoder
) -> None:
    retriever = make(es_client, sample_index, tiny_encoder, rrf_k=60.0, depth=20)
    hits = retriever.search("football club stadium", k=10, mode="hybrid")
    for h in hits:
        expected = sum(0.5 / (60.0 + r) for r in h.ranks.values() if r is not None)
        assert h.score == pytest.approx(expected)
    bm25 = [(h.id, h.score) for h in retriever.search("football club stadium", k=20, mode="bm25")]
    dense = [(h.id, h.score) for h in retriever.search("football club stadium", k=20, mode="dense")]
    fused = fusion.rrf({"bm25": bm25, "dense": dense}, k=60.0, weights={"bm25": 0.5, "dense": 0.5})
    assert [h.id for h in hits] == [f.id for f in fused[:10]]


def test_hybrid_reads_the_fused_passages_in_full(
    es_client: Elasticsearch, sample_index: str, tiny_encoder: Encoder
) -> None:
    retriever = make(es_client, sample_index, tiny_encoder, depth=30)
    queries = ["football club stadium", "insulin lowers blood glucose", "volcanic eruption"]
    full = {h.id: h for h in retriever.search_many(["insulin"], k=60, mode="bm25")[0]}
    full |= {h.id: h for q in queries for h in retriever.search(q, k=60, mode="dense")}
    for hits in retriever.search_many(queries, k=8, mode="hybrid"):
        assert len(hits) == 8
        for h in hits:
            own = full[h.id]
            assert (h.doc_id, h.text, h.title, h.metadata) == (own.doc_id, own.text, own.title, own.metadata)
            assert h.text


class CountingClient:
    """The Elasticsearch client with its ``_msearch`` round trips counted."""

    def __init__(self, client: Elasticsearch) -> None:
        self._client = client
        self.msearches = 0

    def msearch(self, **kwargs: object) -> object:
        self.msearches += 1
        return self._client.msearch(**kwargs)

    def __getattr__(self, name: str) -> object:
        return getattr(self._client, name)


def test_inline_texts_answer_as_fetch_does_in_one_round_trip(
    es_client: Elasticsearch, sample_index: str, tiny_encoder: Encoder
) -> None:
    queries = ["football club stadium", "insulin lowers blood glucose", "volcanic eruption"]
    answers, trips, bodies = {}, {}, {}
    for texts in ("fetch", "inline"):
        client = CountingClient(es_client)
        backend = ElasticsearchBackend(client, sample_index)  # type: ignore[arg-type]
        retriever = Retriever(backend, tiny_encoder, RetrievalSettings(depth=30, texts=texts))  # type: ignore[arg-type]
        retriever.search("warm up")  # the first search also reads the mapping
        before = client.msearches
        answers[texts] = [[h.to_json() for h in hits] for hits in retriever.search_many(queries, k=8, mode="hybrid")]
        trips[texts] = client.msearches - before
        bodies[texts] = retriever.explain("insulin", k=8, mode="hybrid")
    assert answers["inline"] == answers["fetch"]
    assert all(len(hits) == 8 and all(h["text"] for h in hits) for hits in answers["inline"])
    assert trips == {"fetch": 2, "inline": 1}
    # --explain-dsl shows what is sent: ids and scores from doc values, or the texts with the vector left out.
    assert [b.get("stored_fields") for b in bodies["fetch"]] == ["_none_", "_none_"]
    assert [b.get("_source") for b in bodies["inline"]] == [{"excludes": ["vector"]}] * 2


class DeletesBeforeFetch(ElasticsearchBackend):
    """The index changes between a search and the reading of its hits: the first hit asked for is deleted."""

    deleted: str

    def fetch(self, ids: Sequence[str]) -> dict[str, Hit]:
        self.client.delete(index=self.index, id=ids[0], refresh=True)
        self.deleted = ids[0]
        return super().fetch(ids)


def test_a_passage_deleted_before_it_is_read_is_named(
    es_client: Elasticsearch, index_name: str, tiny_encoder: Encoder, tmp_path: Path
) -> None:
    backend = DeletesBeforeFetch(es_client, index_name)
    Ingest(backend, IngestSettings(), encoder=tiny_encoder, checkpoint_dir=tmp_path).run(
        [sample_path("sample_corpus.jsonl")]
    )
    retriever = Retriever(backend, tiny_encoder, RetrievalSettings(mode="hybrid"))
    with pytest.raises(RetrievalError, match=r"left index .* between the search and reading them") as raised:
        retriever.search("insulin", k=3)
    assert str(raised.value).startswith(f"passages {backend.deleted} left index '{index_name}'")


def test_hybrid_scores_are_the_linear_fusion_of_the_component_lists(
    es_client: Elasticsearch, sample_index: str, tiny_encoder: Encoder
) -> None:
    retriever = make(es_client, sample_index, tiny_encoder, fusion="linear", norm="zscore", dense_weight=0.3, depth=20)
    hits = retriever.search("capital city river", k=4, mode="hybrid")
    bm25 = [(h.id, h.score) for h in retriever.search("capital city river", k=20, mode="bm25")]
    dense = [(h.id, h.score) for h in retriever.search("capital city river", k=20, mode="dense")]
    fused = fusion.linear({"bm25": bm25, "dense": dense}, weights={"bm25": 0.7, "dense": 0.3}, norm="zscore")
    # RRF scores are sums of 0.5 / (60 + rank), all under 1/60; z-scored linear fusion gives other values and signs.
    assert [(h.id, h.score) for h in hits] == [(f.id, pytest.approx(f.score)) for f in fused[:4]]


def test_filters_and_exclusion_apply_to_both_halves(
    es_client: Elasticsearch, sample_index: str, tiny_encoder: Encoder
) -> None:
    retriever = make(es_client, sample_index, tiny_encoder)
    hits = retriever.search("company founded", k=8, filters=[Filter("topic", "term", "medicine")])
    assert hits and all(h.metadata["topic"] == "medicine" for h in hits)
    first = retriever.search("insulin", k=3)
    again = retriever.search("insulin", k=3, exclude_ids=[first[0].id])
    assert first[0].id not in {h.id for h in again}


def test_search_many_equals_a_loop_of_search(
    es_client: Elasticsearch, sample_index: str, tiny_encoder: Encoder
) -> None:
    retriever = make(es_client, sample_index, tiny_encoder)
    queries = ["insulin", "football league", "river city", "software company", "protein folding"] * 30
    many = retriever.search_many(queries, k=4)
    assert len(many) == len(queries)
    for query, hits in zip(queries[:5], many[:5], strict=True):
        assert [h.id for h in hits] == [h.id for h in retriever.search(query, k=4)]


def test_self_exclusion_by_doc_id_and_content(
    es_client: Elasticsearch, sample_index: str, tiny_encoder: Encoder
) -> None:
    record = json.loads(sample_path("sample_corpus.jsonl").read_text().splitlines()[0])
    plain = make(es_client, sample_index, tiny_encoder)
    assert plain.search(record["text"], k=3, mode="bm25")[0].doc_id == record["_id"]
    by_doc = make(es_client, sample_index, tiny_encoder, exclude="doc")
    hits = by_doc.search_many([record["text"]], k=3, mode="bm25", input_ids=[record["_id"]])[0]
    assert len(hits) == 3 and record["_id"] not in {h.doc_id for h in hits}
    by_content = make(es_client, sample_index, tiny_encoder, exclude="content")
    hits = by_content.search_many([record["text"]], k=3, mode="hybrid", input_ids=["another-id"])[0]
    assert len(hits) == 3 and record["_id"] not in {h.doc_id for h in hits}


def test_bad_queries(es_client: Elasticsearch, sample_index: str, tiny_encoder: Encoder, tiny_model_dir: Path) -> None:
    notices: list[str] = []
    retriever = Retriever(ElasticsearchBackend(es_client, sample_index), tiny_encoder, notice=notices.append)
    with pytest.raises(RetrievalError, match="empty query"):
        retriever.search("   ")
    hits = retriever.search("insulin " * 2000, k=2)
    assert len(hits) == 2 and notices and "truncated" in notices[0]
    with pytest.raises(StoreError, match=rf"'no-such-index' does not exist.*{sample_index}"):
        make(es_client, "no-such-index", None).search("insulin", mode="bm25")
    with pytest.raises(RetrievalError, match="need a query encoder"):
        make(es_client, sample_index, None).search("insulin", mode="dense")
    with pytest.raises(RetrievalError, match=r"384-dimensional.*holds 32"):
        make(es_client, sample_index, Encoder()).search("insulin", mode="hybrid")
    # k from the Python API is checked as the settings' is: 0 is not "the default", -2 not a raw client error.
    for k in (0, -2):
        with pytest.raises(RetrievalError, match=f"k must be at least 1, got {k}"):
            retriever.search("insulin", k=k)
        with pytest.raises(RetrievalError, match=f"k must be at least 1, got {k}"):
            retriever.explain("insulin", k=k)


def test_dense_on_an_index_without_vectors(es_client: Elasticsearch, index_name: str, tiny_encoder: Encoder) -> None:
    backend = ElasticsearchBackend(es_client, index_name)
    Ingest(backend, IngestSettings(embed=False, model=str(tiny_encoder.path))).run([sample_path("sample_corpus.jsonl")])
    assert make(es_client, index_name, None).search("insulin", k=1, mode="bm25")[0].doc_id == "med-01"
    with pytest.raises(RetrievalError, match="has no vectors"):
        make(es_client, index_name, tiny_encoder).search("insulin", mode="dense")


def test_query_text_never_becomes_dsl(es_client: Elasticsearch, sample_index: str, tiny_encoder: Encoder) -> None:
    hostile = '"}}, "query": {"match_all": {}}, "size": 1000, "x": {"'
    hits = make(es_client, sample_index, tiny_encoder).search(hostile, k=50, mode="bm25")
    assert len(hits) < 50  # a match_all would return every passage
    (request,) = search_requests(RetrievalSettings(), hostile, None, "bm25", 5, [], [])
    body = search_body(request, FieldMap())
    assert body["query"]["bool"]["must"][0]["multi_match"]["query"] == hostile


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RALM, *args], capture_output=True, text=True, env=env, timeout=600)


def test_retrieve_cache_round_trip_and_resume(
    es_url: str, es_client: Elasticsearch, sample_index: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "RALM_ES_URL": es_url}
    claims = tmp_path / "claims.jsonl"
    lines = sample_path("sample_claims.jsonl").read_text().splitlines()
    claims.write_text("\n".join(lines[:10]) + "\n")
    out = tmp_path / "cache.jsonl"
    common = ["--index", sample_index, "-k", "3", "--out", str(out), "--model", str(tiny_model_dir), "--quiet"]
    first = run_cli("retrieve", str(claims), *common, env=env)
    assert first.returncode == 0, first.stderr
    header, entries = read_cache(out)
    assert header.index == sample_index and header.mode == "hybrid" and header.k == 3
    assert header.encoder is not None and header.encoder.dim == 32 and header.fusion["fusion"] == "rrf"
    assert len(entries) == 10
    claim = json.loads(lines[0])
    entry = entries[str(claim["id"])]
    assert entry.query == claim["text"]
    line = json.loads(out.read_text().splitlines()[1])
    assert set(line["hits"][0]) == {"id", "doc_id", "rank", "score", "scores", "title", "text"}
    live = make(es_client, sample_index, Encoder(tiny_model_dir)).search(claim["text"], k=3)
    assert [h.id for h in entry.hits] == [h.id for h in live]
    # A hit read back is the live hit less what only a search has.
    assert entry.hits == [CacheHit(**{key: getattr(h, key) for key in line["hits"][0]}) for h in live]

    claims.write_text("\n".join(lines[:15]) + "\n")
    second = run_cli("retrieve", str(claims), *common, env=env)
    assert second.returncode == 0 and "10 inputs already retrieved" in second.stderr
    _, entries = read_cache(out)
    assert len(entries) == 15
    assert len(out.read_text().splitlines()) == 16  # header + one line per input, nothing doubled


def test_a_cache_of_one_mode_is_not_resumed_with_that_mode_ranking_otherwise(tmp_path: Path) -> None:
    # The settings that change a single mode's ranking are in the header, as hybrid's fusion settings are.
    assert RetrievalSettings(mode="bm25", title_boost=2.0).fusion_header() == {"title_boost": 2.0}
    assert RetrievalSettings(mode="dense", num_candidates=50).fusion_header() == {"num_candidates": 50}
    path = tmp_path / "cache.jsonl"

    def header(title_boost: float) -> CacheHeader:
        return CacheHeader("i", "bm25", 1, RetrievalSettings(mode="bm25", title_boost=title_boost).fusion_header())

    with CacheWriter(path, header(1.0)) as writer:
        writer.write("a", "first query", [])
    with pytest.raises(CacheError, match=r"made by another retrieval"):
        CacheWriter(path, header(20.0))


def test_a_single_mode_cache_from_before_its_ranking_was_recorded_reads_as_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "old.jsonl"
    old = {"format": "ralm-es-retrieval-cache", "version": 1, "index": "i", "mode": "bm25", "k": 1, "fusion": {}}
    path.write_text(json.dumps(old) + "\n" + json.dumps({"input_id": "a", "query": "q", "hits": []}) + "\n")
    assert read_header(path).fusion == {"title_boost": 1.0}
    # So it resumes under the default settings, and a run's score scale of then compares as before.
    header = CacheHeader("i", "bm25", 1, RetrievalSettings(mode="bm25").fusion_header())
    with CacheWriter(path, header) as writer:
        assert writer.done == {"a"}
    scale = ModelSpec.from_json({"task": "classification", "score_scale": {"mode": "dense", "fusion": {}}}).score_scale
    assert scale is not None and scale.fusion == {"num_candidates": 100}


@pytest.mark.parametrize("cut", [1, 10], ids=["complete-json-without-newline", "half-a-line"])
def test_a_resumed_cache_retrieves_again_the_line_its_run_stopped_in(tmp_path: Path, cut: int) -> None:
    path, header = tmp_path / "cache.jsonl", CacheHeader(index="i", mode="bm25", k=1)
    with CacheWriter(path, header) as writer:
        writer.write("a", "first query", [])
        writer.write("b", "second query", [])
    path.write_bytes(path.read_bytes()[:-cut])  # the run stopped while writing b's line
    with CacheWriter(path, header) as writer:
        assert writer.done == {"a"}
        writer.write("b", "second query", [])
    _, entries = read_cache(path)
    assert list(entries) == ["a", "b"] and len(path.read_text().splitlines()) == 3


def test_a_resumed_writer_answers_for_the_text_its_entries_were_retrieved_for(tmp_path: Path) -> None:
    path, header = tmp_path / "cache.jsonl", CacheHeader(index="i", mode="bm25", k=1)
    with CacheWriter(path, header) as writer:
        writer.write("a", "first  query", [])
        writer.write("b", "", [])  # a hand-made entry records no query
    with CacheWriter(path, header) as writer:
        # Whitespace aside, as training reads a cache; an entry without a query cannot be checked.
        assert writer.cached("a", "first query", "in:1") and writer.cached("b", "anything", "in:2")
        assert not writer.cached("c", "third query", "in:3")
        with pytest.raises(CacheError, match=r"input a was retrieved for 'first query', but in:1 now reads 'edited'"):
            writer.cached("a", "edited", "in:1")


_HEADER = json.dumps(CacheHeader(index="i", mode="bm25", k=1).to_json()).encode()
_ENTRY = json.dumps({"input_id": "a", "query": "q", "hits": [{"id": "p1", "rank": 1, "score": 2.0}]}).encode()


def _hit_line(**fields: object) -> bytes:
    return json.dumps({"input_id": "b", "query": "q", "hits": [{"id": "p1", **fields}]}).encode()


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([b"[1, 2]"], ":1: expected a JSON object, found list"),
        ([_HEADER, b"null"], ":2: expected a JSON object, found NoneType"),
        ([_HEADER, _ENTRY, _hit_line(rank="abc")], ":3: hit 1 needs an integer rank, found 'abc'"),
        # An integer past what a float holds (math.isfinite overflowed).
        ([_HEADER, _ENTRY, _hit_line(rank=10**400)], ":3: hit 1 needs an integer rank, found 1000"),
        ([_HEADER, _ENTRY, _hit_line(score="high")], ":3: hit 1 needs a finite number score, found 'high'"),
        # Python's json reads NaN and Infinity; a NaN score made every later loss NaN.
        ([_HEADER, _ENTRY, _hit_line(score=math.nan)], ":3: hit 1 needs a finite number score, found nan"),
        ([_HEADER, _ENTRY, _hit_line(scores="x")], ":3: hit 1 needs scores as an object of finite numbers, found 'x'"),
        (
            [_HEADER, _ENTRY, _hit_line(scores={"dense": math.inf})],
            ":3: hit 1 needs scores as an object of finite numbers, found {'dense': inf}",
        ),
        ([_HEADER, b'{"input_id": "a", "query": "caf\xff", "hits": []}'], ":2: invalid UTF-8 (byte 31 of the line)"),
        ([_HEADER, _hit_line(text="\ud800")], ":2: escaped lone surrogate '\\ud800' (\\ud800): not valid Unicode"),
        ([_HEADER, _ENTRY, _hit_line(), _ENTRY], ":4: input_id 'a' again (first at line 2); a retrieval cache holds"),
        ([_HEADER[:-1] + b', "bogus": 1}'], ":1: a cache header this version cannot read (CacheHeader.__init__"),
    ],
    ids=[
        "not-an-object",
        "null-entry",
        "rank",
        "huge-rank",
        "score",
        "nan-score",
        "scores",
        "infinite-scores",
        "invalid-utf8",
        "surrogate",
        "dup-id",
        "header",
    ],
)
def test_a_damaged_cache_fails_naming_its_file_and_line(tmp_path: Path, lines: list[bytes], message: str) -> None:
    path = tmp_path / "cache.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(CacheError, match=f"^{re.escape(f'{path}{message}')}"):
        read_cache(path)


def test_a_cache_saved_with_a_bom_reads_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "cache.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + _HEADER + b"\n" + _ENTRY + b"\n")
    assert read_header(path).index == "i"
    with CacheWriter(path, read_header(path)) as writer:
        assert writer.done == {"a"}
        writer.write("b", "q", [])
    assert list(read_cache(path)[1]) == ["a", "b"]


def test_a_line_torn_inside_a_character_is_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "cache.jsonl"
    with CacheWriter(path, CacheHeader(index="i", mode="bm25", k=1)) as writer:
        writer.write("a", "q", [])
        writer.write("b", "café", [])
    data = path.read_bytes()
    path.write_bytes(data[: data.rindex("é".encode()) + 1])  # the run stopped between the two bytes of é
    assert list(read_cache(path)[1]) == ["a"]


def test_search_cli_json_and_explain(es_url: str, sample_index: str, tiny_model_dir: Path) -> None:
    env = {**os.environ, "RALM_ES_URL": es_url}
    common = ["--index", sample_index, "--model", str(tiny_model_dir)]
    proc = run_cli("search", "insulin hormone", *common, "--mode", "bm25", "-k", "2", "--json", env=env)
    hits = json.loads(proc.stdout)
    assert len(hits) == 2 and {"id", "score", "text", "title", "doc_id", "scores"} <= set(hits[0])
    dsl = run_cli("search", "insulin", *common, "--explain-dsl", "--filter", "year>=1990", env=env)
    bodies = [json.loads(chunk.split("\n", 1)[1]) for chunk in dsl.stdout.strip().split("\n\n")]
    assert "query" in bodies[0] and "knn" in bodies[1]
    assert bodies[1]["knn"]["filter"]["bool"]["filter"] == [{"range": {"metadata.year": {"gte": 1990}}}]
    # The bodies are those the search sends: an excluded id is in both components' must_not.
    dsl = run_cli("search", "insulin", *common, "--explain-dsl", "--exclude-id", "p-7", env=env)
    bm25, dense = [json.loads(chunk.split("\n", 1)[1]) for chunk in dsl.stdout.strip().split("\n\n")]
    assert bm25["query"]["bool"]["must_not"] == [{"terms": {"id": ["p-7"]}}]
    assert dense["knn"]["filter"]["bool"]["must_not"] == [{"terms": {"id": ["p-7"]}}]
    empty = run_cli("search", "  ", *common, env=env)
    assert empty.returncode == 1 and "empty query" in empty.stderr and "Traceback" not in empty.stderr
    # An over-long query is cut to the encoder's limit with one notice, and no tokenizer warning of "indexing
    # errors" (the full query is tokenized only to count it).
    long = run_cli("search", "insulin " * 600, *common, "--mode", "dense", "-k", "1", "--json", env=env)
    assert long.returncode == 0 and len(json.loads(long.stdout)) == 1
    assert "query truncated from 600 to" in long.stderr and "indexing errors" not in long.stderr


def test_retrieval_k_of_a_config_file_is_what_search_and_retrieve_return(
    es_url: str, sample_index: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "RALM_ES_URL": es_url}
    config = tmp_path / "ralm.yaml"
    config.write_text("retrieval:\n  k: 3\n")
    common = ["--index", sample_index, "--mode", "bm25", "--config", str(config)]
    hits = json.loads(run_cli("search", "insulin hormone", *common, "--json", env=env).stdout)
    assert len(hits) == 3
    # A flag still wins over the file.
    assert len(json.loads(run_cli("search", "insulin hormone", *common, "-k", "2", "--json", env=env).stdout)) == 2
    claims = tmp_path / "claims.jsonl"
    claims.write_text(json.dumps({"id": "c1", "claim": "insulin regulates blood glucose"}) + "\n")
    out = tmp_path / "cache.jsonl"
    proc = run_cli("retrieve", str(claims), *common, "--out", str(out), "--quiet", env=env)
    assert proc.returncode == 0, proc.stderr
    header, entries = read_cache(out)
    assert header.k == 3 and len(entries["c1"].hits) == 3


def test_evaluate_cli_reports_ir_metrics(es_url: str, sample_index: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    # Each query is the full text of one passage, so BM25 must rank that passage's document first.
    corpus = [json.loads(line) for line in sample_path("sample_corpus.jsonl").read_text().splitlines()[:2]]
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps({"_id": f"q{i}", "text": d["text"]}) + "\n" for i, d in enumerate(corpus, 1)))
    qrels = tmp_path / "qrels.tsv"
    judged = "".join(f"q{i}\t{d['_id']}\t1\n" for i, d in enumerate(corpus, 1))
    qrels.write_text("query-id\tcorpus-id\tscore\n" + judged)
    env = {**os.environ, "RALM_ES_URL": es_url}
    args = ["evaluate", "--index", sample_index, "--queries", str(queries), "--qrels", str(qrels), "--json"]
    proc = run_cli(*args, "--mode", "bm25", env=env)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout)
    assert set(metrics) == {"ndcg@10", "recall@100", "mrr@10", "map", "queries"}
    assert metrics["queries"] == 2 and metrics["mrr@10"] == pytest.approx(1.0)
    sweep = run_cli(*args, "--sweep", "--model", str(tiny_model_dir), env=env)
    tuned = json.loads(sweep.stdout)
    rows = tuned["rows"]
    assert len(rows) == len(sweep_settings(RetrievalSettings())) and {r["settings"]["fusion"] for r in rows} == {
        "rrf",
        "linear",
    }
    # Two judged queries: one chooses, the other measures the choice.
    assert tuned["tuned_on"]["tune_queries"] == 1 and tuned["dev"]["queries"] == 1
    assert tuned["settings"] == rows[0]["settings"]


def test_the_text_field_of_claims_is_guessed_behind_a_bom(tmp_path: Path) -> None:
    """retrieve's --text-field auto read a BOM-led claims file as having no 'claim', and refused every record."""
    from ralm_es.cli.search_commands import guess_text_field

    claims = tmp_path / "claims.jsonl"
    claims.write_bytes(b'\xef\xbb\xbf{"id": 1, "claim": "Insulin lowers glucose."}\n')
    assert guess_text_field(str(claims)) == "claim"


def test_a_resume_over_an_edited_input_is_refused_and_counts_are_this_inputs(
    es_url: str, sample_index: str, tmp_path: Path
) -> None:
    env = {**os.environ, "RALM_ES_URL": es_url}
    lines = sample_path("sample_claims.jsonl").read_text().splitlines()
    claims = tmp_path / "claims.jsonl"
    claims.write_text("\n".join(lines[:3]) + "\n")
    out = tmp_path / "cache.jsonl"
    common = ["--index", sample_index, "--mode", "bm25", "-k", "2", "--out", str(out), "--quiet"]
    assert run_cli("retrieve", str(claims), *common, env=env).returncode == 0
    before = out.read_bytes()
    # The same ids, claim-02 with other text: its cached passages answer the old text, and were kept as done.
    claims.write_text(claims.read_text().replace("first isolated in Toronto", "discovered in Paris"))
    proc = run_cli("retrieve", str(claims), *common, env=env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1] == (
        f"ralm-es: error: {out}: input claim-02 was retrieved for 'Insulin was first isolated in Toronto.', but "
        f"{claims}:2 now reads 'Insulin was discovered in Paris.'; the input changed since, so use a new --out or "
        "delete it"
    )
    assert out.read_bytes() == before
    # Another input resumed into the cache: the count is its own, the first input's entries counted apart.
    other = tmp_path / "other.jsonl"
    other.write_text("\n".join(lines[3:5]) + "\n")
    proc = run_cli("retrieve", str(other), *common, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines()[-1] == f"2 inputs in {out} (and 3 of other inputs)"
    assert len(read_cache(out)[1]) == 5
