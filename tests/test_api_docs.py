"""docs/api.md runs: its Python blocks, in order and in one namespace, against the test node with a tiny model."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "api.md"
PYTHON = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks() -> list[tuple[int, str]]:
    text = DOC.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in PYTHON.finditer(text)]


def test_api_doc_examples_run(
    es_url: str, es_client: Elasticsearch, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = f"t-docs-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("RALM_ES_URL", es_url)
    monkeypatch.setenv("RALM_ES_DOCS_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("RALM_ES_DOCS_INDEX", index)
    monkeypatch.setenv("RALM_ES_DOCS_WORK", str(tmp_path / "work"))
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks()
    assert len(blocks) >= 8
    namespace: dict[str, Any] = {"__name__": "api_docs"}
    try:
        for line, code in blocks:
            exec(compile(code, f"{DOC}:{line}", "exec"), namespace)
    finally:
        leftover = es_client.indices.get(index=f"{index}*", expand_wildcards="all").body
        if leftover:
            es_client.indices.delete(index=",".join(leftover))
    # What the examples claim happened, checked on the objects they left behind.
    assert namespace["summary"].indexed > 0 and namespace["summary"].failed == 0
    assert namespace["result"].finished and namespace["result"].steps == 10
    assert len(namespace["predictions"]) == len(namespace["sentences"])
    record = namespace["record"]
    assert len(record.tags) == 7 and len(record.passages) == 4 and len(record.weights) == 7
    assert namespace["response"].status_code == 200
    # The clean-up block removed the index.
    assert not leftover
