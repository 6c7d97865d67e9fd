"""Faults on a real three-node cluster: a node killed under search and ingest, and a full restart mid-ingest."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from elasticsearch import ApiError, Elasticsearch, TransportError

from ralm_es.config import ConnectionSettings
from ralm_es.corpora.benchmarks import sample_path
from ralm_es.embed import Encoder
from ralm_es.es.client import connect
from ralm_es.ingest import Ingest, IngestSettings
from ralm_es.node.cluster import ClusterState, LocalCluster
from ralm_es.retrieve.retriever import RetrievalSettings, Retriever
from ralm_es.store.base import IndexSettings
from ralm_es.store.elastic import ElasticsearchBackend

QUERIES = ["insulin hormone", "football club", "capital city", "software company", "protein structure"] * 20


@pytest.fixture
def three_nodes(run_cluster: Callable[[str], LocalCluster]) -> Iterator[tuple[LocalCluster, ClusterState]]:
    cluster = run_cluster("pytest-three")
    state = cluster.start(port=None, heap="384m", nodes=3, quiet=True)
    yield cluster, state
    cluster.remove()


def client_for(state: ClusterState) -> Elasticsearch:
    # Every node is given to the client, so a lost node's requests go to the others.
    return connect(ConnectionSettings(hosts=state.urls, max_retries=5, request_timeout=30))


def test_search_many_answers_every_query_while_a_node_dies(
    three_nodes: tuple[LocalCluster, ClusterState], tiny_model_dir: Path, tmp_path: Path
) -> None:
    cluster, state = three_nodes
    client = client_for(state)
    encoder = Encoder(tiny_model_dir, device="cpu")
    backend = ElasticsearchBackend(client, "faults")
    settings = IngestSettings(index=IndexSettings(replicas=1, shards=3))
    Ingest(backend, settings, encoder=encoder, checkpoint_dir=tmp_path).run([sample_path("sample_corpus.jsonl")])
    client.cluster.health(index="faults", wait_for_status="green", timeout="120s")
    retriever = Retriever(backend, encoder, RetrievalSettings(mode="hybrid", k=5))
    # Each whole search_many: when it began, and the number of hits of each query.
    rounds: list[tuple[float, list[int]]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def searcher() -> None:
        while not stop.is_set():
            began = time.monotonic()
            try:
                rounds.append((began, [len(hits) for hits in retriever.search_many(QUERIES)]))
            except BaseException as exc:  # every failure counts against the cluster's promise
                errors.append(exc)

    def wait_for(done: Callable[[], bool]) -> None:
        # However slow the machine: the promise is about answers, not speed.
        deadline = time.monotonic() + 300
        while not (done() or errors) and time.monotonic() < deadline:
            time.sleep(0.1)

    thread = threading.Thread(target=searcher)
    thread.start()
    wait_for(lambda: len(rounds) >= 1)
    killed = time.monotonic()
    cluster.kill_node(1)
    wait_for(lambda: any(began > killed for began, _ in rounds))
    stop.set()
    thread.join(timeout=300)
    assert not errors, errors[:1]
    # Rounds before the kill, across it and after it, each query with its 5 hits.
    assert any(began > killed for began, _ in rounds) and rounds[0][0] < killed
    assert all(counts == [5] * len(QUERIES) for _, counts in rounds)


def test_ingest_survives_a_lost_node_and_a_full_restart(
    three_nodes: tuple[LocalCluster, ClusterState], shared_data: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    cluster, state = three_nodes
    corpus = tmp_path / "corpus.jsonl"
    with (shared_data / "scifact" / "corpus.jsonl").open() as src:
        corpus.write_text("".join(line for _, line in zip(range(300), src, strict=False)))
    encoder = Encoder(tiny_model_dir, device="cpu")
    settings = IngestSettings(index=IndexSettings(replicas=1, shards=3), batch_passages=64)
    calls = 0

    def chaos(records: int, passages: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            cluster.kill_node(2)
        if calls == 5:
            cluster.stop()

    backend = ElasticsearchBackend(client_for(state), "faults-ingest")
    with pytest.raises((ApiError, TransportError)):  # the whole cluster goes away under the writer
        Ingest(backend, settings, encoder=encoder, on_progress=chaos, checkpoint_dir=tmp_path).run([corpus])
    assert calls >= 5
    state = cluster.start(port=state.http_ports[0], heap="384m", nodes=3, quiet=True)
    client = client_for(state)
    client.cluster.health(index="faults-ingest", wait_for_status="yellow", timeout="120s")
    backend = ElasticsearchBackend(client, "faults-ingest")
    summary = Ingest(backend, settings, encoder=encoder, checkpoint_dir=tmp_path).run([corpus])
    assert summary.resumed_from > 0 and summary.failed == 0
    from ralm_es.corpus.chunking import Chunker
    from ralm_es.corpus.readers import read_corpus
    from ralm_es.model_folder import load_tokenizer

    expected = sum(1 for _ in Chunker(load_tokenizer(encoder.path), 256, 32).chunk_many(list(read_corpus(corpus))))
    assert backend.count() == expected
    ids = client.search(index="faults-ingest", size=0, aggs={"ids": {"cardinality": {"field": "id"}}})
    assert ids["aggregations"]["ids"]["value"] == expected
