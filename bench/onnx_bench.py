"""Query encoding under each encoder runtime (torch, torch-bf16, onnx, onnx-int8): short SciFact queries at batch 1
and batch 32 (medians of interleaved repetitions), vector agreement with torch, and dense nDCG@10 on a torch-filled
SciFact index with the query encoder's runtime changed (the runtimes of torch's kind only: an index refuses int8
query vectors). Writes ``bench/results/onnx.json``; ``python -m bench.onnx_bench [--index scifact]``."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from ralm_es.config import ConnectionSettings
from ralm_es.corpora.benchmarks import scifact_paths
from ralm_es.corpus.readers import read_corpus
from ralm_es.corpus.types import Record
from ralm_es.embed import Encoder
from ralm_es.es.client import connect
from ralm_es.onnx_runtime import RUNTIMES, vector_kind
from ralm_es.retrieve.evaluate import evaluate_index
from ralm_es.retrieve.metrics import load_qrels
from ralm_es.retrieve.retriever import RetrievalSettings, Retriever
from ralm_es.store.elastic import ElasticsearchBackend

RESULTS = Path(__file__).resolve().parent / "results" / "onnx.json"


def per_query_ms(encoder: Encoder, texts: list[str], batch: int) -> float:
    """Milliseconds per query to encode ``texts`` in batches of ``batch``."""
    started = time.perf_counter()
    for start in range(0, len(texts), batch):
        encoder.encode(texts[start : start + batch], batch_size=batch)
    return (time.perf_counter() - started) * 1000 / len(texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", default="scifact")
    parser.add_argument("--es-url", default="http://127.0.0.1:9200")
    parser.add_argument("--queries", type=int, default=64, help="Queries per timed repetition.")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    paths = scifact_paths()
    queries = {r.id: r.text for r in read_corpus(paths["queries_train"]) if isinstance(r, Record)}
    texts = list(queries.values())[: args.queries]
    encoders = {runtime: Encoder(device="cpu", runtime=runtime) for runtime in RUNTIMES}
    reference = encoders["torch"].encode(list(queries.values()))
    agreement = {}
    for runtime, encoder in encoders.items():
        cos = (encoder.encode(list(queries.values())) * reference).sum(1)
        agreement[runtime] = {"mean": float(cos.mean()), "min": float(cos.min())}
    timings: dict[str, dict[str, list[float]]] = {r: {"1": [], "32": []} for r in RUNTIMES}
    for encoder in encoders.values():
        per_query_ms(encoder, texts[:8], 1)  # warm-up: first calls allocate
    for _ in range(args.reps):
        # Interleaved, so a change in the shared machine's load falls on every runtime alike.
        for batch in (1, 32):
            for runtime, encoder in encoders.items():
                timings[runtime][str(batch)].append(per_query_ms(encoder, texts, batch))
    speed = {
        runtime: {
            batch: {"median_ms": statistics.median(values), "min_ms": min(values), "max_ms": max(values)}
            for batch, values in by_batch.items()
        }
        for runtime, by_batch in timings.items()
    }
    quality: dict[str, Any] = {}
    backend = ElasticsearchBackend(connect(ConnectionSettings(hosts=[args.es_url], request_timeout=120)), args.index)
    info = backend.info()
    if info.count == 9209 and info.dims == encoders["torch"].dim:
        qrels = load_qrels(paths["qrels_train"])
        for runtime in (r for r in RUNTIMES if vector_kind(r) == vector_kind("torch")):
            retriever = Retriever(backend, encoders[runtime], RetrievalSettings(mode="dense"))
            quality[runtime] = evaluate_index(retriever, queries, qrels, "dense")
    result = {
        "command": "python -m bench.onnx_bench",
        "written": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg()[0],
        "model": encoders["torch"].name,
        "revision": encoders["torch"].revision,
        "queries_timed": len(texts),
        "mean_words": float(np.mean([len(t.split()) for t in texts])),
        "reps": args.reps,
        "speed": speed,
        "agreement": agreement,
        # An index that records no runtime was filled by torch.
        "index": f"{args.index}: {info.count:,} passages, filled by {(info.model and info.model.runtime) or 'torch'}",
        "quality": quality,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
