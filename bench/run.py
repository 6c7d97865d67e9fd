"""``python -m bench.run [--quick] [--only NAME ...]``: run the benchmarks, save their results under
``bench/results/`` and rewrite ``docs/benchmarks.md`` from them."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import ingest_bench, retrieval_bench
from bench.common import BenchConfig, ScratchIndices, Session, load_average, machine_info
from bench.report import collect_train, write_report
from ralm_es.config import ConnectionSettings
from ralm_es.embed import Encoder
from ralm_es.es.client import connect
from ralm_es.onnx_runtime import RUNTIMES

PARTS = ("ingest", "retrieval", "train")


def run_all(config: BenchConfig) -> dict[str, Any]:
    """Every wanted benchmark against the node at ``config.es_url``; scratch indices are deleted afterwards."""
    client = connect(ConnectionSettings(hosts=[config.es_url], request_timeout=300, max_retries=3))
    started = time.perf_counter()
    results: dict[str, Any] = {
        "command": " ".join(["python -m bench.run", *sys.argv[1:]]) if __name__ == "__main__" else "bench.run.run_all",
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(config).items()},
        "machine": machine_info(client),
        "load_start": load_average(),
    }
    scratch = ScratchIndices(client)
    results["scratch_prefix"] = scratch.prefix
    with tempfile.TemporaryDirectory(prefix="ralm-bench-") as workdir:
        session = Session(config, client, scratch, Path(workdir), Encoder(config.model, max_length=256))
        try:
            if config.wants("ingest"):
                results["ingest"] = ingest_bench.run(session)
            if config.wants("retrieval"):
                results["retrieval"] = retrieval_bench.run(session)
        finally:
            scratch.cleanup()
    if config.train and config.wants("train"):
        results["train"] = collect_train(config.results_dir)
    results["load_end"] = load_average()
    results["seconds"] = time.perf_counter() - started
    return results


def save(results: dict[str, Any], config: BenchConfig) -> Path:
    """The results JSON and the report written from it; returns the report's path."""
    name = "quick.json" if config.quick else "full.json"
    config.results_dir.mkdir(parents=True, exist_ok=True)
    (config.results_dir / name).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return write_report(results, config.docs_dir, name)


def parse_args(argv: list[str] | None = None) -> BenchConfig:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small slices and one repetition (a few minutes)")
    parser.add_argument("--only", nargs="+", choices=PARTS, default=[], help="run only these parts")
    parser.add_argument("--es-url", default=os.environ.get("RALM_ES_URL", "http://127.0.0.1:9200"))
    parser.add_argument("--model", help="local encoder folder (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--abstracts", type=int, help="use the first N SciFact abstracts (default: all)")
    parser.add_argument("--queries", type=int, help="use the first N judged SciFact train queries (default: all)")
    parser.add_argument("--conll-sentences", type=int, help="use the first N CoNLL training sentences (default: all)")
    parser.add_argument("--latency-queries", type=int, help="single searches timed for the latency split")
    parser.add_argument("--many-queries", type=int, help="queries for search_many against a loop of search")
    parser.add_argument("--repeats", type=int, help="repetitions of each timed figure")
    parser.add_argument("--conll-repeats", type=int, help="repetitions of the CoNLL pass (default 1)")
    parser.add_argument("--no-peers", action="store_true", help="skip Haystack and LangChain")
    parser.add_argument(
        "--ingest-runtime",
        action="append",
        choices=[rt for rt in RUNTIMES if rt != "torch"],
        default=[],
        help="also measure ralm-es ingest (and its encoder-alone limit) with this encoder runtime; repeatable",
    )
    args = parser.parse_args(argv)
    given = {
        key: value
        for key in (
            "es_url",
            "model",
            "abstracts",
            "queries",
            "conll_sentences",
            "latency_queries",
            "many_queries",
            "repeats",
            "conll_repeats",
        )
        if (value := getattr(args, key)) is not None
    }
    given.update(only=args.only, peers=not args.no_peers, ingest_runtimes=args.ingest_runtime)
    return BenchConfig.quick_defaults(**given) if args.quick else BenchConfig(**given)


def main(argv: list[str] | None = None) -> None:
    # A terminated run still deletes its scratch indices from the shared node (the finally in run_all).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    config = parse_args(argv)
    results = run_all(config)
    report = save(results, config)
    print(f"wrote {report} and {config.results_dir}", file=sys.stderr)


if __name__ == "__main__":
    main()
