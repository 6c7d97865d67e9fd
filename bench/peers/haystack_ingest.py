"""Haystack writing the benchmark passages: ``SentenceTransformersDocumentEmbedder`` then
``ElasticsearchDocumentStore.write_documents``. Runs in the Haystack virtual environment; prints one JSON line."""

from __future__ import annotations

import json
import time

from elasticsearch import Elasticsearch
from haystack import Document
from haystack.components.embedders import SentenceTransformersDocumentEmbedder
from haystack.utils import ComponentDevice
from haystack_integrations.document_stores.elasticsearch import ElasticsearchDocumentStore
from peer_args import load_passages, parse_args


def skip_connection_check() -> None:
    """The store checks its connection with GET /, which the shared test node refuses (405); every other call is
    unchanged, including the store's own index creation with its default mapping."""
    Elasticsearch.info = lambda self, **kwargs: None  # type: ignore[method-assign]


def main() -> None:
    args = parse_args()
    skip_connection_check()
    rows = load_passages(args.passages)
    docs = [Document(id=r["id"], content=r["text"], meta={"title": r["title"], "doc_id": r["doc_id"]}) for r in rows]
    embedder = SentenceTransformersDocumentEmbedder(
        model=args.model,
        device=ComponentDevice.from_str("cpu"),
        batch_size=args.batch,
        normalize_embeddings=True,
        progress_bar=False,
    )
    embedder.warm_up()
    # One small call first: the ralm-es encoder it is compared with has already run.
    embedder.run([Document(content=d.content) for d in docs[:8]])
    store = ElasticsearchDocumentStore(hosts=args.url, index=args.index, embedding_similarity_function="cosine")
    started = time.perf_counter()
    embedded = embedder.run(docs)["documents"]
    store.write_documents(embedded)
    seconds = time.perf_counter() - started
    store.client.indices.refresh(index=args.index)
    count = int(store.client.count(index=args.index)["count"])
    print(json.dumps({"passages": len(docs), "seconds": seconds, "count": count}))


if __name__ == "__main__":
    main()
