"""An index ralm-es did not create (plain PUT, other field names) used through the field map: search in every
mode, filters and exclusion, the dimension check, a BM25-only index, the CLI flags and config section, and a
retrieval cache that training reads."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from elasticsearch import Elasticsearch, helpers

from ralm_es.cli.main import cli
from ralm_es.config import ConfigError
from ralm_es.corpora.benchmarks import sample_path
from ralm_es.embed import Encoder
from ralm_es.ingest import Ingest, IngestSettings
from ralm_es.retrieve.cache import read_cache
from ralm_es.retrieve.retriever import RetrievalError, RetrievalSettings, Retriever
from ralm_es.store.base import Filter, SearchRequest, StoreError
from ralm_es.store.elastic import ElasticsearchBackend, FieldMap
from ralm_es.train.config import load_config
from ralm_es.train.loop import train

FIELDS = FieldMap(id="uid", text="body", title="headline", vector="embedding", extra=["topic", "year"])
FLAGS = [
    *("--field", "id=uid", "--field", "text=body", "--field", "title=headline", "--field", "vector=embedding"),
    *("--field", "extra=topic", "--field", "extra=year"),
]


def records() -> list[dict[str, Any]]:
    return [json.loads(line) for line in sample_path("sample_corpus.jsonl").read_text().splitlines()]


def create_foreign(es_client: Elasticsearch, name: str, dims: int | None, encoder: Encoder | None) -> None:
    """What a search team might already run: its own mapping and names, documents under their own _ids."""
    props: dict[str, Any] = {
        "uid": {"type": "keyword"},
        "headline": {"type": "text"},
        "body": {"type": "text"},
        "topic": {"type": "keyword"},
        "year": {"type": "integer"},
    }
    if dims is not None:
        props["embedding"] = {"type": "dense_vector", "dims": dims, "index": True, "similarity": "cosine"}
    es_client.indices.create(index=name, mappings={"properties": props})
    rows = records()
    vectors = encoder.encode([r["text"] for r in rows]) if encoder is not None else None
    actions = []
    for i, row in enumerate(rows):
        doc = {"uid": row["_id"], "headline": row["title"], "body": row["text"], **row["metadata"]}
        if vectors is not None:
            doc["embedding"] = vectors[i].tolist()
        actions.append({"_index": name, "_id": f"es-{i}", "_source": doc})
    helpers.bulk(es_client, actions, refresh=True)


@pytest.fixture(scope="module")
def foreign(es_client: Elasticsearch, tiny_encoder: Encoder) -> Iterator[str]:
    name = f"t-foreign-{uuid.uuid4().hex[:8]}"
    create_foreign(es_client, name, tiny_encoder.dim, tiny_encoder)
    yield name
    es_client.indices.delete(index=name)


def test_every_mode_through_the_field_map(es_client: Elasticsearch, foreign: str, tiny_encoder: Encoder) -> None:
    retriever = Retriever(ElasticsearchBackend(es_client, foreign, FIELDS), tiny_encoder, RetrievalSettings(k=4))
    by_uid = {r["_id"]: r for r in records()}
    for mode in ("bm25", "dense", "hybrid"):
        hits = retriever.search("peptide hormone of the pancreatic islets", mode=mode)
        assert len(hits) == 4
        for hit in hits:
            # Ids are the index's uid field (not the Elasticsearch _id), text and title come from body/headline.
            source = by_uid[hit.id]
            assert hit.doc_id == hit.id and hit.text == source["text"] and hit.title == source["title"]
            assert hit.metadata == {"topic": source["metadata"]["topic"], "year": source["metadata"]["year"]}
    assert retriever.search("peptide hormone of the pancreatic islets", mode="bm25")[0].id == "med-01"
    filtered = retriever.search("history", k=10, filters=[Filter("topic", "term", "medicine")])
    assert filtered and all(h.metadata["topic"] == "medicine" for h in filtered)
    recent = retriever.search("the", k=10, mode="bm25", filters=[Filter("year", "range", {"gte": 1990})])
    assert recent and all(h.metadata["year"] >= 1990 for h in recent)
    excluded = retriever.search("insulin", mode="hybrid", exclude_ids=["med-01"])
    assert "med-01" not in {h.id for h in excluded}


def test_a_document_without_an_id_value_is_named_in_one_line(
    es_client: Elasticsearch, index_name: str, tiny_encoder: Encoder
) -> None:
    vector = tiny_encoder.encode(["insulin"])[0].tolist()
    mapping = {"uid": {"type": "keyword"}, "body": {"type": "text"}, "headline": {"type": "text"}}
    es_client.indices.create(
        index=index_name, mappings={"properties": {**mapping, "embedding": {"type": "dense_vector"}}}
    )
    docs = [{"uid": "a", "body": "insulin and glucose", "embedding": vector}, {"body": "insulin", "embedding": vector}]
    helpers.bulk(es_client, [{"_index": index_name, "_source": d} for d in docs], refresh=True)
    retriever = Retriever(ElasticsearchBackend(es_client, index_name, FIELDS), tiny_encoder)
    with pytest.raises(StoreError, match=f"a passage in index '{index_name}' has no 'uid' value"):
        retriever.search("insulin", mode="hybrid")


def test_a_shard_failure_names_its_index_and_elasticsearchs_reason(
    es_client: Elasticsearch, index_name: str, tiny_encoder: Encoder
) -> None:
    """An alias over indices of two vector sizes: the search failed as 'all shards failed', no more said. The
    retriever refuses such an alias before it searches; the store's own search shows the shard's reason."""
    create_foreign(es_client, f"{index_name}-a", 16, None)
    create_foreign(es_client, f"{index_name}-b", 32, tiny_encoder)
    es_client.indices.update_aliases(
        actions=[{"add": {"index": f"{index_name}-{part}", "alias": index_name}} for part in "ab"]
    )
    try:
        backend = ElasticsearchBackend(es_client, index_name, FIELDS)
        vector = tiny_encoder.encode(["insulin"])[0].tolist()
        with pytest.raises(StoreError) as failed:
            backend.search(SearchRequest(mode="dense", vector=vector, k=3))
        message = str(failed.value)
        assert f"index '{index_name}-a'" in message and "different number of dimensions" in message
        # It was judged by its newest index alone, and searched.
        with pytest.raises(RetrievalError) as refused:
            Retriever(backend, tiny_encoder).search("insulin", mode="hybrid")
        assert str(refused.value) == (
            f"index '{index_name}': the indices behind it hold vectors of different sizes ({index_name}-a: 16, "
            f"{index_name}-b: 32); search one of them"
        )
    finally:
        es_client.indices.delete(index=f"{index_name}-a,{index_name}-b")


def test_vector_dimension_is_checked(es_client: Elasticsearch, index_name: str, tiny_encoder: Encoder) -> None:
    create_foreign(es_client, index_name, 16, None)
    retriever = Retriever(ElasticsearchBackend(es_client, index_name, FIELDS), tiny_encoder)
    with pytest.raises(RetrievalError, match=r"gives 32-dimensional vectors but the index holds 16"):
        retriever.search("insulin", mode="dense")
    with pytest.raises(RetrievalError, match="32-dimensional"):
        retriever.search("insulin", mode="hybrid")
    assert retriever.search("insulin", mode="bm25")[0].id == "med-01"


def test_index_without_vectors_is_bm25_only(es_client: Elasticsearch, index_name: str, tiny_encoder: Encoder) -> None:
    create_foreign(es_client, index_name, None, None)
    retriever = Retriever(ElasticsearchBackend(es_client, index_name, FIELDS), tiny_encoder)
    assert retriever.search("insulin", mode="bm25", k=1)[0].id == "med-01"
    with pytest.raises(RetrievalError, match="has no vectors"):
        retriever.search("insulin", mode="dense")
    # Without the field map ralm-es's own field names are not in this index: said, where it found nothing before.
    unmapped = Retriever(ElasticsearchBackend(es_client, index_name), tiny_encoder)
    with pytest.raises(StoreError, match=r"has no field 'text' for the passage text \(its fields: body, headline,"):
        unmapped.search("insulin", mode="bm25")
    typo = Retriever(ElasticsearchBackend(es_client, index_name, replace(FIELDS, title="headlin")), tiny_encoder)
    with pytest.raises(StoreError, match="has no field 'headlin' for the passage title"):
        typo.search("insulin", mode="bm25")


def test_cli_flags_config_section_and_training(
    es_url: str, es_client: Elasticsearch, foreign: str, tiny_encoder: Encoder, tiny_model_dir: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    common = ["--es-url", es_url]
    search = ["search", "peptide hormone of the pancreatic islets", "--index", foreign, "-k", "3", "--json"]
    result = runner.invoke(cli, [*common, *search, *FLAGS, "--model", str(tiny_model_dir)])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    library = Retriever(ElasticsearchBackend(es_client, foreign, FIELDS), tiny_encoder)
    assert hits == [h.to_json() for h in library.search("peptide hormone of the pancreatic islets", k=3)]
    assert all(h["text"] and h["scores"]["dense"] is not None for h in hits)

    config = tmp_path / "ralm.yaml"
    config.write_text(yaml.safe_dump({"fields": {"id": "uid", "text": "body", "title": "headline"}}))
    bm25 = runner.invoke(cli, [*common, "--config", str(config), *search, "--mode", "bm25"])
    assert bm25.exit_code == 0, bm25.output
    assert json.loads(bm25.stdout)[0]["text"].startswith("Insulin is a peptide hormone")

    # A bad key is blamed on where it is: the flag, beside a file with a good fields section, or the file.
    with_flag = runner.invoke(cli, [*common, "--config", str(config), *search, "--mode", "bm25", "--field", "txt=b"])
    assert isinstance(with_flag.exception, ConfigError)
    assert str(with_flag.exception).startswith("--field: unknown setting 'txt'; did you mean text")
    config.write_text(yaml.safe_dump({"fields": {"txt": "body"}}))
    bad = runner.invoke(cli, [*common, "--config", str(config), *search, "--mode", "bm25"])
    assert isinstance(bad.exception, ConfigError) and "unknown setting 'txt'; did you mean text" in str(bad.exception)
    assert str(bad.exception).startswith(f"{config}: fields")
    bad_flag = runner.invoke(cli, [*common, *search, "--mode", "bm25", "--field", "body"])
    assert isinstance(bad_flag.exception, ConfigError) and "expected name=field" in str(bad_flag.exception)

    # A retrieval cache from the foreign index feeds training like any other.
    claims = tmp_path / "claims.jsonl"
    claims.write_text(sample_path("sample_claims.jsonl").read_text())
    cache = tmp_path / "claims.cache.jsonl"
    args = ["retrieve", str(claims), "--index", foreign, "--mode", "bm25", "-k", "3", "--out", str(cache), "--quiet"]
    retrieved = runner.invoke(cli, [*common, *args, *FLAGS])
    assert retrieved.exit_code == 0, retrieved.output
    header, entries = read_cache(cache)
    expected = library.search(entries["claim-02"].query, k=3, mode="bm25")
    assert header.index == foreign and [h.id for h in entries["claim-02"].hits] == [h.id for h in expected]
    assert all(h.text for h in entries["claim-02"].hits)
    train_config = tmp_path / "train.yaml"
    train_config.write_text(
        yaml.safe_dump(
            {
                "task": {"type": "classification"},
                "data": {"train": str(claims), "train_cache": str(cache)},
                "model": {"encoder": str(tiny_model_dir), "fusion": "concat", "k": 3, "max_length": 64},
                "train": {"max_steps": 2, "batch_size": 8, "device": "cpu", "threads": 1},
                "run": {"out": str(tmp_path / "run"), "progress": False},
            }
        )
    )
    run = train(load_config(train_config))
    assert run.finished and run.steps == 2


def test_ingest_into_an_index_made_elsewhere_writes_its_field_map_or_is_refused(
    es_url: str, es_client: Elasticsearch, index_name: str, tiny_encoder: Encoder, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Without a field map ingest wrote ralm-es's own fields into the index, beside its documents and unread by its
    field map (and ingest had no --field)."""
    create_foreign(es_client, index_name, tiny_encoder.dim, tiny_encoder)
    before = es_client.count(index=index_name)["count"]
    new = tmp_path / "new.jsonl"
    new.write_text(json.dumps({"_id": "new-1", "title": "Glucagon", "text": "Glucagon raises blood glucose."}) + "\n")
    runner = CliRunner()
    ingest = ["--es-url", es_url, "ingest", str(new), "--index", index_name, "--model", str(tiny_model_dir), "--quiet"]
    refused = runner.invoke(cli, ingest, env={"RALM_ES_HOME": str(tmp_path / "home")})
    assert isinstance(refused.exception, StoreError)
    assert f"index '{index_name}' has no field 'text' for the passage text (its fields: body, embedding" in str(
        refused.exception
    )
    es_client.indices.refresh(index=index_name)
    assert es_client.count(index=index_name)["count"] == before
    mapped = runner.invoke(cli, [*ingest, *FLAGS], env={"RALM_ES_HOME": str(tmp_path / "home")})
    assert mapped.exit_code == 0, mapped.output
    es_client.indices.refresh(index=index_name)
    assert es_client.count(index=index_name)["count"] == before + 1
    hits = Retriever(ElasticsearchBackend(es_client, index_name, FIELDS), tiny_encoder).search("glucagon", mode="bm25")
    assert hits[0].doc_id == "new-1" and hits[0].title == "Glucagon"


def test_a_vector_field_the_field_map_misnames_is_named_with_the_ones_the_index_has(
    es_client: Elasticsearch, foreign: str, tiny_encoder: Encoder
) -> None:
    """It said the index had no vectors, and to ingest with embeddings, over an index holding them as 'embedding'."""
    retriever = Retriever(ElasticsearchBackend(es_client, foreign, replace(FIELDS, vector="emb")), tiny_encoder)
    with pytest.raises(RetrievalError, match=r"no dense_vector field 'emb', but embedding \(32 dims\): name it with"):
        retriever.search("insulin", mode="dense")


def test_a_filter_on_a_field_outside_the_metadata_names_the_field_map_entry(
    es_client: Elasticsearch, foreign: str, tiny_encoder: Encoder
) -> None:
    """Every document has 'year', yet the filter was told no passage had it."""
    retriever = Retriever(ElasticsearchBackend(es_client, foreign, replace(FIELDS, extra=["topic"])), tiny_encoder)
    with pytest.raises(StoreError, match=r"year outside 'metadata': add to the field map with --field extra=year"):
        retriever.search("insulin", mode="bm25", filters=[Filter("year", "term", 2000)])


def test_ingest_with_a_field_map_does_not_create_an_index(
    es_url: str, es_client: Elasticsearch, index_name: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A new index comes from the template, under ralm-es's names: passages written under the map's were mapped
    by guess, their vectors dropped (exit 0)."""
    new = tmp_path / "new.jsonl"
    new.write_text(json.dumps({"_id": "n1", "text": "Glucagon raises blood glucose."}) + "\n")
    args = ["--es-url", es_url, "ingest", str(new), "--index", index_name, "--model", str(tiny_model_dir), "--quiet"]
    result = CliRunner().invoke(cli, [*args, "--field", "text=body"], env={"RALM_ES_HOME": str(tmp_path / "home")})
    assert isinstance(result.exception, StoreError) and "does not exist, and ralm-es makes a new index" in str(
        result.exception
    )
    assert es_client.indices.get(index=f"{index_name}*").body == {}


def test_text_in_an_object_or_a_multi_field_is_read_back(
    es_client: Elasticsearch, index_name: str, tiny_encoder: Encoder
) -> None:
    """The check passed these fields, yet every hit's text came back empty: _source holds the object's value, and
    the multi-field's parent."""
    props = {
        "uid": {"type": "keyword"},
        "content": {"properties": {"body": {"type": "text", "fields": {"std": {"type": "text"}}}}},
    }
    es_client.indices.create(index=index_name, mappings={"properties": props})
    doc = {"uid": "a", "content": {"body": "insulin lowers blood glucose"}}
    es_client.index(index=index_name, id="a", document=doc, refresh=True)
    for text in ("content.body", "content.body.std"):
        backend = ElasticsearchBackend(es_client, index_name, FieldMap(id="uid", text=text))
        hits = Retriever(backend, tiny_encoder).search("insulin", mode="bm25")
        assert [(h.id, h.text) for h in hits] == [("a", "insulin lowers blood glucose")]


def test_ingest_into_an_empty_index_with_nothing_mapped_yet(
    es_client: Elasticsearch, index_name: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """An index made empty, with no mapping: ingest fills it by dynamic mapping, as before its text check."""
    es_client.indices.create(index=index_name)
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"_id": "a", "text": "insulin lowers blood glucose"}) + "\n")
    settings = IngestSettings(embed=False, model=str(tiny_model_dir))
    summary = Ingest(ElasticsearchBackend(es_client, index_name), settings, checkpoint_dir=tmp_path).run([corpus])
    es_client.indices.refresh(index=index_name)
    assert summary.indexed == es_client.count(index=index_name)["count"] == 1
