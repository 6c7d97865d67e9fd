"""BM25 stems English on the local node, which lacks analysis-common: hunspell from core Elasticsearch."""

from __future__ import annotations

import json
from pathlib import Path

from elasticsearch import Elasticsearch

from ralm_es.embed import Encoder
from ralm_es.ingest import Ingest, IngestSettings
from ralm_es.store.base import SearchRequest
from ralm_es.store.elastic import HUNSPELL_ANALYZER, ElasticsearchBackend


def test_treatments_matches_treatment_on_the_local_node(
    es_client: Elasticsearch, index_name: str, tiny_encoder: Encoder, tmp_path: Path
) -> None:
    corpus = tmp_path / "a.jsonl"
    rows = [("p", "a new treatment of liver cancer"), ("q", "football clubs of the city")]
    corpus.write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in rows))
    backend = ElasticsearchBackend(es_client, index_name)
    Ingest(backend, IngestSettings(), encoder=tiny_encoder, checkpoint_dir=tmp_path).run([corpus])
    assert backend.info().analyzer == HUNSPELL_ANALYZER
    assert [h.id for h in backend.search(SearchRequest(mode="bm25", text="treatments", k=5))] == ["p#0"]
    assert [h.id for h in backend.search(SearchRequest(mode="bm25", text="club", k=5))] == ["q#0"]
