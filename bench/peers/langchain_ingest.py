"""LangChain writing the benchmark passages: ``ElasticsearchStore.add_texts`` with ``HuggingFaceEmbeddings``.
Runs in the LangChain virtual environment; prints one JSON line."""

from __future__ import annotations

import json
import time

from elasticsearch import Elasticsearch
from langchain_elasticsearch import ElasticsearchStore
from langchain_huggingface import HuggingFaceEmbeddings
from peer_args import load_passages, parse_args


def main() -> None:
    args = parse_args()
    rows = load_passages(args.passages)
    texts = [r["text"] for r in rows]
    embeddings = HuggingFaceEmbeddings(
        model_name=args.model,
        model_kwargs={"device": "cpu"},
        encode_kwargs={"batch_size": args.batch, "normalize_embeddings": True},
    )
    # One small call first: the ralm-es encoder it is compared with has already run.
    embeddings.embed_documents(texts[:8])
    # A client of our own: with es_url the store first calls GET /, which the shared test node refuses.
    client = Elasticsearch(args.url, request_timeout=300)
    store = ElasticsearchStore(index_name=args.index, embedding=embeddings, client=client)
    started = time.perf_counter()
    store.add_texts(
        texts,
        metadatas=[{"title": r["title"], "doc_id": r["doc_id"]} for r in rows],
        ids=[r["id"] for r in rows],
        bulk_kwargs={"chunk_size": args.bulk},
    )
    seconds = time.perf_counter() - started
    client.indices.refresh(index=args.index)
    count = int(client.count(index=args.index)["count"])
    print(json.dumps({"passages": len(rows), "seconds": seconds, "count": count}))


if __name__ == "__main__":
    main()
