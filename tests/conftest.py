"""Shared fixtures: one real Elasticsearch node for the whole run, and a tiny random BERT for speed."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from ralm_es.config import ConnectionSettings
from ralm_es.corpora.benchmarks import sample_path
from ralm_es.embed import Encoder
from ralm_es.es.client import connect
from ralm_es.ingest import Ingest, IngestSettings
from ralm_es.model_folder import default_model_path
from ralm_es.node.cluster import LocalCluster, pid_alive, runtime_root
from ralm_es.store.elastic import ElasticsearchBackend

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def run_cluster() -> Callable[[str], LocalCluster]:
    """This run's local cluster named ``stem``: the name ends in this process's id, so two test runs on one machine
    never stop each other's nodes. A cluster of the same stem that an ended run left behind is removed first."""

    def make(stem: str) -> LocalCluster:
        clusters = runtime_root() / "clusters"
        owned = re.compile(rf"{re.escape(stem)}-(\d+)")
        for folder in clusters.iterdir() if clusters.is_dir() else []:
            match = owned.fullmatch(folder.name)
            if match and int(match[1]) != os.getpid() and not pid_alive(int(match[1])):
                LocalCluster(folder.name).remove()
        cluster = LocalCluster(f"{stem}-{os.getpid()}")
        cluster.remove()  # a clean slate, whatever an earlier test of this run left
        return cluster

    return make


@pytest.fixture(scope="session")
def es_url(run_cluster: Callable[[str], LocalCluster]) -> Iterator[str]:
    """``RALM_ES_TEST_URL`` if set, else a local node started for this run and stopped after it."""
    if os.environ.get("RALM_ES_TEST_URL"):
        yield os.environ["RALM_ES_TEST_URL"]
        return
    cluster = run_cluster("pytest")
    # A failure to start raises here with the reason and the log tail: the run fails, nothing is skipped.
    state = cluster.start(port=None, heap="1g", quiet=True)
    yield state.url
    cluster.remove()


@pytest.fixture(scope="session")
def es_settings(es_url: str) -> ConnectionSettings:
    return ConnectionSettings(hosts=[es_url], max_retries=2, request_timeout=60)


@pytest.fixture(scope="session")
def es_client(es_settings: ConnectionSettings) -> Elasticsearch:
    return connect(es_settings)


@pytest.fixture
def index_name(es_client: Elasticsearch) -> Iterator[str]:
    """A unique alias name; every index and alias starting with it is deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    yield name
    # Deleting by wildcard is refused (action.destructive_requires_name), so name each index.
    created = es_client.indices.get(index=f"{name}*", expand_wildcards="all").body
    if created:
        es_client.indices.delete(index=",".join(created))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide randomly initialised BERT with the default encoder's uncased tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(default_model_path(), local_files_only=True)
    tokenizer.save_pretrained(folder)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)  # the same random weights in every session: a failure can be replayed
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model_dir: Path) -> Encoder:
    return Encoder(tiny_model_dir, device="cpu")


@pytest.fixture(scope="session")
def sample_index(
    es_client: Elasticsearch, tiny_encoder: Encoder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The bundled sample corpus embedded with the tiny model, shared read-only by the tests that search it."""
    name = f"t-sample-{uuid.uuid4().hex[:8]}"
    backend = ElasticsearchBackend(es_client, name)
    Ingest(backend, IngestSettings(), encoder=tiny_encoder, checkpoint_dir=tmp_path_factory.mktemp("ckpt")).run(
        [sample_path("sample_corpus.jsonl")]
    )
    yield name
    es_client.indices.delete(index=",".join(backend.concrete_indices()))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared benchmark data not found at {SHARED_DATA}")
    return SHARED_DATA
