"""Corpus readers (JSONL, BEIR, CSV/TSV, text, CoNLL, gzip) and chunking into passages."""
