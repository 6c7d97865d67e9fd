"""Ingest against the real node (and the local store): counts, idempotence, restarts, bad input, reindex."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from elasticsearch import ApiError, Elasticsearch, TransportError

from ralm_es.config import ConnectionSettings
from ralm_es.embed import Encoder
from ralm_es.es.client import connect
from ralm_es.ingest import Ingest, IngestSettings
from ralm_es.node.cluster import LocalCluster
from ralm_es.store.base import Backend, BulkSettings, IndexSettings, SearchRequest, StoreError
from ralm_es.store.elastic import ElasticsearchBackend
from ralm_es.store.local import LocalBackend

RALM = [sys.executable, "-m", "ralm_es.cli.main"]


@pytest.fixture(scope="module")
def scifact_slice(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 120 SciFact abstracts, cut at run time."""
    out = tmp_path_factory.mktemp("scifact") / "corpus.jsonl"
    with (shared_data / "scifact" / "corpus.jsonl").open() as src:
        out.write_text("".join(line for _, line in zip(range(120), src, strict=False)))
    return out


def settings(**kw: object) -> IngestSettings:
    return IngestSettings(batch_passages=64, **kw)  # type: ignore[arg-type]


def expected_passages(path: Path, encoder: Encoder, max_tokens: int = 256, overlap: int = 32) -> int:
    """Passages the chunker makes for ``path``: what the summary and the index must agree on. The chunker's own
    output, so it proves every chunk was written, not that the chunks cover the text (test_chunking does)."""
    from ralm_es.corpus.chunking import Chunker
    from ralm_es.corpus.readers import read_corpus
    from ralm_es.model_folder import load_tokenizer

    records = [r for r in read_corpus(path) if not hasattr(r, "reason")]
    return sum(1 for _ in Chunker(load_tokenizer(encoder.path), max_tokens, overlap).chunk_many(records))


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RALM, *args], capture_output=True, text=True, env=env or os.environ.copy(), timeout=600)


def test_scifact_slice_with_default_encoder(
    es_client: Elasticsearch, es_url: str, index_name: str, scifact_slice: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "RALM_ES_URL": es_url, "RALM_ES_HOME": str(tmp_path)}
    proc = run_cli("ingest", str(scifact_slice), "--index", index_name, "--json", "--quiet", env=env)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    encoder = Encoder()
    passages = expected_passages(scifact_slice, encoder)
    assert summary["read"] == 120 and summary["passages"] == passages and summary["indexed"] == passages
    assert (
        summary["failed"] == 0
        and summary["skipped"] == 0
        and set(summary)
        == {
            "read",
            "passages",
            "indexed",
            "failed",
            "unreadable",
            "skipped",
            "seconds",
        }
    )
    assert es_client.count(index=index_name)["count"] == passages
    # Every abstract of the file is in the index, each as chunks 0..n-1 with none missing.
    stored = es_client.search(index=index_name, size=passages, source=["id", "doc_id"])["hits"]["hits"]
    chunks: dict[str, list[int]] = {}
    for hit in stored:
        doc_id, _, chunk = hit["_source"]["id"].rpartition("#")
        assert doc_id == hit["_source"]["doc_id"]
        chunks.setdefault(doc_id, []).append(int(chunk))
    abstracts = [json.loads(line)["_id"] for line in scifact_slice.read_text().splitlines()]
    assert sorted(chunks) == sorted(abstracts) and len(abstracts) == 120
    assert all(sorted(numbers) == list(range(len(numbers))) for numbers in chunks.values())
    (concrete,) = es_client.indices.get_alias(name=index_name).body
    mapping = es_client.indices.get_mapping(index=concrete).body[concrete]["mappings"]
    assert mapping["properties"]["vector"]["type"] == "dense_vector"
    assert mapping["properties"]["vector"]["dims"] == 384
    assert mapping["_meta"]["model"]["dim"] == 384 and mapping["_meta"]["model"]["revision"] == encoder.revision
    refresh = es_client.indices.get_settings(index=concrete).body[concrete]["settings"]["index"]
    assert refresh.get("refresh_interval") in (None, "1s")

    again = json.loads(
        run_cli("ingest", str(scifact_slice), "--index", index_name, "--json", "--quiet", env=env).stdout
    )
    assert again["indexed"] == 0 and again["skipped"] == passages
    assert es_client.count(index=index_name)["count"] == passages


def test_model_dimension_mismatch_refused_before_writing(
    es_client: Elasticsearch, index_name: str, scifact_slice: Path, tiny_encoder: Encoder, tmp_path: Path
) -> None:
    backend = ElasticsearchBackend(es_client, index_name)
    Ingest(backend, settings(), encoder=tiny_encoder, checkpoint_dir=tmp_path).run([scifact_slice])
    before = backend.count()
    from ralm_es.store.base import StoreError

    with pytest.raises(StoreError, match=r"32-dimensional.*384|384.*32"):
        Ingest(backend, settings(), encoder=Encoder(), checkpoint_dir=tmp_path).run([scifact_slice])
    backend.refresh()
    assert backend.count() == before


BAD_LINES = [
    '{"_id": "ok-1", "title": "Good", "text": "A valid passage about insulin."}',
    '{"_id": "broken", "text": "unterminated',
    '{"_id": "no-text", "title": "Missing text"}',
    '{"_id": "empty", "text": "   "}',
    '{"_id": "ok-2", "text": "Another valid passage, about football."}',
    '{"_id": "ok-1", "text": "A duplicate id."}',
    '{"_id": "huge", "text": "' + "word " * 100 + '"}',
    '{"_id": "ok-3", "text": "A third valid passage, about Paris."}',
]


@pytest.fixture
def bad_corpus(tmp_path: Path) -> Path:
    path = tmp_path / "bad.jsonl"
    data = b"\n".join(line.encode() for line in BAD_LINES[:4])
    data += b'\n{"_id": "latin1", "text": "caf\xe9 au lait"}\n'
    data += b"\n".join(line.encode() for line in BAD_LINES[4:]) + b"\n"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("backend_name", ["elasticsearch", "local"])
def test_bad_input_reported_with_file_line_rest_indexed(
    backend_name: str, es_url: str, index_name: str, bad_corpus: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "RALM_ES_URL": es_url, "RALM_ES_HOME": str(tmp_path / "home")}
    index = index_name if backend_name == "elasticsearch" else str(tmp_path / "local-index")
    args = ["ingest", str(bad_corpus), "--index", index, "--backend", backend_name, "--model", str(tiny_model_dir)]
    proc = run_cli(*args, "--json", "--quiet", "--set", "read.max_chars=300", env=env)
    assert proc.returncode == 1
    summary = json.loads(proc.stdout)
    assert summary["indexed"] == 3 and summary["failed"] == 6
    name = bad_corpus.name
    for line in (2, 3, 4, 5, 7, 8):
        assert f"{name}:{line}:" in proc.stderr, (line, proc.stderr)
    assert "duplicate" in proc.stderr.lower()
    skip = run_cli(*args, "--json", "--quiet", "--set", "read.max_chars=300", "--on-error", "skip", env=env)
    assert skip.returncode == 0 and json.loads(skip.stdout)["indexed"] == 0


def test_unknown_format_is_a_clear_error(tmp_path: Path, es_url: str) -> None:
    odd = tmp_path / "data.bin"
    odd.write_bytes(bytes(range(256)) * 4)
    proc = run_cli("ingest", str(odd), "--backend", "local", "--index", str(tmp_path / "idx"), "--no-embed")
    assert proc.returncode == 1 and "data.bin" in proc.stderr and "Traceback" not in proc.stderr


def test_local_backend_ingest_matches(scifact_slice: Path, tiny_encoder: Encoder, tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "local")
    first = Ingest(backend, settings(), encoder=tiny_encoder, checkpoint_dir=tmp_path).run([scifact_slice])
    passages = expected_passages(scifact_slice, tiny_encoder)
    assert first.indexed == passages and backend.count() == passages
    second = Ingest(LocalBackend(tmp_path / "local"), settings(), encoder=tiny_encoder, checkpoint_dir=tmp_path)
    assert second.run([scifact_slice]).indexed == 0
    assert LocalBackend(tmp_path / "local").count() == passages


@pytest.mark.parametrize(
    "refused",
    [{"bulk": BulkSettings(retries=9)}, {"index": IndexSettings(shards=2)}],
    ids=["bulk-retries", "index-shards"],
)
def test_settings_the_local_backend_refuses_leave_nothing_behind(
    refused: dict[str, object], scifact_slice: Path, tiny_encoder: Encoder, tmp_path: Path
) -> None:
    backend = LocalBackend(tmp_path / "local")
    ingest = Ingest(backend, settings(**refused), encoder=tiny_encoder, checkpoint_dir=tmp_path)
    with pytest.raises(StoreError, match=r"retries=9|shards=2"):
        ingest.run([scifact_slice])
    assert not (tmp_path / "local").exists()
    assert not list(tmp_path.glob("ingest-*.json")), list(tmp_path.iterdir())


class StopAfter:
    """Progress callback that, after ``n`` settled batches, runs ``action`` or else raises as Ctrl-C would."""

    def __init__(self, n: int, action: Callable[[], object] | None = None) -> None:
        self.n = n
        self.calls = 0
        self.action = action

    def __call__(self, records: int, passages: int) -> None:
        self.calls += 1
        if self.calls == self.n:
            if self.action is None:
                raise KeyboardInterrupt
            self.action()


@pytest.mark.parametrize("backend_name", ["elasticsearch", "local"])
def test_interrupted_run_resumes_exactly(
    backend_name: str,
    es_client: Elasticsearch,
    index_name: str,
    scifact_slice: Path,
    tiny_encoder: Encoder,
    tmp_path: Path,
) -> None:
    def make() -> Backend:
        if backend_name == "local":
            return LocalBackend(tmp_path / "local")
        return ElasticsearchBackend(es_client, index_name)

    with pytest.raises(KeyboardInterrupt):
        Ingest(make(), settings(), encoder=tiny_encoder, on_progress=StopAfter(2), checkpoint_dir=tmp_path).run(
            [scifact_slice]
        )
    resumed = Ingest(make(), settings(), encoder=tiny_encoder, checkpoint_dir=tmp_path).run([scifact_slice])
    assert resumed.resumed_from > 0
    backend = make()
    if isinstance(backend, ElasticsearchBackend):
        backend.refresh()
    assert backend.count() == expected_passages(scifact_slice, tiny_encoder)


@pytest.fixture
def own_cluster(run_cluster: Callable[[str], LocalCluster]) -> Iterator[LocalCluster]:
    cluster = run_cluster("pytest-restart")
    cluster.start(port=None, heap="512m", quiet=True)
    yield cluster
    cluster.remove()


def test_elasticsearch_restart_mid_ingest_then_rerun(
    own_cluster: LocalCluster, scifact_slice: Path, tiny_encoder: Encoder, tmp_path: Path
) -> None:
    state = own_cluster.state()
    assert state is not None
    client = connect(ConnectionSettings(hosts=[state.url], max_retries=1, request_timeout=10))
    backend = ElasticsearchBackend(client, "restart-test")
    # The node goes away after the first batch is written; the next request fails after the client's retries.
    with pytest.raises((ApiError, TransportError)):
        Ingest(
            backend,
            settings(),
            encoder=tiny_encoder,
            on_progress=StopAfter(1, own_cluster.stop),
            checkpoint_dir=tmp_path,
        ).run([scifact_slice])
    own_cluster.start(port=state.http_ports[0], heap="512m", quiet=True)
    client = connect(ConnectionSettings(hosts=[state.url], max_retries=3, request_timeout=30))
    client.cluster.health(index="restart-test", wait_for_status="yellow", timeout="60s")
    backend = ElasticsearchBackend(client, "restart-test")
    summary = Ingest(backend, settings(), encoder=tiny_encoder, checkpoint_dir=tmp_path).run([scifact_slice])
    assert summary.resumed_from > 0
    assert backend.count() == expected_passages(scifact_slice, tiny_encoder)


def test_reindex_swaps_alias_while_searches_answer(
    es_client: Elasticsearch, index_name: str, scifact_slice: Path, tiny_encoder: Encoder, tmp_path: Path
) -> None:
    backend = ElasticsearchBackend(es_client, index_name)
    Ingest(backend, settings(), encoder=tiny_encoder, checkpoint_dir=tmp_path).run([scifact_slice])
    (old,) = backend.concrete_indices()
    errors: list[BaseException] = []
    answered: list[int] = []
    done = threading.Event()

    def searcher() -> None:
        while not done.is_set():
            try:
                hits = backend.search(SearchRequest(mode="bm25", text="cancer cells protein", k=3))
                answered.append(len(hits))
            except BaseException as exc:  # every failure counts against the swap
                errors.append(exc)

    thread = threading.Thread(target=searcher)
    thread.start()
    try:
        summary = Ingest(backend, settings(reindex=True), encoder=tiny_encoder, checkpoint_dir=tmp_path).run(
            [scifact_slice]
        )
    finally:
        done.set()
        thread.join()
    assert not errors and answered and min(answered) == 3
    (new,) = backend.concrete_indices()
    assert new != old and summary.index == new
    assert not es_client.indices.exists(index=old)
    assert backend.count() == expected_passages(scifact_slice, tiny_encoder)
