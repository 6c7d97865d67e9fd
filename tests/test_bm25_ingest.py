"""A BM25-only ingest needs a tokenizer to cut passages and nothing of torch or transformers."""

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


def test_bm25_only_ingest_never_imports_torch(
    es_client: Elasticsearch, es_url: str, index_name: str, tmp_path: Path
) -> None:
    corpus = tmp_path / "a.jsonl"
    corpus.write_text(
        "".join(json.dumps({"_id": str(i), "text": f"passage {i} about cells"}) + "\n" for i in range(20))
    )
    env = {**os.environ, "RALM_ES_URL": es_url, "RALM_ES_HOME": str(tmp_path / "home")}
    args = ["ingest", str(corpus), "--index", index_name, "--no-embed", "--quiet"]
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == {"torch": False, "transformers": False}
    es_client.indices.refresh(index=index_name)
    assert es_client.count(index=index_name)["count"] == 20
