"""Ingest counts and resumes that must equal what the index holds: changed inputs, ids repeated across files,
index names that are patterns, refresh settings restored, passages cut otherwise, bulk sizes, every index type."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from ralm_es.config import ConfigError, compose, set_layer
from ralm_es.corpus.readers import CorpusError, read_corpus
from ralm_es.corpus.types import Passage, ReadError, Record
from ralm_es.embed import Encoder
from ralm_es.ingest import Checkpoint, CheckpointState, ChunkSettings, Ingest, IngestSettings
from ralm_es.store.base import DEFAULT_BULK, BulkSettings, IndexSettings, SearchRequest, StoreError, WriteResult
from ralm_es.store.elastic import ElasticsearchBackend, check_index_name
from ralm_es.store.local import LocalBackend

RALM = [sys.executable, "-m", "ralm_es.cli.main"]


def write_jsonl(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in rows))
    return path


def rows(prefix: str, n: int) -> list[tuple[str, str]]:
    return [(f"{prefix}{i}", f"passage {prefix} number {i} about protein folding and cells") for i in range(n)]


class StopAfter:
    """Progress callback that raises as Ctrl-C would once ``n`` batches have settled."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.calls = 0

    def __call__(self, records: int, passages: int) -> None:
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt


def count(es_client: Elasticsearch, index: str) -> int:
    es_client.indices.refresh(index=index)
    return int(es_client.count(index=index)["count"])


BATCHES_OF_64 = IngestSettings(batch_passages=64)


def interrupted_ingest(es_client: Elasticsearch, index: str, corpus: Path, encoder: Encoder, folder: Path) -> None:
    """An ingest stopped (as by Ctrl-C) once its first batch of 64 records has settled."""
    with pytest.raises(KeyboardInterrupt):
        Ingest(
            ElasticsearchBackend(es_client, index),
            BATCHES_OF_64,
            encoder=encoder,
            on_progress=StopAfter(1),
            checkpoint_dir=folder,
        ).run([corpus])


def test_resume_after_the_file_changed_indexes_every_record(
    es_client: Elasticsearch, index_name: str, tiny_encoder: Encoder, tmp_path: Path
) -> None:
    corpus = write_jsonl(tmp_path / "corpus.jsonl", rows("old", 200))
    interrupted_ingest(es_client, index_name, corpus, tiny_encoder, tmp_path)
    # 50 new records at the top: a resume by position would skip them.
    write_jsonl(corpus, rows("new", 50) + rows("old", 200))
    summary = Ingest(
        ElasticsearchBackend(es_client, index_name), BATCHES_OF_64, encoder=tiny_encoder, checkpoint_dir=tmp_path
    ).run([corpus])
    assert summary.restarted and "changed" in summary.restarted and summary.resumed_from == 0
    assert count(es_client, index_name) == 250
    assert summary.indexed + summary.skipped == 250


def test_resume_of_the_same_file_follows_the_checkpoint(
    es_client: Elasticsearch, index_name: str, tiny_encoder: Encoder, tmp_path: Path
) -> None:
    corpus = write_jsonl(tmp_path / "corpus.jsonl", rows("d", 200))
    interrupted_ingest(es_client, index_name, corpus, tiny_encoder, tmp_path)
    summary = Ingest(
        ElasticsearchBackend(es_client, index_name), BATCHES_OF_64, encoder=tiny_encoder, checkpoint_dir=tmp_path
    ).run([corpus])
    # Writes still in flight when the run stopped may have settled into the checkpoint, or been written unsettled.
    assert summary.restarted is None and summary.resumed_from >= 64 and summary.resumed_from % 64 == 0
    assert summary.indexed + summary.skipped == 200 - summary.resumed_from
    assert count(es_client, index_name) == 200


class FirstWriteFails(LocalBackend):
    """A store whose first bulk write raises (as a transport timeout would) after the writes behind it finished."""

    writes = 0

    def write(self, passages: Iterable[Passage], bulk: BulkSettings = DEFAULT_BULK) -> Iterator[WriteResult]:
        self.writes += 1
        if self.writes == 1:
            # Raised on the worker thread that runs the write, as the bulk helpers' errors are.
            time.sleep(0.5)
            raise ConnectionError("bulk request timed out")
        yield from super().write(passages, bulk)


def test_a_write_that_raises_is_written_again_by_the_resume(tmp_path: Path, tiny_model_dir: Path) -> None:
    corpus = write_jsonl(tmp_path / "corpus.jsonl", rows("d", 200))
    settings = IngestSettings(embed=False, model=str(tiny_model_dir), batch_passages=64, in_flight=2)
    with pytest.raises(ConnectionError):
        Ingest(FirstWriteFails(tmp_path / "idx"), settings, checkpoint_dir=tmp_path).run([corpus])
    summary = Ingest(LocalBackend(tmp_path / "idx"), settings, checkpoint_dir=tmp_path).run([corpus])
    # The later batches settled first, but the checkpoint must not pass the batch that was never written.
    assert summary.resumed_from == 0
    assert LocalBackend(tmp_path / "idx").count() == 200


def test_ids_repeated_across_files_are_reported_with_both_places(tmp_path: Path) -> None:
    first = write_jsonl(tmp_path / "a.jsonl", [("x", "one text"), ("y", "two text")])
    second = write_jsonl(tmp_path / "b.jsonl", [("z", "three text"), ("x", "another text with the same id")])
    items = list(read_corpus([first, second]))
    errors = [i for i in items if isinstance(i, ReadError)]
    assert [r.id for r in items if isinstance(r, Record)] == ["x", "y", "z"]
    (error,) = errors
    assert error.source == f"{second}:2" and f"{first}:1" in error.reason and "'x'" in error.reason


def test_the_same_file_twice_is_refused_before_reading(tmp_path: Path) -> None:
    corpus = write_jsonl(tmp_path / "a.jsonl", [("x", "one text")])
    with pytest.raises(CorpusError, match=r"a\.jsonl would be read twice"):
        read_corpus([corpus, tmp_path / "." / "a.jsonl"])
    with pytest.raises(CorpusError, match="read twice"):
        read_corpus([tmp_path, corpus])


@pytest.mark.parametrize("second_text", ["same", "different"])
def test_cli_counts_equal_the_index_when_ids_repeat_across_files(
    es_client: Elasticsearch, es_url: str, index_name: str, tiny_model_dir: Path, tmp_path: Path, second_text: str
) -> None:
    a = write_jsonl(tmp_path / "dupA.jsonl", rows("r", 5))
    repeat = rows("r", 2) if second_text == "same" else [(i, f"other words {i}") for i, _ in rows("r", 2)]
    b = write_jsonl(tmp_path / "dupB.jsonl", [*repeat, *rows("s", 3)])
    env = {**os.environ, "RALM_ES_URL": es_url, "RALM_ES_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [*RALM, "ingest", str(a), str(b), "--index", index_name, "--model", str(tiny_model_dir), "--json", "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    summary = json.loads(proc.stdout)
    assert proc.returncode == 1  # the repeats are errors; every valid record is still indexed
    assert summary["indexed"] == count(es_client, index_name) == 8
    assert summary["failed"] == 2 and summary["skipped"] == 0
    assert proc.stderr.count("duplicate id") == 2 and f"{a}:1" in proc.stderr and f"{b}:1" in proc.stderr


@pytest.mark.parametrize("name", ["_all", "race*", "a,b", "Upper", "-x", "..", "x:y", "a b", ""])
def test_index_names_that_are_patterns_or_invalid_are_refused(name: str, es_client: Elasticsearch) -> None:
    with pytest.raises(StoreError, match="not valid"):
        ElasticsearchBackend(es_client, name)


def test_valid_index_names_pass() -> None:
    for name in ("passages", "scifact-2024.01", "my_index+1", "a" * 255):
        check_index_name(name)


def test_ingest_changes_only_its_own_index_and_restores_its_refresh(
    es_client: Elasticsearch, index_name: str, tiny_encoder: Encoder, tmp_path: Path
) -> None:
    bystander = f"{index_name}-bystander"
    es_client.indices.create(index=bystander, settings={"index": {"refresh_interval": "7s"}})
    backend = ElasticsearchBackend(es_client, index_name)
    Ingest(backend, IngestSettings(), encoder=tiny_encoder, checkpoint_dir=tmp_path).run(
        [write_jsonl(tmp_path / "a.jsonl", rows("a", 3))]
    )
    (concrete,) = backend.concrete_indices()
    es_client.indices.put_settings(index=concrete, settings={"index": {"refresh_interval": "30s"}})
    corpus = write_jsonl(tmp_path / "b.jsonl", rows("b", 200))
    with pytest.raises(KeyboardInterrupt):
        Ingest(
            backend,
            IngestSettings(batch_passages=64),
            encoder=tiny_encoder,
            on_progress=StopAfter(1),
            checkpoint_dir=tmp_path,
        ).run([corpus])
    # The interrupted run's leftover is "-1" only if the kill gave it no chance: simulate that.
    es_client.indices.put_settings(index=concrete, settings={"index": {"refresh_interval": "-1"}})
    Ingest(backend, IngestSettings(batch_passages=64), encoder=tiny_encoder, checkpoint_dir=tmp_path).run([corpus])

    def interval(index: str) -> str | None:
        body = es_client.indices.get_settings(index=index, name="index.refresh_interval").body
        return body[index]["settings"].get("index", {}).get("refresh_interval")

    assert interval(concrete) == "30s"
    assert interval(bystander) == "7s"
    assert count(es_client, index_name) == 203


@pytest.mark.parametrize("backend_kind", ["elasticsearch", "local"])
def test_other_chunking_into_the_same_index_is_refused(
    backend_kind: str, es_client: Elasticsearch, index_name: str, tiny_encoder: Encoder, tmp_path: Path
) -> None:
    def backend() -> ElasticsearchBackend | LocalBackend:
        return (
            ElasticsearchBackend(es_client, index_name)
            if backend_kind == "elasticsearch"
            else LocalBackend(tmp_path / "idx")
        )

    corpus = write_jsonl(tmp_path / "a.jsonl", rows("a", 3))
    Ingest(backend(), IngestSettings(), encoder=tiny_encoder, checkpoint_dir=tmp_path).run([corpus])
    for other in (
        IngestSettings(chunking=ChunkSettings(max_tokens=128)),
        IngestSettings(chunking=ChunkSettings(overlap=8)),
    ):
        with pytest.raises(StoreError, match="--reindex"):
            Ingest(backend(), other, encoder=tiny_encoder, checkpoint_dir=tmp_path).run([corpus])
    assert backend().count() == 3


def test_another_encoder_into_the_same_index_is_refused(
    es_client: Elasticsearch, index_name: str, tiny_encoder: Encoder, tiny_model_dir: Path, tmp_path: Path
) -> None:
    import torch
    from transformers import BertModel

    other_dir = tmp_path / "other-bert"
    torch.manual_seed(1)
    BertModel(BertModel.from_pretrained(tiny_model_dir).config).save_pretrained(other_dir)
    tiny_encoder.tokenizer.save_pretrained(other_dir)
    corpus = write_jsonl(tmp_path / "a.jsonl", rows("a", 3))
    Ingest(ElasticsearchBackend(es_client, index_name), IngestSettings(), encoder=tiny_encoder).run([corpus])
    with pytest.raises(StoreError, match="embedded by encoder"):
        Ingest(
            ElasticsearchBackend(es_client, index_name), IngestSettings(), encoder=Encoder(other_dir, device="cpu")
        ).run([corpus])


def test_bulk_docs_sets_the_bulk_request_size(
    es_client: Elasticsearch, index_name: str, tiny_encoder: Encoder, tmp_path: Path
) -> None:
    corpus = write_jsonl(tmp_path / "a.jsonl", rows("a", 40))
    backend = ElasticsearchBackend(es_client, index_name)
    Ingest(backend, IngestSettings(bulk=BulkSettings(docs=10)), encoder=tiny_encoder, checkpoint_dir=tmp_path).run(
        [corpus]
    )
    (concrete,) = backend.concrete_indices()
    stats = es_client.indices.stats(index=concrete, metric="bulk").body["indices"][concrete]["primaries"]["bulk"]
    assert stats["total_operations"] == 4  # 40 passages, 10 a request, one shard


def test_bulk_docs_reaches_the_backend_from_the_cli(
    es_client: Elasticsearch, es_url: str, index_name: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    corpus = write_jsonl(tmp_path / "a.jsonl", rows("a", 30))
    env = {**os.environ, "RALM_ES_URL": es_url, "RALM_ES_HOME": str(tmp_path / "home")}
    args = ["ingest", str(corpus), "--index", index_name, "--model", str(tiny_model_dir), "--quiet"]
    proc = subprocess.run([*RALM, *args, "--set", "bulk.docs=5"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (concrete,) = es_client.indices.get_alias(name=index_name).body
    stats = es_client.indices.stats(index=concrete, metric="bulk").body["indices"][concrete]["primaries"]["bulk"]
    assert stats["total_operations"] == 6


@pytest.mark.parametrize(
    "key", ["bulk.docs", "bulk.bytes", "encode_batch", "chunking.max_tokens", "in_flight", "index.shards"]
)
def test_sizes_below_one_are_refused(key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        compose(IngestSettings, set_layer([f"{key}=0"]))


def test_passages_longer_than_the_encoder_reads_are_refused(tiny_encoder: Encoder, tmp_path: Path) -> None:
    longer = IngestSettings(chunking=ChunkSettings(max_tokens=tiny_encoder.max_length + 1))
    with pytest.raises(ConfigError, match=rf"chunking\.max_tokens is {tiny_encoder.max_length + 1}, .* at most"):
        Ingest(LocalBackend(tmp_path / "idx"), longer, encoder=tiny_encoder)
    Ingest(LocalBackend(tmp_path / "idx"), IngestSettings(embed=False, chunking=longer.chunking))  # BM25 only: no limit


@pytest.mark.parametrize("index_type", ["hnsw", "int8_hnsw", "int4_hnsw", "bbq_hnsw", "flat"])
def test_every_index_type_ingests_and_searches(
    index_type: str, es_client: Elasticsearch, index_name: str, tmp_path: Path
) -> None:
    encoder = Encoder(device="cpu")  # 384 dimensions: bbq needs at least 64
    corpus = write_jsonl(tmp_path / "a.jsonl", [("p", "statins lower cholesterol"), ("q", "the sky is blue")])
    backend = ElasticsearchBackend(es_client, index_name)
    summary = Ingest(
        backend, IngestSettings(index=IndexSettings(index_type=index_type)), encoder=encoder, checkpoint_dir=tmp_path
    ).run([corpus])
    assert summary.indexed == 2
    (concrete,) = backend.concrete_indices()
    mapping = es_client.indices.get_mapping(index=concrete).body[concrete]["mappings"]
    assert mapping["properties"]["vector"]["index_options"]["type"] == index_type
    vector = encoder.encode(["what reduces cholesterol"])[0]
    hits = backend.search(SearchRequest(mode="dense", vector=vector.tolist(), k=1))
    assert [h.id for h in hits] == ["p#0"]


@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    files=st.lists(
        st.lists(
            st.tuples(st.sampled_from([f"id{i}" for i in range(12)]), st.text(alphabet="abc xyz\n", max_size=40)),
            max_size=10,
        ),
        min_size=1,
        max_size=3,
    )
)
def test_counts_equal_the_store_for_any_records(files: list[list[tuple[str, str]]], tiny_model_dir: Path) -> None:
    """Random files with repeated ids (within and across files) and empty texts: what the summary says was indexed
    is what the store holds, and every record is either indexed or reported."""
    with tempfile.TemporaryDirectory() as folder:
        paths = [write_jsonl(Path(folder) / f"f{n}.jsonl", rows) for n, rows in enumerate(files)]
        backend = LocalBackend(Path(folder) / "idx")
        summary = Ingest(
            backend, IngestSettings(embed=False, model=str(tiny_model_dir)), checkpoint_dir=Path(folder)
        ).run(paths)
        first_valid = {i for rows in files for i, t in rows if t.strip()}
        total = sum(len(rows) for rows in files)
        assert summary.read + summary.failed == total
        stored = backend.existing_ids([f"id{i}#0" for i in range(12)])  # texts this short are one passage each
        assert {p.removesuffix("#0") for p in stored} == first_valid
        assert summary.indexed == backend.count() == summary.passages
        assert summary.read == len(first_valid)


def test_a_reindex_resumed_with_other_chunking_starts_a_fresh_index(
    es_client: Elasticsearch, index_name: str, tiny_encoder: Encoder, tmp_path: Path
) -> None:
    long_rows = [(f"d{i}", " ".join(f"word{i}x{j}" for j in range(120))) for i in range(80)]
    corpus = write_jsonl(tmp_path / "corpus.jsonl", long_rows)
    backend = ElasticsearchBackend(es_client, index_name)
    Ingest(backend, IngestSettings(), encoder=tiny_encoder, checkpoint_dir=tmp_path).run([corpus])
    first = IngestSettings(batch_passages=64, reindex=True)
    with pytest.raises(KeyboardInterrupt):
        Ingest(backend, first, encoder=tiny_encoder, on_progress=StopAfter(1), checkpoint_dir=tmp_path).run([corpus])
    other = IngestSettings(batch_passages=64, reindex=True, chunking=ChunkSettings(max_tokens=64, overlap=8))
    summary = Ingest(backend, other, encoder=tiny_encoder, checkpoint_dir=tmp_path).run([corpus])
    assert summary.restarted and "is left as it was" in summary.restarted
    (served,) = backend.concrete_indices()
    meta = es_client.indices.get_mapping(index=served).body[served]["mappings"]["_meta"]
    assert meta["chunking"]["max_tokens"] == 64
    assert count(es_client, index_name) == summary.indexed == summary.passages


def test_a_reindex_resumed_after_the_input_changed_serves_only_the_new_input(
    es_client: Elasticsearch, index_name: str, tiny_encoder: Encoder, tmp_path: Path
) -> None:
    corpus = write_jsonl(tmp_path / "corpus.jsonl", rows("d", 200))
    backend = ElasticsearchBackend(es_client, index_name)
    Ingest(backend, IngestSettings(), encoder=tiny_encoder, checkpoint_dir=tmp_path).run([corpus])
    reindex = IngestSettings(batch_passages=64, reindex=True)
    with pytest.raises(KeyboardInterrupt):
        Ingest(backend, reindex, encoder=tiny_encoder, on_progress=StopAfter(1), checkpoint_dir=tmp_path).run([corpus])
    # The user edits one record and drops the rest: none of the old passages may be served after the swap.
    write_jsonl(corpus, [("d0", "an edited text about ribosomes")])
    summary = Ingest(backend, reindex, encoder=tiny_encoder, checkpoint_dir=tmp_path).run([corpus])
    assert summary.restarted and "changed" in summary.restarted and "is left as it was" in summary.restarted
    assert count(es_client, index_name) == summary.indexed == 1
    assert backend.fetch(["d0#0"])["d0#0"].text == "an edited text about ribosomes"


def test_a_resume_counts_the_failures_of_the_interrupted_run(tmp_path: Path, tiny_model_dir: Path) -> None:
    corpus = write_jsonl(tmp_path / "corpus.jsonl", rows("d", 200))
    lines = corpus.read_text().splitlines(keepends=True)
    lines[5] = "{not json\n"
    corpus.write_text("".join(lines))
    settings = IngestSettings(embed=False, model=str(tiny_model_dir), batch_passages=64, in_flight=1)
    with pytest.raises(KeyboardInterrupt):
        Ingest(LocalBackend(tmp_path / "idx"), settings, on_progress=StopAfter(1), checkpoint_dir=tmp_path).run(
            [corpus]
        )
    summary = Ingest(LocalBackend(tmp_path / "idx"), settings, checkpoint_dir=tmp_path).run([corpus])
    # The bad line was reported by the interrupted run; the resume must still count it, or --on-error fail passes.
    assert summary.resumed_from >= 64 and summary.failed == summary.failed_before_resume == 1
    assert summary.unreadable == 1
    assert LocalBackend(tmp_path / "idx").count() == 199


def test_an_id_over_elasticsearchs_limit_is_its_own_record_s_error(
    es_client: Elasticsearch, index_name: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Elasticsearch refuses a whole bulk request for one _id over 512 bytes: every valid passage in it was lost,
    each blamed for the long id."""
    long_id = "é" * 256  # 512 bytes, 256 characters
    corpus = write_jsonl(tmp_path / "ids.jsonl", [("a", "alpha cells"), (long_id, "long id"), ("z", "zeta cells")])
    settings = IngestSettings(embed=False, model=str(tiny_model_dir))
    summary = Ingest(ElasticsearchBackend(es_client, index_name), settings, checkpoint_dir=tmp_path).run([corpus])
    assert summary.indexed == count(es_client, index_name) == 2 and summary.failed == 1
    assert [e["source"] for e in summary.errors] == [f"{corpus}:2"]
    assert "id of 512 bytes is too long" in summary.errors[0]["reason"]


def test_failed_is_told_apart_into_records_unreadable_and_passages_not_written(
    es_client: Elasticsearch, index_name: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """'2 records read, 3 passages, 3 failed' read as every passage failed, where one was a record never read."""
    corpus = tmp_path / "mixed.jsonl"
    rows = [
        {"_id": "a", "text": "alpha cells", "metadata": {"year": 2020}},
        {"_id": "b", "text": " ".join(["beta"] * 40), "metadata": {"year": "not a year"}},
        [1],
    ]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = IngestSettings(embed=False, model=str(tiny_model_dir), chunking=ChunkSettings(max_tokens=16, overlap=2))
    summary = Ingest(ElasticsearchBackend(es_client, index_name), settings, checkpoint_dir=tmp_path).run([corpus])
    not_written = summary.failed - summary.unreadable
    assert summary.unreadable == 1 and summary.read == 2 and not_written > 1
    assert summary.passages == summary.indexed + summary.skipped + not_written
    assert summary.indexed == count(es_client, index_name) == 1


@pytest.mark.parametrize("batch_passages", [1, 10])
def test_small_batches_are_checkpointed_at_their_size(
    batch_passages: int, tmp_path: Path, tiny_model_dir: Path
) -> None:
    corpus = write_jsonl(tmp_path / "corpus.jsonl", rows("d", 30))
    settings = IngestSettings(embed=False, model=str(tiny_model_dir), batch_passages=batch_passages, in_flight=1)
    with pytest.raises(KeyboardInterrupt):
        Ingest(LocalBackend(tmp_path / "idx"), settings, on_progress=StopAfter(2), checkpoint_dir=tmp_path).run(
            [corpus]
        )
    summary = Ingest(LocalBackend(tmp_path / "idx"), settings, checkpoint_dir=tmp_path).run([corpus])
    # One-passage records: the checkpoint is at a batch's end (the write in flight at the stop may have settled).
    assert summary.resumed_from in (2 * batch_passages, 3 * batch_passages)
    assert LocalBackend(tmp_path / "idx").count() == 30


def test_settings_that_do_nothing_are_named(
    tmp_path: Path, tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = str(tiny_model_dir)
    idle = IngestSettings(
        embed=False,
        model=model,
        runtime="onnx-int8",
        encode_batch=3,
        index=IndexSettings(similarity="dot_product"),
        keep_old=True,
    )
    with caplog.at_level(logging.WARNING, logger="ralm_es.ingest"):
        Ingest(LocalBackend(tmp_path / "idx"), idle)
        # Each of them does something here: no warning.
        Ingest(LocalBackend(tmp_path / "idx"), IngestSettings(embed=False, model=model, reindex=True, keep_old=True))
    assert caplog.messages == [
        "nothing is embedded (--no-embed), so runtime=onnx-int8, encode_batch=3, index.similarity=dot_product do "
        "nothing; --keep-old does nothing without --reindex"
    ]
    # ONNX Runtime runs on the CPU whatever device is asked for.
    assert IngestSettings(runtime="onnx", device="cuda:7").unused() == (
        "runtime onnx runs on the CPU, so device=cuda:7 does nothing"
    )
    assert IngestSettings(runtime="onnx", device="cpu").unused() is None


def test_index_settings_an_existing_index_was_not_built_with_are_refused(
    es_client: Elasticsearch, index_name: str, tiny_encoder: Encoder, tmp_path: Path
) -> None:
    corpus = write_jsonl(tmp_path / "a.jsonl", rows("a", 3))
    backend = ElasticsearchBackend(es_client, index_name)
    built = IndexSettings(index_type="int8_hnsw", m=24)
    Ingest(backend, IngestSettings(index=built), encoder=tiny_encoder, checkpoint_dir=tmp_path).run([corpus])
    for other, named in (
        (IndexSettings(shards=3, replicas=2), r"index\.shards=3 \(it has 1\), index\.replicas=2 \(it has 0\)"),
        (IndexSettings(index_type="flat"), r"index\.index_type=flat \(it has int8_hnsw\)"),
        (
            IndexSettings(similarity="dot_product", m=32),
            r"index\.similarity=dot_product \(it has cosine\), index\.m=32 \(it has 24\)",
        ),
    ):
        with pytest.raises(StoreError, match=rf"exists, and {named} would shape a new index.*--reindex"):
            Ingest(backend, IngestSettings(index=other), encoder=tiny_encoder, checkpoint_dir=tmp_path).run([corpus])
    # The settings it was built with, or none given, add to it.
    for same in (built, IndexSettings()):
        Ingest(backend, IngestSettings(index=same), encoder=tiny_encoder, checkpoint_dir=tmp_path).run([corpus])
    local = LocalBackend(tmp_path / "idx")
    Ingest(local, IngestSettings(), encoder=tiny_encoder, checkpoint_dir=tmp_path).run([corpus])
    with pytest.raises(StoreError, match=r"index\.similarity=dot_product \(it has cosine\)"):
        Ingest(local, IngestSettings(index=IndexSettings(similarity="dot_product")), encoder=tiny_encoder).run([corpus])
    with pytest.raises(StoreError, match=r"index\.shards=2 shape an Elasticsearch index"):
        Ingest(local, IngestSettings(index=IndexSettings(shards=2)), encoder=tiny_encoder).run([corpus])


def test_a_checkpoint_written_before_failures_were_counted_is_still_followed(tmp_path: Path) -> None:
    checkpoint = Checkpoint({"paths": ["a.jsonl"], "index": "i", "backend": "local", "reindex": False}, tmp_path)
    checkpoint.save(CheckpointState(64, "i", [], {}, "30s"))
    old = json.loads(checkpoint.path.read_text())
    del old["failed"]
    checkpoint.path.write_text(json.dumps(old))
    # Unreadable, it would start over and take the paused refresh interval (-1) for the index's own.
    state = checkpoint.load()
    assert state is not None and (state.records_done, state.refresh, state.failed) == (64, "30s", 0)
