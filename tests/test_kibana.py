"""Kibana assets: the saved objects parse and name the passages alias and real fields; the Dev Tools snippets in
docs/kibana.md are what the query code builds today, and the node accepts them."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from ralm_es.embed import Encoder
from ralm_es.store.base import IndexSpec
from ralm_es.store.elastic import ElasticsearchBackend, load_template

REPO = Path(__file__).resolve().parents[1]
NDJSON = REPO / "kibana" / "ralm-es-saved-objects.ndjson"
BLOCK = re.compile(r"```\nPOST (?P<index>[^/\s]+)/_search\n(?P<body>.*?)\n```", re.S)


def load_snippets_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kibana_snippets", REPO / "kibana" / "snippets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def saved_objects() -> dict[str, dict[str, Any]]:
    lines = [line for line in NDJSON.read_text(encoding="utf-8").splitlines() if line.strip()]
    objects = [json.loads(line) for line in lines]
    assert all({"id", "type", "attributes", "references"} <= set(o) for o in objects)
    return {o["type"]: o for o in objects}


def test_saved_objects_name_the_alias_and_real_fields() -> None:
    objects = saved_objects()
    assert set(objects) == {"index-pattern", "search"}
    view, search = objects["index-pattern"], objects["search"]
    assert view["attributes"]["title"] == "passages*"
    props = load_template()["mappings"]["properties"]
    hidden = [f["value"] for f in json.loads(view["attributes"]["sourceFilters"])]
    assert hidden == ["vector"] and props["vector"]["type"] == "dense_vector"
    assert set(json.loads(view["attributes"]["fieldAttrs"])) <= set(props)
    columns = search["attributes"]["columns"]
    assert columns and set(columns) <= set(props) and "text" in columns
    assert all(field in props for field, _ in search["attributes"]["sort"])
    source = json.loads(search["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
    (ref,) = search["references"]
    assert ref == {"id": view["id"], "name": source["indexRefName"], "type": "index-pattern"}


def doc_bodies() -> list[tuple[str, dict[str, Any]]]:
    doc = (REPO / "docs" / "kibana.md").read_text(encoding="utf-8")
    section = doc.split("<!-- snippets:start -->", 1)[1].split("<!-- snippets:end -->", 1)[0]
    return [(m["index"], json.loads(m["body"])) for m in BLOCK.finditer(section)]


def without_vectors(body: dict[str, Any]) -> tuple[dict[str, Any], list[float] | None]:
    body = json.loads(json.dumps(body))
    vector = body.get("knn", {}).pop("query_vector", None)
    return body, vector


@pytest.fixture(scope="module")
def generated() -> list[dict[str, Any]]:
    snippets = load_snippets_module()
    return [body for found in snippets.bodies(Encoder(device="cpu")).values() for body in found]


def test_doc_snippets_are_what_the_code_builds(generated: list[dict[str, Any]]) -> None:
    documented = doc_bodies()
    assert [index for index, _ in documented] == ["passages"] * 4
    assert len(documented) == len(generated)
    for (_, doc_body), code_body in zip(documented, generated, strict=True):
        doc_rest, doc_vector = without_vectors(doc_body)
        code_rest, code_vector = without_vectors(code_body)
        assert doc_rest == code_rest, "docs/kibana.md is stale: run python kibana/snippets.py"
        if code_vector is not None:
            assert doc_vector == pytest.approx(code_vector, abs=2e-4)
    assert "multi_match" in json.dumps(documented[0][1]) and "knn" in documented[1][1]
    hybrid = [body for _, body in documented[2:]]
    assert hybrid[0]["query"]["bool"]["filter"] == [{"term": {"metadata.topic": "medicine"}}]
    assert hybrid[1]["knn"]["filter"]["bool"]["filter"] == [{"term": {"metadata.topic": "medicine"}}]


def test_the_node_accepts_the_snippets(es_client: Elasticsearch, index_name: str) -> None:
    backend = ElasticsearchBackend(es_client, index_name)
    backend.create_index(IndexSpec(name=index_name, dims=384), alias=True)
    for _, body in doc_bodies():
        resp = es_client.search(index=index_name, **body)
        assert resp["hits"]["total"]["value"] == 0 and not resp.get("_shards", {}).get("failures")
