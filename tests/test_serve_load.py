"""The serve load benchmark against the test node, for a second or so per configuration: every configuration is
measured in every round, the request cap holds, the servers and the scratch index are gone afterwards, and the
report gives one row per configuration over its rounds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from bench.report import serve_section
from bench.serve_load import main


def test_a_short_load_run_measures_each_server_and_leaves_nothing_behind(
    tmp_path: Path, es_url: str, es_client: Elasticsearch, tiny_model_dir: Path
) -> None:
    out = tmp_path / "serve_load.json"
    argv = ["--duration", "1", "--clients", "3", "--batch-sizes", "1", "8", "--workers", "1", "2"]
    argv += ["--max-requests", "25", "--repeats", "2"]
    main([*argv, "--model", str(tiny_model_dir), "--es-url", es_url, "--out", str(out)])
    results = json.loads(out.read_text(encoding="utf-8"))
    runs = [(run["repeat"], run["batch_size"], run["workers"]) for run in results["runs"]]
    servers = [(1, 1), (1, 2), (8, 1), (8, 2)]
    assert runs == [(repeat, *server) for repeat in (1, 2) for server in servers]
    for run in results["runs"]:
        assert run["errors"] == 0 and 0 < run["ok"] == run["requests"] <= 25
        assert run["latency_ms"]["p50"] <= run["latency_ms"]["p99"] <= run["latency_ms"]["max"]
        # With two workers the server's parent only supervises: the CPU is its children's, found through /proc.
        assert run["cpu_cores"]["load_generator"] > 0 and run["cpu_cores"]["server"] > 0
    assert results["passages"] > 0 and results["model"] == str(tiny_model_dir)
    assert not es_client.indices.get(index="bench-serve-*", expand_wildcards="all").body
    section = serve_section(out)
    rows = [line.split(" | ") for line in section if line.startswith("| unique") or line.startswith("| repeated")]
    # One row per server, its requests summed over both rounds.
    assert [(row[2], row[3], row[4], int(row[5])) for row in rows] == [
        (
            "1 (one at a time)" if batch == 1 else str(batch),
            str(workers),
            "torch",
            sum(r["requests"] for r in results["runs"] if (r["batch_size"], r["workers"]) == (batch, workers)),
        )
        for batch, workers in servers
    ]
    gains = [line for line in section if line.startswith("- repeated queries, 3 clients")]
    assert len(gains) == 3


def test_servers_of_each_runtime_are_measured_against_one_at_a_time_under_the_indexs(
    tmp_path: Path, es_url: str, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The servers export their ONNX encoder into this cache home, never the user's.
    monkeypatch.setenv("RALM_ES_HOME", str(tmp_path / "home"))
    out = tmp_path / "serve_load.json"
    argv = ["--duration", "1", "--clients", "2", "--batch-sizes", "1", "8", "--server-runtimes", "torch", "onnx"]
    argv += ["--max-requests", "10", "--repeats", "1", "--queries", "unique"]
    main([*argv, "--model", str(tiny_model_dir), "--es-url", es_url, "--out", str(out)])
    results = json.loads(out.read_text(encoding="utf-8"))
    servers = [(1, "torch"), (1, "onnx"), (8, "torch"), (8, "onnx")]
    assert [(run["batch_size"], run["runtime"]) for run in results["runs"]] == servers
    assert results["runtime"] == "torch" and all(run["errors"] == 0 for run in results["runs"])
    gains = [line for line in serve_section(out) if line.startswith("- unique queries, 2 clients")]
    # Every server but the baseline (one at a time under the index's runtime) against that baseline.
    assert [line.split(":")[0] for line in gains] == [
        "- unique queries, 2 clients, batch size 1, 1 workers, runtime onnx",
        "- unique queries, 2 clients, batch size 8, 1 workers, runtime torch",
        "- unique queries, 2 clients, batch size 8, 1 workers, runtime onnx",
    ]
    assert all("times one at a time in one worker's (torch)" in line for line in gains)
