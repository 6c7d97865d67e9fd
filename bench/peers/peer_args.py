"""The command line every peer runner takes, and the passages file they read (written by ``bench.peers.ingest``)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--passages", required=True, help="JSONL of {id, doc_id, title, text}, already chunked")
    parser.add_argument("--model", required=True, help="local sentence-transformers folder")
    parser.add_argument("--url", required=True)
    parser.add_argument("--index", required=True)
    parser.add_argument("--batch", type=int, default=64, help="encoder batch size")
    parser.add_argument("--bulk", type=int, default=500, help="documents per bulk request")
    return parser.parse_args()


def load_passages(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
