"""BM25-only commands (ingest, search, retrieve, evaluate) need a tokenizer at most, and nothing of torch or
transformers: a user who asked for BM25 does not wait for them to load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from elasticsearch import Elasticsearch

PROBE = """
import json, sys
from ralm_es.cli.main import cli
try:
    cli.main(sys.argv[1:], standalone_mode=False)
finally:
    print(json.dumps({"torch": "torch" in sys.modules, "transformers": "transformers" in sys.modules}))
"""


def run_probe(args: list[str], env: dict[str, str]) -> tuple[dict[str, bool], str]:
    """The command's exit through ``cli.main`` (an exception fails the test) and which heavy modules it loaded."""
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    *out, loaded = proc.stdout.splitlines()
    return json.loads(loaded), "\n".join(out)


def test_bm25_only_commands_never_import_torch(
    es_client: Elasticsearch, es_url: str, index_name: str, tmp_path: Path
) -> None:
    corpus = tmp_path / "a.jsonl"
    corpus.write_text(
        "".join(json.dumps({"_id": str(i), "text": f"passage {i} about cells"}) + "\n" for i in range(20))
    )
    env = {**os.environ, "RALM_ES_URL": es_url, "RALM_ES_HOME": str(tmp_path / "home")}
    none = {"torch": False, "transformers": False}
    loaded, _ = run_probe(["ingest", str(corpus), "--index", index_name, "--no-embed", "--quiet"], env)
    assert loaded == none
    es_client.indices.refresh(index=index_name)
    assert es_client.count(index=index_name)["count"] == 20

    bm25 = ["--index", index_name, "--mode", "bm25"]
    loaded, out = run_probe(["search", "passage 7", *bm25, "-k", "1", "--json"], env)
    assert loaded == none and [hit["doc_id"] for hit in json.loads(out)] == ["7"]
    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps({"_id": "q7", "text": "passage 7"}) + "\n")
    cache = tmp_path / "cache.jsonl"
    loaded, _ = run_probe(["retrieve", str(queries), *bm25, "-k", "2", "--out", str(cache), "--quiet"], env)
    assert loaded == none and json.loads(cache.read_text().splitlines()[1])["hits"][0]["doc_id"] == "7"
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq7\t7\t1\n")
    loaded, out = run_probe(["evaluate", *bm25, "--queries", str(queries), "--qrels", str(qrels), "--json"], env)
    assert loaded == none and json.loads(out)["ndcg@10"] == 1.0
