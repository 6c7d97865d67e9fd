"""The torch-bf16 encoder runtime: bf16 weights, vectors interchangeable with torch's, refused where the device
would only emulate bf16."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from elasticsearch import Elasticsearch

from ralm_es import embed
from ralm_es.corpora.benchmarks import sample_path
from ralm_es.embed import Encoder
from ralm_es.ingest import Ingest, IngestSettings
from ralm_es.model_folder import ModelError
from ralm_es.retrieve.retriever import RetrievalSettings, Retriever
from ralm_es.store.elastic import ElasticsearchBackend

TEXTS = [
    "insulin lowers blood glucose",
    "x",
    "A much longer sentence about the football league, the river city and what happened there in 1990.",
    "Ünïcödé and punctuation: (a), [b]; c!",
]


@pytest.fixture
def bf16_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever this machine's CPU: torch computes bf16 on any CPU (only slower where it emulates it)."""
    monkeypatch.setattr(embed, "bf16_native", lambda device: True)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1)


@pytest.mark.usefixtures("bf16_cpu")
def test_bf16_weights_give_the_default_encoders_vectors(tiny_encoder: Encoder) -> None:
    bf16 = Encoder(device="cpu", runtime="torch-bf16")
    assert isinstance(bf16.network, embed.TorchNetwork)
    assert next(bf16.network.model.parameters()).dtype == torch.bfloat16
    # Batches of 3 put texts of different lengths together: the padded positions must not count.
    close = cosines(bf16.encode(TEXTS, batch_size=3), Encoder(device="cpu").encode(TEXTS))
    print(f"default encoder cosine to torch: torch-bf16 min {close.min():.6f}")
    assert close.min() >= 0.9995
    tiny = Encoder(tiny_encoder.path, device="cpu", runtime="torch-bf16")
    assert tiny.info() == replace(tiny_encoder.info(), runtime="torch-bf16")


def test_torch_bf16_where_the_device_would_only_emulate_it_is_refused(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embed, "bf16_native", lambda device: False)
    with pytest.raises(ModelError, match=r"^encoder runtime torch-bf16: the cpu here has no native bf16 .*torch$"):
        Encoder(tiny_model_dir, device="cpu", runtime="torch-bf16")


@pytest.mark.usefixtures("bf16_cpu")
def test_bf16_queries_answer_a_torch_index_and_bf16_ingest_joins_it(
    es_client: Elasticsearch, index_name: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    corpus = [sample_path("sample_corpus.jsonl")]
    backend = ElasticsearchBackend(es_client, index_name)
    Ingest(backend, IngestSettings(model=str(tiny_model_dir)), checkpoint_dir=tmp_path / "a").run(corpus)
    settings = RetrievalSettings(mode="dense", k=5)
    query = "insulin lowers blood glucose"
    expected = [h.id for h in Retriever(backend, Encoder(tiny_model_dir, device="cpu"), settings).search(query)]
    bf16 = Encoder(tiny_model_dir, device="cpu", runtime="torch-bf16")
    assert [h.id for h in Retriever(backend, bf16, settings).search(query)] == expected
    # Passages embedded in bf16 go into the torch-filled index (the same kind of vectors); it keeps its runtime.
    more = tmp_path / "more.jsonl"
    more.write_text(
        '{"_id": "bf16-1", "title": "Glucagon", "text": "Glucagon raises blood glucose."}\n'
        '{"_id": "bf16-2", "title": "Amylin", "text": "Amylin slows gastric emptying."}\n',
        encoding="utf-8",
    )
    again = IngestSettings(model=str(tiny_model_dir), runtime="torch-bf16", resume=False)
    summary = Ingest(backend, again, checkpoint_dir=tmp_path / "b").run([more])
    assert (summary.indexed, summary.failed) == (2, 0)
    filled_by = backend.info().model
    assert filled_by is not None and filled_by.runtime == "torch"
    hits = Retriever(backend, bf16, settings).search("Glucagon raises blood glucose.")
    assert hits[0].id.startswith("bf16-1")
