"""Run a peer's ingest runner in its own virtual environment on the same passages, node and model."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from bench.peers.venv import HERE, python_of
from ralm_es.corpus.types import Passage

PEERS = ("haystack", "langchain")


def write_passages(passages: list[Passage], path: Path) -> Path:
    """The exact passages ralm-es indexes (same chunking), for the peers to embed and write."""
    with path.open("w", encoding="utf-8") as fh:
        for p in passages:
            fh.write(json.dumps({"id": p.id, "doc_id": p.doc_id, "title": p.title, "text": p.text}) + "\n")
    return path


def run_peer(peer: str, passages: Path, model: str, url: str, index: str, batch: int, bulk: int) -> dict[str, Any]:
    """``{"passages", "seconds", "count"}`` from the peer's runner; ``seconds`` covers embedding and writing only."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HAYSTACK_TELEMETRY_ENABLED": "False",
    }
    command = [
        str(python_of(peer)),
        str(HERE / f"{peer}_ingest.py"),
        *("--passages", str(passages), "--model", model, "--url", url, "--index", index),
        *("--batch", str(batch), "--bulk", str(bulk)),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=HERE)
    if done.returncode != 0:
        raise RuntimeError(f"{peer} ingest failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
