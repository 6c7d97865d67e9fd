"""The ONNX Runtime encoder: its vectors against torch's, its cache, and the runtimes an index accepts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from elasticsearch import Elasticsearch
from transformers import AutoModel

from ralm_es.config import ConfigError, compose, set_layer
from ralm_es.corpora.benchmarks import sample_path
from ralm_es.embed import Encoder, OnnxNetwork
from ralm_es.ingest import Ingest, IngestSettings
from ralm_es.model_folder import ModelError
from ralm_es.retrieve.retriever import RetrievalError, RetrievalSettings, Retriever
from ralm_es.store.base import StoreError
from ralm_es.store.elastic import ElasticsearchBackend

TEXTS = [
    "insulin lowers blood glucose",
    "x",
    "A much longer sentence about the football league, the river city and what happened there in 1990.",
    "Ünïcödé and punctuation: (a), [b]; c!",
]


@pytest.fixture(scope="module")
def onnx_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The cache home the exports go to, so a run never touches the user's."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RALM_ES_HOME", str(home))
        yield home


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1)


def test_onnx_vectors_match_torch_on_the_tiny_bert(tiny_encoder: Encoder, onnx_home: Path) -> None:
    onnx = Encoder(tiny_encoder.path, runtime="onnx")
    # Batches of 3 put texts of different lengths together: the padded positions must not count.
    assert cosines(onnx.encode(TEXTS, batch_size=3), tiny_encoder.encode(TEXTS)).min() >= 0.999
    assert onnx.info() == replace(tiny_encoder.info(), runtime="onnx")
    assert (onnx_home / "onnx" / tiny_encoder.revision / "model.onnx").is_file()


def test_default_encoder_onnx_and_int8_against_torch(onnx_home: Path) -> None:
    torch_vectors = Encoder(device="cpu").encode(TEXTS)
    fp32 = cosines(Encoder(runtime="onnx").encode(TEXTS), torch_vectors)
    int8 = cosines(Encoder(runtime="onnx-int8").encode(TEXTS), torch_vectors)
    print(f"default encoder cosine to torch: onnx min {fp32.min():.5f}, onnx-int8 min {int8.min():.4f}")
    assert fp32.min() >= 0.999
    assert int8.min() >= 0.97


def test_the_export_is_made_once_per_revision(tiny_encoder: Encoder, onnx_home: Path) -> None:
    Encoder(tiny_encoder.path, runtime="onnx-int8")
    folder = onnx_home / "onnx" / tiny_encoder.revision
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert set(stamps) == {"model.onnx", "model-int8.onnx"}
    Encoder(tiny_encoder.path, runtime="onnx-int8")
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps


def test_a_damaged_export_is_named_and_made_again_once_deleted(
    tiny_encoder: Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RALM_ES_HOME", str(tmp_path))
    Encoder(tiny_encoder.path, runtime="onnx")
    export = tmp_path / "onnx" / tiny_encoder.revision / "model.onnx"
    export.write_bytes(export.read_bytes()[:1000])  # cut short, as by a full disk
    with pytest.raises(ModelError, match=rf"from {re.escape(str(export))} \(.*\); delete that file to export it"):
        Encoder(tiny_encoder.path, runtime="onnx")
    export.unlink()
    assert Encoder(tiny_encoder.path, runtime="onnx").encode(TEXTS[:1]).shape == (1, tiny_encoder.dim)


def test_an_unknown_runtime_is_one_clear_error(tiny_model_dir: Path) -> None:
    with pytest.raises(ConfigError, match="unknown encoder runtime 'onnx16'"):
        Encoder(tiny_model_dir, runtime="onnx16")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="runtime"):
        compose(IngestSettings, set_layer(["runtime=tensorrt"]))


def test_the_index_refuses_query_vectors_of_another_kind(
    es_client: Elasticsearch, sample_index: str, tiny_encoder: Encoder, onnx_home: Path
) -> None:
    backend = ElasticsearchBackend(es_client, sample_index)
    settings = RetrievalSettings(mode="dense", k=5)
    expected = [h.id for h in Retriever(backend, tiny_encoder, settings).search("insulin lowers blood glucose")]
    # fp32 onnx queries answer the torch-filled index, with the same hits.
    onnx = Retriever(backend, Encoder(tiny_encoder.path, runtime="onnx"), settings)
    assert [h.id for h in onnx.search("insulin lowers blood glucose")] == expected
    int8 = Retriever(backend, Encoder(tiny_encoder.path, runtime="onnx-int8"), settings)
    with pytest.raises(
        RetrievalError, match=r"embedded with runtime torch .* use --runtime torch, torch-bf16 or onnx$"
    ):
        int8.search("insulin")


def test_the_index_refuses_a_query_encoder_of_other_weights(
    es_client: Elasticsearch, sample_index: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    model = AutoModel.from_pretrained(tiny_model_dir, local_files_only=True)
    with torch.no_grad():
        model.embeddings.word_embeddings.weight.mul_(1.01)
    other = tmp_path / "other"
    model.save_pretrained(other)
    for name in os.listdir(tiny_model_dir):
        if name.startswith(("tokenizer", "vocab", "special")):
            (other / name).write_bytes((tiny_model_dir / name).read_bytes())
    retriever = Retriever(
        ElasticsearchBackend(es_client, sample_index), Encoder(other), RetrievalSettings(mode="dense")
    )
    with pytest.raises(RetrievalError, match=r"embedded by encoder .* but the query encoder is"):
        retriever.search("insulin")


def test_ingest_records_its_runtime_and_refuses_int8_into_a_torch_index(
    es_client: Elasticsearch, index_name: str, tiny_model_dir: Path, onnx_home: Path, tmp_path: Path
) -> None:
    corpus = [sample_path("sample_corpus.jsonl")]
    backend = ElasticsearchBackend(es_client, index_name)
    settings = IngestSettings(model=str(tiny_model_dir), runtime="onnx")
    Ingest(backend, settings, checkpoint_dir=tmp_path / "a").run(corpus)
    filled_by = backend.info().model
    assert filled_by is not None and filled_by.runtime == "onnx"
    # fp32 torch vectors go with the onnx ones; int8 ones do not.
    torch_settings = IngestSettings(model=str(tiny_model_dir), resume=False)
    assert Ingest(backend, torch_settings, checkpoint_dir=tmp_path / "b").run(corpus).failed == 0
    int8 = IngestSettings(model=str(tiny_model_dir), runtime="onnx-int8", resume=False)
    with pytest.raises(StoreError, match="embedded with encoder runtime onnx but this ingest uses onnx-int8"):
        Ingest(backend, int8, checkpoint_dir=tmp_path / "c").run(corpus)


def test_search_runtime_option_reaches_the_query_encoder(
    es_url: str, sample_index: str, tiny_model_dir: Path, onnx_home: Path
) -> None:
    env = {**os.environ, "RALM_ES_URL": es_url}
    args = [sys.executable, "-m", "ralm_es.cli.main", "search", "insulin", "--index", sample_index, "--mode", "dense"]
    args += ["--model", str(tiny_model_dir)]
    ok = subprocess.run([*args, "--runtime", "onnx"], capture_output=True, text=True, env=env, timeout=600)
    assert ok.returncode == 0, ok.stderr
    refused = subprocess.run([*args, "--runtime", "onnx-int8"], capture_output=True, text=True, env=env, timeout=600)
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines() == [
        "ralm-es: error: the index was embedded with runtime torch but queries would be encoded with onnx-int8; "
        "use --runtime torch, torch-bf16 or onnx"
    ]


def test_an_onnx_session_runs_on_the_process_thread_count(tiny_encoder: Encoder, onnx_home: Path) -> None:
    # serve --workers N and train.threads set torch's count; an ONNX encoder loaded after must follow it.
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        onnx = Encoder(tiny_encoder.path, runtime="onnx")
        assert isinstance(onnx.network, OnnxNetwork)
        assert onnx.network.session.get_session_options().intra_op_num_threads == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
