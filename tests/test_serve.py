"""The REST service on the real node: every endpoint, auth on and off, the limits, logs, CORS, a schemathesis run
over the OpenAPI document, and ``ralm-es serve`` as a real uvicorn process."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import gc
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
import yaml
from elasticsearch import Elasticsearch
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from ralm_es.config import ConfigError, ConnectionSettings, Secret
from ralm_es.corpora.benchmarks import sample_path
from ralm_es.embed import Encoder, TorchNetwork
from ralm_es.es.client import build_client
from ralm_es.ingest import Ingest, IngestSettings
from ralm_es.retrieve.cache import CacheHeader, CacheWriter
from ralm_es.retrieve.retriever import RetrievalSettings, Retriever
from ralm_es.serve.app import create_app
from ralm_es.serve.predictor import PredictInput, Predictor
from ralm_es.serve.settings import ServeSettings
from ralm_es.store.elastic import ElasticsearchBackend
from ralm_es.store.local import LocalBackend
from ralm_es.tasks.ner import read_ner
from ralm_es.train.config import load_config
from ralm_es.train.loop import train

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def retriever(es_client: Elasticsearch, sample_index: str, tiny_encoder: Encoder) -> Retriever:
    return Retriever(ElasticsearchBackend(es_client, sample_index), tiny_encoder, RetrievalSettings(mode="hybrid", k=5))


def train_run(folder: Path, model: Path, task: dict[str, Any], data: dict[str, str], fusion: str) -> Path:
    config = {
        "task": task,
        "data": data,
        "model": {"encoder": str(model), "fusion": fusion, "k": 3, "max_length": 48, "passage_max_length": 16},
        "train": {"epochs": 1, "max_steps": 3, "batch_size": 8, "eval_every": 100, "device": "cpu", "threads": 1},
        "run": {"out": str(folder / "run"), "progress": False},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return train(load_config(path)).out


@pytest.fixture(scope="module")
def ner_predictor(retriever: Retriever, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    """A NER run with attention fusion, trained on the sample sentences with passages retrieved from the index."""
    folder = tmp_path_factory.mktemp("ner-run")
    examples = read_ner(sample_path("sample_ner.txt"))
    cache = folder / "train.cache.jsonl"
    found = retriever.search_many([ex.text for ex in examples], k=3, mode="bm25")
    with CacheWriter(cache, CacheHeader(index="sample", mode="bm25", k=3)) as writer:
        for ex, hits in zip(examples, found, strict=True):
            writer.write(ex.id, ex.text, hits)
    data = {"train": str(sample_path("sample_ner.txt")), "train_cache": str(cache)}
    run = train_run(folder, tiny_model_dir, {"type": "ner"}, data, "attention")
    return Predictor.open(run, retriever.with_settings(RetrievalSettings(mode="bm25")), device="cpu")


@pytest.fixture(scope="module")
def claim_predictor(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    folder = tmp_path_factory.mktemp("claim-run")
    data = {"train": str(sample_path("sample_claims.jsonl"))}
    run = train_run(folder, tiny_model_dir, {"type": "classification"}, data, "none")
    return Predictor.open(run, None, device="cpu")


def client_for(retriever: Retriever, predictor: Predictor | None = None, **kw: Any) -> TestClient:
    return TestClient(create_app(ServeSettings(**kw), retriever, predictor))


def test_search_returns_the_hits_of_the_library(retriever: Retriever) -> None:
    api = client_for(retriever)
    for mode in ("bm25", "dense", "hybrid"):
        resp = api.post("/search", json={"text": "insulin lowers blood glucose", "k": 4, "mode": mode})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        expected = [h.to_json() for h in retriever.search("insulin lowers blood glucose", k=4, mode=mode)]
        assert body["mode"] == mode and body["hits"] == expected
    default = api.post("/search", json={"text": "insulin"}).json()
    assert default["mode"] == "hybrid" and len(default["hits"]) == 5
    filtered = api.post(
        "/search",
        json={"text": "company founded", "k": 8, "filters": [{"field": "topic", "kind": "term", "value": "medicine"}]},
    ).json()
    assert filtered["hits"] and all(h["metadata"]["topic"] == "medicine" for h in filtered["hits"])
    first = default["hits"][0]["id"]
    again = api.post("/search", json={"text": "insulin", "exclude_ids": [first]}).json()
    assert first not in {h["id"] for h in again["hits"]}


def test_the_loaded_models_are_out_of_the_collectors_reach_while_the_app_serves(retriever: Retriever) -> None:
    assert retriever.encoder is not None
    assert isinstance(retriever.encoder.network, TorchNetwork)
    model = retriever.encoder.network.model
    # gc.get_objects lists what a collection walks; the frozen objects are not among them.
    assert any(obj is model for obj in gc.get_objects())
    with TestClient(create_app(ServeSettings(), retriever)) as api:
        assert api.post("/search", json={"text": "insulin", "k": 2}).status_code == 200
        assert not any(obj is model for obj in gc.get_objects())
    assert any(obj is model for obj in gc.get_objects())


def test_retrieve_is_search_many(retriever: Retriever) -> None:
    api = client_for(retriever)
    texts = ["insulin", "football league", "river city"]
    body = {"inputs": [{"id": f"q{i}", "text": t} for i, t in enumerate(texts)], "k": 3, "mode": "bm25"}
    resp = api.post("/retrieve", json=body)
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    expected = retriever.search_many(texts, k=3, mode="bm25")
    assert [r["id"] for r in results] == ["q0", "q1", "q2"]
    assert [[h["id"] for h in r["hits"]] for r in results] == [[h.id for h in hits] for hits in expected]
    since_1990 = {"field": "year", "kind": "range", "value": {"gte": 1990}}
    ranged = api.post("/retrieve", json={"inputs": [{"text": "discovery"}], "filters": [since_1990]}).json()
    assert all(h["metadata"]["year"] >= 1990 for h in ranged["results"][0]["hits"])


def test_retrieve_excludes_each_input_by_its_document_id(retriever: Retriever) -> None:
    """A server that excludes inputs by document id gets the ids of /retrieve's inputs (it refused them all)."""
    own = retriever.search_many(["insulin"], k=1, mode="bm25")[0][0].doc_id
    api = client_for(retriever.with_settings(RetrievalSettings(mode="bm25", k=5, exclude="doc")))
    body = {"inputs": [{"id": own, "text": "insulin"}, {"id": "elsewhere", "text": "insulin"}], "mode": "bm25"}
    resp = api.post("/retrieve", json=body)
    assert resp.status_code == 200, resp.text
    mine, other = ([h["doc_id"] for h in r["hits"]] for r in resp.json()["results"])
    assert own not in mine and mine
    assert own in other
    assert api.post("/search", json={"text": "insulin", "mode": "bm25"}).status_code == 200


def test_predict_excludes_each_input_by_its_document_id(retriever: Retriever, ner_predictor: Predictor) -> None:
    """A server that excludes inputs by document id gets the ids of /predict's inputs (it refused them all), and
    a position standing in for a missing id is no document id."""
    words = ["insulin", "discovery"]
    own = retriever.search_many([" ".join(words)], k=1, mode="bm25")[0][0].doc_id
    excluding = retriever.with_settings(RetrievalSettings(mode="bm25", exclude="doc"))
    api = client_for(excluding, Predictor(ner_predictor.run, excluding))
    inputs = [{"id": own, "words": words}, {"id": "elsewhere", "words": words}]
    resp = api.post("/predict", json={"inputs": inputs, "explain": True})
    assert resp.status_code == 200, resp.text
    mine, other = ([p["doc_id"] for p in pred["passages"]] for pred in resp.json()["predictions"])
    assert own not in mine and mine
    assert own in other
    # A position standing in for a missing id is reported, and is no document id.
    (positional,) = Predictor(ner_predictor.run, excluding).predict([PredictInput(words, fallback_id=own)], True)
    assert positional.id == own and own in [p["doc_id"] for p in positional.passages or []]
    # Retriever.search is a free query, as /search's: no input id to exclude by, so it is answered.
    assert own in {h.doc_id for h in excluding.search(" ".join(words), k=3)}


def test_predict_ner_entities_with_explain(retriever: Retriever, ner_predictor: Predictor) -> None:
    api = client_for(retriever, ner_predictor)
    words = ["Frederick", "Banting", "isolated", "insulin", "in", "Toronto", "."]
    resp = api.post("/predict", json={"inputs": [{"id": "s1", "words": words}, {"text": "Eli Lilly sold it"}]})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["task"] == "ner"
    first, second = body["predictions"]
    assert first["id"] == "s1" and first["words"] == words and len(first["tags"]) == len(words)
    assert second["id"] == "1" and second["words"] == ["Eli", "Lilly", "sold", "it"]
    labels = set(ner_predictor.info()["labels"])
    assert set(first["tags"]) <= labels and "passages" not in first
    for pred in body["predictions"]:
        # Entities are exactly the B-/I- spans of the tags: each listed one is a span, and every span is listed
        # (a span starts at a B-, or at an I- after O or another type).
        tags = pred["tags"]
        starts = [
            i
            for i, tag in enumerate(tags)
            if tag != "O" and (tag.startswith("B-") or i == 0 or tags[i - 1] == "O" or tags[i - 1][2:] != tag[2:])
        ]
        assert [entity["start"] for entity in pred["entities"]] == starts
        assert sum(entity["end"] - entity["start"] for entity in pred["entities"]) == sum(t != "O" for t in tags)
        for entity in pred["entities"]:
            span = tags[entity["start"] : entity["end"]]
            assert span[0] in (f"B-{entity['type']}", f"I-{entity['type']}")
            assert all(t == f"I-{entity['type']}" for t in span[1:])
            assert entity["text"] == " ".join(pred["words"][entity["start"] : entity["end"]])
    explained = api.post("/predict", json={"inputs": [{"words": words}], "explain": True}).json()["predictions"][0]
    expected = retriever.search_many([" ".join(words)], k=3, mode="bm25")[0]
    assert [p["id"] for p in explained["passages"]] == [h.id for h in expected]
    assert len(explained["weights"]) == len(words)
    assert all(len(row) == 3 for row in explained["weights"])
    assert all(sum(row) == pytest.approx(1.0, abs=1e-4) for row in explained["weights"])


def test_concurrent_predictions_match_single_ones(retriever: Retriever, ner_predictor: Predictor) -> None:
    """Predictions answered in one batch (ids numbered per request, passages retrieved batch-wide) are the ones
    each request gets alone."""
    app = create_app(ServeSettings(batch_wait_ms=20), retriever, ner_predictor)
    sentences = ["Frederick Banting isolated insulin in Toronto .", "Eli Lilly sold it", "NASA flew to the Moon"]
    bodies = [
        {"inputs": [{"text": sentences[0]}, {"id": "b", "text": sentences[1]}]},
        {"inputs": [{"words": sentences[2].split()}], "explain": True},
        {"inputs": [{"text": sentences[1]}]},
        {"inputs": [{"text": sentences[0]}, {"text": sentences[2]}], "explain": True},
    ]

    async def scenario() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as api:
            return list(await asyncio.gather(*[api.post("/predict", json=body) for body in bodies]))

    for body, resp in zip(bodies, asyncio.run(scenario()), strict=True):
        assert resp.status_code == 200, resp.text
        inputs = [
            PredictInput(words=(item.get("words") or item["text"].split()), id=item.get("id"))
            for item in body["inputs"]
        ]
        alone = [r.to_json() for r in ner_predictor.predict(inputs, explain=body.get("explain", False))]
        got = resp.json()["predictions"]
        assert [(p["id"], p["tags"], p.get("passages")) for p in got] == [
            (r["id"], r["tags"], r.get("passages")) for r in alone
        ]
        for pred, record in zip(got, alone, strict=True):
            assert (pred.get("weights") is None) == (record.get("weights") is None)
            for row, expected in zip(pred.get("weights") or [], record.get("weights") or [], strict=True):
                assert row == pytest.approx(expected, abs=1e-5)


def test_health_and_indices_of_a_local_index(tmp_path: Path, tiny_encoder: Encoder) -> None:
    backend = LocalBackend(tmp_path / "index")
    Ingest(backend, IngestSettings(), encoder=tiny_encoder, checkpoint_dir=tmp_path / "ckpt").run(
        [sample_path("sample_corpus.jsonl")]
    )
    api = client_for(Retriever(backend, tiny_encoder))
    health = api.get("/health").json()
    assert health["status"] == "ok" and health["cluster"] == {"reachable": True, "name": backend.index, "status": None}
    assert health["index"]["count"] == backend.count() > 0 and health["index"]["dims"] == 32
    assert api.get("/indices").json() == [
        {
            "index": backend.index,
            "docs": backend.count(),
            "health": None,
            "aliases": [],
            "vectors": {"vector": 32},
            "serving": True,
        }
    ]
    gone = client_for(Retriever(LocalBackend(tmp_path / "missing"), tiny_encoder)).get("/health")
    assert gone.status_code == 503 and gone.json()["cluster"]["error"] == "no such folder"


def test_predict_classification_and_without_a_model(retriever: Retriever, claim_predictor: Predictor) -> None:
    api = client_for(retriever, claim_predictor)
    resp = api.post("/predict", json={"inputs": [{"id": "c", "text": "Insulin is made in the pancreas."}]})
    assert resp.status_code == 200, resp.text
    (pred,) = resp.json()["predictions"]
    assert resp.json()["task"] == "classification"
    assert pred["label"] in claim_predictor.info()["labels"] and 0 < pred["probability"] <= 1
    assert "tags" not in pred
    missing = client_for(retriever).post("/predict", json={"inputs": [{"text": "x"}]})
    assert missing.status_code == 404 and "--model RUN_DIR" in missing.json()["detail"]
    # A lone surrogate (valid JSON, no valid text) reaches no tokenizer: this model reads no passages, so no
    # retriever would have refused it.
    torn = b'{"inputs": [{"text": "Insulin."}, {"text": "Insulin \\ud800 pancreas."}]}'
    resp = api.post("/predict", content=torn, headers={"Content-Type": "application/json"})
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"] == "inputs[1]: text is not valid Unicode: lone surrogate \\ud800 at character 8"


def test_retrieve_names_the_input_it_refuses(retriever: Retriever) -> None:
    api = client_for(retriever)
    empty = api.post("/retrieve", json={"inputs": [{"text": "insulin"}, {"text": "  "}, {"text": "football"}]})
    assert empty.status_code == 400 and empty.json()["detail"].startswith("inputs[1]: empty query")
    torn = b'{"inputs": [{"text": "insulin \\udc80"}]}'
    resp = api.post("/retrieve", content=torn, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400 and resp.json()["detail"].startswith("inputs[0]: text is not valid Unicode")


def test_health_and_indices(retriever: Retriever, sample_index: str, ner_predictor: Predictor) -> None:
    api = client_for(retriever, ner_predictor)
    health = api.get("/health")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok" and body["cluster"]["reachable"] and body["cluster"]["status"] in ("green", "yellow")
    assert body["index"]["name"] == sample_index and body["index"]["count"] > 0 and body["index"]["dims"] == 32
    assert body["model"]["loaded"] and body["model"]["task"] == "ner" and body["model"]["fusion"] == "attention"
    indices = api.get("/indices").json()
    mine = [i for i in indices if sample_index in i["aliases"]]
    assert len(mine) == 1 and mine[0]["serving"] and mine[0]["vectors"] == {"vector": 32} and mine[0]["docs"] > 0
    assert not any(i["index"].startswith(".") for i in indices)
    assert client_for(retriever).get("/health").json()["model"] == {"loaded": False}


def test_unreachable_cluster_is_503(tiny_encoder: Encoder) -> None:
    dead = build_client(ConnectionSettings(hosts=["http://127.0.0.1:9"], max_retries=0, request_timeout=2))
    api = client_for(Retriever(ElasticsearchBackend(dead, "passages"), tiny_encoder))
    health = api.get("/health")
    assert health.status_code == 503 and health.json()["status"] == "unavailable"
    assert not health.json()["cluster"]["reachable"]
    resp = api.post("/search", json={"text": "insulin", "mode": "bm25"})
    assert resp.status_code == 503 and "Elasticsearch is unavailable" in resp.json()["detail"]


def test_an_elasticsearch_refusal_is_the_line_the_command_line_prints(
    retriever: Retriever, es_client: Elasticsearch
) -> None:
    """The service wrote Elasticsearch's refusals its own way, the command line another (a closed index: its
    passage count, which a hybrid search reads first, is refused)."""
    name = f"closed-{uuid.uuid4().hex[:8]}"
    es_client.indices.create(index=name, mappings={"properties": {"text": {"type": "text"}}})
    es_client.indices.close(index=name)
    try:
        closed = Retriever(ElasticsearchBackend(es_client, name), retriever.encoder, RetrievalSettings(mode="hybrid"))
        api = client_for(closed)
        resp = api.post("/search", json={"text": "insulin"})
        assert resp.status_code == 400
        detail = resp.json()["detail"]
        assert detail == f"Elasticsearch refused the request: 400 index_closed_exception: closed (index '{name}')"
    finally:
        es_client.indices.delete(index=name)


def test_library_errors_are_4xx_with_the_message(retriever: Retriever, es_client: Elasticsearch) -> None:
    api = client_for(retriever)
    empty = api.post("/search", json={"text": "   "})
    assert empty.status_code == 400 and "empty query" in empty.json()["detail"]
    unknown = client_for(Retriever(ElasticsearchBackend(es_client, "no-such-index"), None))
    resp = unknown.post("/search", json={"text": "insulin", "mode": "bm25"})
    assert resp.status_code == 400 and "'no-such-index' does not exist" in resp.json()["detail"]
    no_encoder = unknown.post("/search", json={"text": "insulin", "mode": "dense"})
    assert no_encoder.status_code == 400 and "query encoder" in no_encoder.json()["detail"]
    bad_filter = api.post("/search", json={"text": "x", "filters": [{"field": "year", "kind": "range", "value": 3}]})
    assert bad_filter.status_code == 422 and "range filter" in bad_filter.text
    typo = api.post("/search", json={"text": "x", "filters": [{"field": "topik", "value": "medicine"}]})
    assert typo.status_code == 400 and "filter on 'topik': no passage in index" in typo.json()["detail"]
    extra = api.post("/search", json={"text": "x", "size": 1000})
    assert extra.status_code == 422 and "size" in extra.text


def test_a_model_that_reads_more_passages_than_the_limit_never_starts(
    retriever: Retriever, ner_predictor: Predictor, claim_predictor: Predictor
) -> None:
    two = retriever.with_settings(dataclasses.replace(retriever.settings, k=2))
    with pytest.raises(ConfigError, match=r"reads k=3 passages an input, over serve\.max_k=2"):
        create_app(ServeSettings(max_k=2), two, ner_predictor)
    create_app(ServeSettings(max_k=3), two, ner_predictor)
    # A model without passages (fusion none, k=3 in its spec) retrieves nothing: no limit to hold.
    create_app(ServeSettings(max_k=2), two, claim_predictor)


def test_limits(retriever: Retriever) -> None:
    api = client_for(retriever, max_k=10, max_batch=2, max_text_chars=50, max_body_bytes=2000)
    too_many = api.post("/search", json={"text": "insulin", "k": 11})
    assert too_many.status_code == 422 and "k=11 is over this server's limit of 10" in too_many.json()["detail"]
    batch = api.post("/retrieve", json={"inputs": [{"text": "a"}, {"text": "b"}, {"text": "c"}]})
    assert batch.status_code == 413 and "3 inputs" in batch.json()["detail"]
    long = api.post("/search", json={"text": "insulin " * 10})
    assert long.status_code == 413 and "80 characters" in long.json()["detail"]
    body = api.post("/search", json={"text": "x", "exclude_ids": ["id"] * 500})
    assert body.status_code == 413 and "limit of 2000" in body.json()["detail"]
    assert api.post("/search", json={"text": "insulin", "k": 10}).status_code == 200
    # A request without k gets retrieval.k passages, so a server whose retrieval.k is over its limit never starts.
    with pytest.raises(ConfigError, match=r"retrieval.k=5 is over serve.max_k=4"):
        client_for(retriever, max_k=4)


class Body:
    """A chunked request body of ``total`` bytes that records how much of it the client was asked to send."""

    def __init__(self, total: int, chunk: int = 65536) -> None:
        self.total, self.chunk, self.sent = total, chunk, 0

    def __iter__(self) -> Iterator[bytes]:
        while self.sent < self.total:
            self.sent += self.chunk
            yield b" " * self.chunk


@contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """``app`` on a real uvicorn server in a thread: the body arrives over a socket, chunk by chunk."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_body_limit_holds_for_chunked_bodies(retriever: Retriever) -> None:
    app = create_app(ServeSettings(max_body_bytes=100_000), retriever)
    with live_server(app) as url:
        body = Body(64 * 1024 * 1024)
        resp = httpx.post(f"{url}/search", content=body, headers={"Content-Type": "application/json"}, timeout=60)
        assert resp.status_code == 413, resp.text
        assert "over this server's limit of 100000" in resp.json()["detail"]
        # Refused once the limit was crossed: the client never had to produce most of the 64 MiB (what it did
        # send beyond the limit sat in socket buffers when the server closed the connection).
        assert body.sent < body.total // 4
        # A chunked body under the limit reaches the endpoint whole.
        small = (json.dumps({"text": "insulin", "k": 2, "mode": "bm25"}).encode(),)
        ok = httpx.post(f"{url}/search", content=iter(small), headers={"Content-Type": "application/json"})
        assert ok.status_code == 200 and len(ok.json()["hits"]) == 2
        declared = httpx.post(f"{url}/search", content=b" " * 100_001, headers={"Content-Type": "application/json"})
        assert declared.status_code == 413 and "body of 100001 bytes" in declared.json()["detail"]


def test_auth_on_and_off(retriever: Retriever, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ralm_es.serve.access")
    secured = client_for(retriever, token=Secret(TOKEN))
    request = {"text": "a very private query", "mode": "bm25"}
    for headers in ({}, {"Authorization": "Bearer guess-123"}, {"Authorization": f"Basic {TOKEN}"}):
        resp = secured.post("/search", json=request, headers=headers)
        assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer"
        assert TOKEN not in resp.text and "guess-123" not in resp.text
    assert secured.get("/indices").status_code == 401
    assert secured.post("/search", json=request, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert secured.get("/health").status_code == 200
    open_api = client_for(retriever)
    assert open_api.post("/search", json=request).status_code == 200
    assert "securitySchemes" not in open_api.get("/openapi.json").json().get("components", {})
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "ralm_es.serve.access"]
    assert [line["status"] for line in lines[:3]] == [401, 401, 401]
    assert all({"method", "path", "status", "duration_ms"} <= set(line) for line in lines)
    assert lines[0]["method"] == "POST" and lines[0]["path"] == "/search" and lines[0]["duration_ms"] >= 0
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert TOKEN not in logged and "private query" not in logged


def test_openapi_pages_want_the_token_unless_opened(retriever: Retriever) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    secured = client_for(retriever, token=Secret(TOKEN))
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert secured.get(path).status_code == 401, path
        assert secured.get(path, headers={"Authorization": "Bearer guess-123"}).status_code == 401, path
        assert secured.get(path, headers=auth).status_code == 200, path
    schema = secured.get("/openapi.json", headers=auth).json()
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    assert set(schema["paths"]) == {"/search", "/retrieve", "/predict", "/health", "/indices"}
    assert "/openapi.json" in secured.get("/docs", headers=auth).text
    assert "/openapi.json" in secured.get("/redoc", headers=auth).text
    opened = client_for(retriever, token=Secret(TOKEN), open_docs=True)
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert opened.get(path).status_code == 200, path
    assert opened.get("/openapi.json").json() == schema
    assert opened.post("/search", json={"text": "insulin"}).status_code == 401
    assert opened.get("/indices").status_code == 401
    # Without a token the whole API is open, the pages with it.
    assert all(client_for(retriever).get(path).status_code == 200 for path in ("/openapi.json", "/docs", "/redoc"))


def test_cors_is_off_unless_configured(retriever: Retriever) -> None:
    preflight = {"Origin": "https://kibana.example", "Access-Control-Request-Method": "POST"}
    off = client_for(retriever).options("/search", headers=preflight)
    assert "access-control-allow-origin" not in off.headers
    api = client_for(retriever, cors_origins=["https://kibana.example"])
    on = api.options("/search", headers=preflight)
    assert on.status_code == 200 and on.headers["access-control-allow-origin"] == "https://kibana.example"
    other = api.options("/search", headers={**preflight, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_openapi_fuzz_never_gives_a_server_error(retriever: Retriever, ner_predictor: Predictor) -> None:
    """Schemathesis cases for every operation of the OpenAPI document (25 each), with a model loaded."""
    app = create_app(ServeSettings(max_k=20, max_batch=8, max_text_chars=500), retriever, ner_predictor)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} == {
        "POST /search",
        "POST /retrieve",
        "POST /predict",
        "GET /health",
        "GET /indices",
    }
    statuses: dict[str, list[int]] = {op.path: [] for op in operations}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def never_5xx(case: Any) -> None:
            statuses[case.operation.path].append(case.call_and_validate(checks=[not_a_server_error]).status_code)

        never_5xx()
    # Every operation was exercised, and some generated requests got through to the node.
    assert all(any(200 <= c < 300 for c in codes) for codes in statuses.values()), statuses


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_ralm_es_serve_runs_uvicorn_and_shuts_down_gracefully(es_url: str, sample_index: str, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "RALM_ES_URL": es_url, "RALM_ES_API_TOKEN": TOKEN}
    # Limits from the config file's serve: section, the rest from flags.
    config = tmp_path / "ralm.yaml"
    config.write_text(yaml.safe_dump({"serve": {"max_k": 3, "port": 1}, "retrieval": {"k": 3}}))
    args = ["--config", str(config), "serve", "--index", sample_index, "--mode", "bm25", "--port", str(port)]
    args += ["--open-docs"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ralm_es.cli.main", *args], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                health = httpx.get(f"{url}/health", timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                time.sleep(0.2)
        assert health.status_code == 200 and health.json()["index"]["name"] == sample_index
        # --open-docs: the OpenAPI pages answer without the token, the API does not.
        assert httpx.get(f"{url}/openapi.json").status_code == 200 and httpx.get(f"{url}/docs").status_code == 200
        auth = {"Authorization": f"Bearer {TOKEN}"}
        hits = httpx.post(f"{url}/search", json={"text": "insulin", "k": 2}, headers=auth, timeout=30).json()["hits"]
        assert len(hits) == 2 and hits[0]["doc_id"] == "med-01"
        assert httpx.post(f"{url}/search", json={"text": "insulin", "k": 4}, headers=auth).status_code == 422
        assert httpx.get(f"{url}/indices").status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    # uvicorn finishes open requests and shuts the app down, then re-raises the signal it caught.
    assert proc.returncode == -signal.SIGTERM, stderr
    assert "Application shutdown complete" in stderr and "Finished server process" in stderr
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert [(line["method"], line["path"], line["status"]) for line in lines[-3:]] == [
        ("POST", "/search", 200),
        ("POST", "/search", 422),
        ("GET", "/indices", 401),
    ]
    assert TOKEN not in stderr


def test_serve_workers_answer_on_one_port_and_stop_together(es_url: str, sample_index: str, tmp_path: Path) -> None:
    port = free_port()
    args = ["serve", "--index", sample_index, "--mode", "bm25", "--port", str(port), "--workers", "2"]
    env = {**os.environ, "RALM_ES_URL": es_url}
    # A file, not a pipe: a pipe nobody reads fills with the workers' access log and stalls them.
    log = tmp_path / "serve.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "ralm_es.cli.main", *args], env=env, stderr=stderr)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while "2 workers (pids" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.5)
        # Once serve says so, both workers listen, and new connections are spread over them (all 32 on one
        # worker: a chance of 2 in 2**32).
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: httpx.get(f"{url}/health", timeout=10), range(32)))
            pids = {answer.json()["pid"] for answer in answers}
            threads = {answer.json()["threads"] for answer in answers}
            searches = pool.map(
                lambda _: httpx.post(f"{url}/search", json={"text": "insulin", "k": 3}, timeout=60), range(16)
            )
            hits = {tuple(hit["id"] for hit in answer.json()["hits"]) for answer in searches}
        assert len(pids) == 2 and proc.pid not in pids
        # Each worker runs on its share of the cores, not on all of them.
        assert threads == {max(1, (os.cpu_count() or 1) // 2)}
        assert len(hits) == 1 and len(next(iter(hits))) == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=90)
    printed = log.read_text()
    assert proc.returncode == 0, printed
    started = re.search(rf"2 workers \(pids (\d+), (\d+)\) on {url}", printed)
    assert started is not None and set(map(int, started.groups())) == pids
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_serve_workers_that_cannot_start_fail_in_one_line(es_url: str) -> None:
    args = ["serve", "--index", "no-such-index", "--mode", "bm25", "--port", str(free_port()), "--workers", "3"]
    env = {**os.environ, "RALM_ES_URL": es_url}
    done = subprocess.run(
        [sys.executable, "-m", "ralm_es.cli.main", *args], env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 1
    assert done.stderr.strip().startswith("ralm-es: error: index or alias 'no-such-index' does not exist")
    assert len(done.stderr.strip().splitlines()) == 1


def test_serve_workers_on_a_port_in_use_fail_in_one_line(es_url: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        args = ["serve", "--index", "no-such-index", "--mode", "bm25", "--port", str(port), "--workers", "2"]
        env = {**os.environ, "RALM_ES_URL": es_url}
        done = subprocess.run(
            [sys.executable, "-m", "ralm_es.cli.main", *args], env=env, capture_output=True, text=True, timeout=180
        )
    assert done.returncode == 1
    # Refused before any worker starts (a worker would have named the missing index first).
    assert done.stderr.strip() == f"ralm-es: error: cannot listen on 127.0.0.1:{port}: Address already in use"
