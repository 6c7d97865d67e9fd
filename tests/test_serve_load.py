"""The serve load benchmark against the test node, for a second or so per configuration: every configuration is
measured, the request cap holds, and the servers and the scratch index are gone afterwards."""

from __future__ import annotations

import json
from pathlib import Path

from elasticsearch import Elasticsearch

from bench.serve_load import main


def test_a_short_load_run_measures_each_server_and_leaves_nothing_behind(
    tmp_path: Path, es_url: str, es_client: Elasticsearch, tiny_model_dir: Path
) -> None:
    out = tmp_path / "serve_load.json"
    argv = ["--duration", "1", "--clients", "3", "1", "--batch-sizes", "1", "8", "--workers", "1", "2"]
    argv += ["--max-requests", "25"]
    main([*argv, "--model", str(tiny_model_dir), "--es-url", es_url, "--out", str(out)])
    results = json.loads(out.read_text(encoding="utf-8"))
    runs = [(run["clients"], run["batch_size"], run["workers"]) for run in results["runs"]]
    servers = [(1, 1), (1, 2), (8, 1), (8, 2)]
    assert runs == [(clients, *server) for clients in (3, 1) for server in servers]
    for run in results["runs"]:
        assert run["errors"] == 0 and 0 < run["ok"] == run["requests"] <= 25
        assert run["latency_ms"]["p50"] <= run["latency_ms"]["p99"] <= run["latency_ms"]["max"]
        # With two workers the server's parent only supervises: the CPU is its children's, found through /proc.
        assert run["cpu_cores"]["load_generator"] > 0 and run["cpu_cores"]["server"] > 0
    assert results["passages"] > 0 and results["model"] == str(tiny_model_dir)
    assert not es_client.indices.get(index="bench-serve-*", expand_wildcards="all").body
