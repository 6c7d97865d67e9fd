"""Retrieval: the Retriever (bm25, dense, hybrid), fusion functions, the cache format, IR evaluation."""
