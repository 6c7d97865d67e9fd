"""One suite for every Backend: the Elasticsearch index on the real node, and the local folder store."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from elasticsearch import Elasticsearch

from ralm_es.corpus.types import Passage
from ralm_es.store.base import Backend, EncoderRecord, Filter, IndexSpec, SearchRequest, StoreError
from ralm_es.store.elastic import ElasticsearchBackend
from ralm_es.store.local import LocalBackend

DIMS = 4
TEXTS = [
    ("p1", "Insulin regulates glucose in the blood", "Insulin", {"topic": "medicine", "year": 2001}),
    ("p2", "The football club won the league title", "Football", {"topic": "sport", "year": 2010}),
    ("p3", "Glucose metabolism depends on insulin signalling", "Metabolism", {"topic": "medicine", "year": 2015}),
    ("p4", "Paris is the capital city of France", "Paris", {"topic": "geo", "year": 1999}),
]


def unit(*xs: float) -> list[float]:
    v = np.array(xs, dtype=np.float32)
    return (v / np.linalg.norm(v)).tolist()


VECTORS = {"p1": unit(1, 0.1, 0, 0), "p2": unit(0, 1, 0, 0), "p3": unit(0.9, 0, 0.2, 0), "p4": unit(0, 0, 0, 1)}


def passages() -> list[Passage]:
    return [
        Passage(
            id=i, doc_id=f"d-{i}", chunk=0, text=t, title=title, source=f"f.jsonl:{n}", metadata=m, vector=VECTORS[i]
        )
        for n, (i, t, title, m) in enumerate(TEXTS, 1)
    ]


@pytest.fixture(params=["elasticsearch", "local"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "local":
        yield LocalBackend(tmp_path / "local-index")
        return
    client: Elasticsearch = request.getfixturevalue("es_client")
    yield ElasticsearchBackend(client, request.getfixturevalue("index_name"))


def refresh(backend: Backend) -> None:
    if isinstance(backend, ElasticsearchBackend):
        backend.refresh()


def filled(backend: Backend) -> Backend:
    backend.ensure_index(IndexSpec(name="x", dims=DIMS, model=EncoderRecord(name="toy", dim=DIMS)))
    results = list(backend.write(passages()))
    assert [r.id for r in results] == ["p1", "p2", "p3", "p4"]
    assert all(r.ok and r.created for r in results)
    refresh(backend)
    return backend


def test_an_encoder_record_written_elsewhere_reads_back_typed(es_client: Elasticsearch, index_name: str) -> None:
    # Another tool's index: its _meta names the encoder without a runtime (torch filled it) and with a key of its own.
    recorded = {"name": "toy", "revision": "abc123", "dim": DIMS, "vendor": "other"}
    mappings = {"_meta": {"model": recorded}, "properties": {"vector": {"type": "dense_vector", "dims": DIMS}}}
    es_client.indices.create(index=index_name, mappings=mappings)
    model = ElasticsearchBackend(es_client, index_name).info().model
    assert model == EncoderRecord(name="toy", revision="abc123", dim=DIMS, runtime="torch")
    assert model.to_json() == {"name": "toy", "revision": "abc123", "dim": DIMS, "runtime": "torch"}
    es_client.indices.delete(index=index_name)
    es_client.indices.create(index=index_name, mappings={"_meta": {"model": None}})
    assert ElasticsearchBackend(es_client, index_name).info().model is None


def ids(hits: list) -> list[str]:
    return [h.id for h in hits]


def test_write_count_and_idempotence(backend: Backend) -> None:
    filled(backend)
    assert backend.count() == 4
    again = list(backend.write(passages()))
    assert all(r.ok and not r.created for r in again)
    refresh(backend)
    assert backend.count() == 4
    info = backend.info()
    assert info.count == 4 and info.dims == DIMS and info.model == EncoderRecord(name="toy", dim=DIMS)


def test_bm25_and_dense_rank_the_relevant_passage_first(backend: Backend) -> None:
    filled(backend)
    bm25 = backend.search(SearchRequest(mode="bm25", text="insulin glucose", k=3))
    assert set(ids(bm25)[:2]) == {"p1", "p3"} and len(bm25) <= 3
    assert bm25[0].doc_id.startswith("d-") and bm25[0].text and bm25[0].title
    dense = backend.search(SearchRequest(mode="dense", vector=unit(0, 0, 0.1, 1), k=2))
    assert ids(dense)[0] == "p4" and len(dense) == 2
    assert dense[0].score >= dense[1].score


def test_filters_and_exclusion_apply_to_both_modes(backend: Backend) -> None:
    filled(backend)
    query = unit(1, 0, 0.1, 0)
    for mode in ("bm25", "dense"):
        # A text that BM25 matches in every passage, so each filter alone decides what comes back.
        def search(mode: str = mode, **kw: object) -> list[str]:
            text = "insulin glucose football Paris"
            return ids(backend.search(SearchRequest(mode=mode, text=text, vector=query, k=4, **kw)))

        assert set(search()) == {"p1", "p2", "p3", "p4"}
        assert set(search(filters=[Filter("topic", "term", "medicine")])) == {"p1", "p3"}
        assert set(search(filters=[Filter("topic", "terms", ["sport", "geo"])])) == {"p2", "p4"}
        assert set(search(filters=[Filter("year", "range", {"gte": 2005})])) == {"p2", "p3"}
        excluded = search(exclude_ids=["p1"])
        assert "p1" not in excluded and "p3" in excluded


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        ("range", {"gte": 1, "after": 2}, "range filter on 'year' takes a dict of gte"),
        ("range", 3, "range filter on 'year'"),
        ("terms", [], "terms filter on 'year' takes a non-empty list"),
        ("term", [1, 2], "term filter on 'year' takes one value"),
        ("between", 1, "unknown kind 'between'"),
    ],
)
def test_a_malformed_filter_is_refused_whatever_the_backend(kind: str, value: object, message: str) -> None:
    """The filter itself refuses: Elasticsearch dropped a range's unknown bound and took an unknown kind for a
    range, where the local store refused both."""
    with pytest.raises(StoreError, match=message):
        Filter("year", kind, value)  # type: ignore[arg-type]
    # What both stores took before stays a filter: a set or tuple of values, float bounds.
    assert Filter("year", "terms", {2000, 2001}).value == {2000, 2001}
    assert Filter("year", "range", {"gte": 1.5}).kind == "range"


def test_a_filter_on_a_field_no_passage_has_is_refused_until_one_has_it(backend: Backend) -> None:
    filled(backend)
    for mode in ("bm25", "dense"):
        typo = SearchRequest(mode=mode, text="insulin", vector=unit(1, 0, 0, 0), filters=[Filter("yaer", "term", 1)])
        with pytest.raises(StoreError) as refused:
            backend.search(typo)
        message = str(refused.value)
        assert "'yaer'" in message and backend.index in message and "topic, year" in message
    later = dataclasses.replace(passages()[0], id="p5", metadata={"yaer": 1})
    assert all(r.ok for r in backend.write([later]))
    refresh(backend)
    assert ids(backend.search(typo)) == ["p5"]


def test_search_many_equals_a_loop_of_search(backend: Backend) -> None:
    filled(backend)
    requests = [
        SearchRequest(mode="bm25", text="capital of France", k=2),
        SearchRequest(mode="dense", vector=unit(0, 1, 0, 0), k=2),
        SearchRequest(mode="bm25", text="league football", k=3, exclude_ids=["p2"]),
    ]
    many = backend.search_many(requests)
    assert [ids(h) for h in many] == [ids(backend.search(r)) for r in requests]


def test_light_hits_then_fetch_give_the_full_hits(backend: Backend) -> None:
    filled(backend)
    for request in (
        SearchRequest(mode="bm25", text="insulin glucose", k=3),
        SearchRequest(mode="dense", vector=unit(1, 0, 0.1, 0), k=3),
    ):
        full = backend.search(request)
        light = backend.search(dataclasses.replace(request, bodies=False))
        assert [(h.id, h.doc_id, h.score) for h in light] == [(h.id, h.doc_id, h.score) for h in full]
        assert all(h.complete for h in full) and not any(h.complete or h.text or h.title for h in light)
        fetched = backend.fetch([*ids(light), "no-such-passage"])
        assert sorted(fetched) == sorted(ids(full))
        assert [dataclasses.replace(fetched[h.id], score=h.score) for h in full] == full


def test_dims_mismatch_refused_with_both_numbers(backend: Backend) -> None:
    filled(backend)
    with pytest.raises(StoreError, match=r"4.*8|8.*4"):
        backend.ensure_index(IndexSpec(name="x", dims=8))


def test_bad_vectors_reported_per_item_rest_written(backend: Backend) -> None:
    backend.ensure_index(IndexSpec(name="x", dims=DIMS))
    good, short, missing = passages()[:3]
    short.vector = [1.0, 0.0]
    missing.vector = None
    results = {r.id: r for r in backend.write([good, short, missing])}
    assert results["p1"].ok
    assert not results["p2"].ok and results["p2"].source == "f.jsonl:2" and results["p2"].error
    assert not results["p3"].ok and results["p3"].error
    refresh(backend)
    assert backend.count() == 1


def test_dense_search_on_bm25_only_index(backend: Backend) -> None:
    backend.ensure_index(IndexSpec(name="x", dims=None))
    items = passages()
    for p in items:
        p.vector = None
    assert all(r.ok for r in backend.write(items))
    refresh(backend)
    assert ids(backend.search(SearchRequest(mode="bm25", text="Paris", k=1))) == ["p4"]
    with pytest.raises(StoreError, match="no vector"):
        backend.search(SearchRequest(mode="dense", vector=unit(1, 0, 0, 0), k=1))


def test_explain_dsl_is_elasticsearch_only(backend: Backend) -> None:
    request = SearchRequest(mode="bm25", text="insulin", k=3)
    if isinstance(backend, LocalBackend):
        with pytest.raises(StoreError, match="sends no Elasticsearch requests"):
            backend.request_body(request)
    else:
        assert backend.request_body(request)["query"]["bool"]["must"][0]["multi_match"]["query"] == "insulin"
    assert "fuse" in backend.fusion_notice()
