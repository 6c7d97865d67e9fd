"""Retrieval quality on a whole SciFact index: every mode over all judged train queries, then fusion tuned on a
seeded tuning part of them and measured on the held-out dev part. Results go to ``bench/results/scifact_eval.json``
under a label (one entry per index variant, rewritten after every mode, so a killed run keeps what finished).

``python -m bench.scifact_eval --index scifact-stem --label "hunspell stemming"``; the index is made beforehand with
``ralm-es ingest ../shared/data/scifact/corpus.jsonl --index scifact-stem``, or, with ``--copy-from scifact``, made
here from an index already embedded: a new index from the template (so with the analyzer the cluster gives now)
filled from a scroll of the source through the store's bulk writes (the text analysed anew, the vectors copied).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from ralm_es.config import ConnectionSettings
from ralm_es.corpora.benchmarks import scifact_paths
from ralm_es.corpus.readers import read_corpus
from ralm_es.corpus.types import Passage, Record
from ralm_es.embed import Encoder
from ralm_es.es.client import connect
from ralm_es.retrieve.evaluate import evaluate_index, tune_fusion
from ralm_es.retrieve.metrics import load_qrels
from ralm_es.retrieve.retriever import RetrievalSettings, Retriever
from ralm_es.store.base import Chunking, IndexSpec
from ralm_es.store.elastic import ElasticsearchBackend

RESULTS = Path(__file__).resolve().parent / "results" / "scifact_eval.json"


def save(out: Path, label: str, entry: dict[str, Any]) -> None:
    data = json.loads(out.read_text()) if out.is_file() else {"runs": {}}
    data["runs"][label] = entry
    out.write_text(json.dumps(data, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", required=True)
    parser.add_argument("--label", required=True)
    parser.add_argument("--es-url", default="http://127.0.0.1:9200")
    parser.add_argument("--model", help="Encoder folder (default: the packaged all-MiniLM-L6-v2).")
    parser.add_argument("--dev-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--copy-from", help="Fill --index from this embedded index first (text analysed anew).")
    args = parser.parse_args()

    paths = scifact_paths()
    queries = {r.id: r.text for r in read_corpus(paths["queries_train"]) if isinstance(r, Record)}
    qrels = load_qrels(paths["qrels_train"])
    client = connect(ConnectionSettings(hosts=[args.es_url], request_timeout=600))
    backend = ElasticsearchBackend(client, args.index)
    if args.copy_from:
        source = ElasticsearchBackend(client, args.copy_from)
        meta = source.mapping().get("_meta") or {}
        chunking = meta.get("chunking")
        backend.ensure_index(
            IndexSpec(
                name=args.index,
                dims=source.vector_dims(),
                model=meta.get("model"),
                chunking=Chunking(**chunking) if chunking else None,
            )
        )
        # The integration-test node has no reindex module: scroll the source and bulk-write through the store.
        batch: list[Passage] = []
        for passage in [*source.passages(), None]:
            if passage is not None:
                batch.append(passage)
            if len(batch) == 1000 or (passage is None and batch):
                if failed := [r for r in backend.write(batch) if not r.ok]:
                    raise SystemExit(f"copying {args.copy_from}: {failed[0].source}: {failed[0].error}")
                batch = []
        backend.refresh()
    info = backend.info()
    retriever = Retriever(backend, Encoder(args.model), RetrievalSettings())
    entry: dict[str, Any] = {
        "written": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "index": f"{args.index}: {info.count:,} passages, analyzer {info.analyzer}, encoder "
        f"{info.model.name if info.model else None} ({info.model.revision if info.model else None})",
        "settings": "defaults: hybrid = client-side RRF, rrf_k 60, depth 50, dense_weight 0.5, title_boost 1",
        "modes": {},
    }
    for mode in ("bm25", "dense", "hybrid"):
        entry["modes"][mode] = evaluate_index(retriever, queries, qrels, mode)
        save(args.out, args.label, entry)
        print(mode, json.dumps(entry["modes"][mode]), flush=True)
    tuned = tune_fusion(retriever, queries, qrels, dev_fraction=args.dev_fraction, seed=args.seed)
    entry["tuned"] = {**tuned.record(), "dev": tuned.dev, "dev_base": tuned.dev_base}
    save(args.out, args.label, entry)
    print("tuned", json.dumps(entry["tuned"]), flush=True)


if __name__ == "__main__":
    main()
