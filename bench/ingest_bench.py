"""Ingest on SciFact: the encoder alone (the limit), ralm-es with embeddings, BM25 only (with peak RSS), and the
peers writing the same passages; with ``ingest_runtimes``, the limit and ralm-es again for each other encoder runtime.
Repetitions are interleaved so that drifting load hits every system alike."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import Session, head_lines, load_average, ratios, summarize, timed
from bench.peers.ingest import PEERS, run_peer, write_passages
from bench.peers.venv import ensure_venv
from ralm_es.corpora.benchmarks import scifact_paths
from ralm_es.corpus.types import Passage
from ralm_es.embed import Encoder
from ralm_es.ingest import Ingest, IngestSettings, IngestSummary
from ralm_es.onnx_runtime import Runtime
from ralm_es.store.elastic import ElasticsearchBackend

PEAK_RSS = Path(__file__).with_name("peak_rss.py")
TARGET_OF_LIMIT = 0.9
TARGET_OVER_PEERS = 1.5


def settings_for(session: Session, embed: bool, runtime: Runtime = "torch") -> IngestSettings:
    return IngestSettings(
        model=session.model_path,
        embed=embed,
        encode_batch=session.config.encode_batch,
        runtime=runtime,
        resume=False,
    )


def scifact_corpus(session: Session) -> Path:
    """The SciFact corpus, or its first ``abstracts`` lines, shared by every benchmark of the run."""
    if "scifact_corpus" not in session.shared:
        source = scifact_paths()["corpus"]
        session.shared["scifact_corpus"] = head_lines(
            source, session.config.abstracts, session.workdir / "scifact-slice.jsonl"
        )
    return session.shared["scifact_corpus"]


def ingest_batches(session: Session, corpus: Path) -> list[list[Passage]]:
    """The passage batches an ingest run embeds: same reader, chunker and batch boundaries."""
    backend = ElasticsearchBackend(session.client, session.scratch.name("unused"))
    ingest = Ingest(backend, settings_for(session, embed=True), encoder=session.encoder)
    # _batches is the ingest's own batching; using it keeps the limit on exactly the batches ingest encodes.
    return [batch.passages for batch in ingest._batches([corpus], 0, IngestSummary()) if batch.passages]


def encode_only(session: Session, batches: list[list[Passage]], encoder: Encoder) -> float:
    """Seconds the encoder alone needs for the batches, as ``Ingest._embed`` calls it."""
    seconds = 0.0
    for passages in batches:
        _, elapsed = timed(
            lambda ps=passages: encoder.encode([p.text for p in ps], batch_size=session.config.encode_batch)
        )
        seconds += elapsed
    return seconds


def ralm_ingest(session: Session, corpus: Path, index: str, passages: int, encoder: Encoder) -> float:
    backend = ElasticsearchBackend(session.client, index)
    settings = settings_for(session, embed=True, runtime=encoder.runtime)
    summary, seconds = timed(
        lambda: Ingest(backend, settings, encoder=encoder, checkpoint_dir=session.workdir).run([corpus])
    )
    if backend.count() != passages or summary.indexed != passages:
        raise RuntimeError(f"ralm-es ingest left {backend.count()} passages in {index}, expected {passages}")
    return seconds


def bm25_ingest_subprocess(session: Session, corpus: Path, index: str) -> dict[str, Any]:
    """``ralm-es ingest --no-embed`` as its own process, started by ``peak_rss.py`` so that its peak RSS is its
    own and not this process's (which holds the encoders)."""
    rss_path = session.workdir / "bm25-ingest.rss"
    command = [
        *(sys.executable, str(PEAK_RSS), str(rss_path), sys.executable),
        *("-m", "ralm_es.cli.main", "--es-url", session.config.es_url, "ingest", str(corpus)),
        *("--index", index, "--model", session.model_path, "--no-embed", "--no-resume", "--quiet", "--json"),
    ]
    env = {**os.environ, "RALM_ES_HOME": str(session.workdir)}
    out_path = session.workdir / "bm25-ingest.out"
    with out_path.open("w") as out:
        returncode = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    text = out_path.read_text()
    if returncode != 0:
        raise RuntimeError(f"BM25-only ingest failed (exit {returncode}): {text[-2000:]}")
    summary = json.loads(text.strip().splitlines()[-1])
    return {
        "passages": summary["passages"],
        "seconds": summary["seconds"],
        "max_rss_mib": int(rss_path.read_text()) / 1024,  # Linux reports KiB
    }


def vector_index_type(session: Session, index: str) -> str | None:
    """The ``index_options.type`` of the first ``dense_vector`` field of ``index`` (each system keeps its default)."""
    mappings = session.client.indices.get_mapping(index=index).body
    fields = [props for body in mappings.values() for props in body["mappings"].get("properties", {}).values()]
    while fields:
        field = fields.pop()
        if field.get("type") == "dense_vector":
            return str(field.get("index_options", {}).get("type"))
        fields.extend(field.get("properties", {}).values())
    return None


def run(session: Session) -> dict[str, Any]:
    cfg = session.config
    corpus = scifact_corpus(session)
    batches = ingest_batches(session, corpus)
    passages = [p for batch in batches for p in batch]
    n = len(passages)
    peers: dict[str, dict[str, Any]] = {}
    if cfg.peers:
        passages_file = write_passages(passages, session.workdir / "passages.jsonl")
        for peer in PEERS:
            peers[peer] = {"venv": ensure_venv(peer), "seconds": []}
    # Loaded (and exported, on first use) before the timing starts, like the torch encoder.
    runtimes = {rt: Encoder(cfg.model, max_length=256, runtime=rt) for rt in cfg.ingest_runtimes}
    runtime_s: dict[str, dict[str, list[float]]] = {rt: {"limit": [], "ralm": []} for rt in runtimes}
    limit_s: list[float] = []
    ralm_s: list[float] = []
    bm25: list[dict[str, Any]] = []
    loads = []
    for rep in range(cfg.repeats):
        loads.append(load_average())
        limit_s.append(encode_only(session, batches, session.encoder))
        last = rep == cfg.repeats - 1
        index = session.scratch.name(f"scifact-{rep}")
        ralm_s.append(ralm_ingest(session, corpus, index, n, session.encoder))
        vector_types = {"ralm-es": vector_index_type(session, index)}
        if last:
            session.shared["scifact_index"] = index  # the retrieval benchmarks search the last one
        else:
            session.scratch.drop(index)
        for rt, encoder in runtimes.items():
            runtime_s[rt]["limit"].append(encode_only(session, batches, encoder))
            index = session.scratch.name(f"scifact-{rt}-{rep}")
            runtime_s[rt]["ralm"].append(ralm_ingest(session, corpus, index, n, encoder))
            session.scratch.drop(index)
        index = session.scratch.name(f"bm25-{rep}")
        bm25.append(bm25_ingest_subprocess(session, corpus, index))
        session.scratch.drop(index)
        for peer, record in peers.items():
            index = session.scratch.name(f"{peer}-{rep}")
            result = run_peer(peer, passages_file, session.model_path, cfg.es_url, index, cfg.encode_batch, 500)
            if result["count"] != n:
                raise RuntimeError(f"{peer} left {result['count']} passages in {index}, expected {n}")
            record["seconds"].append(result["seconds"])
            vector_types[peer] = vector_index_type(session, index)
            session.scratch.drop(index)
    limit_rate = [n / s for s in limit_s]
    ralm_rate = [n / s for s in ralm_s]
    result: dict[str, Any] = {
        "corpus": str(scifact_paths()["corpus"]) + (f" (first {cfg.abstracts} lines)" if cfg.abstracts else ""),
        "vector_index_types": vector_types,
        "abstracts": sum(1 for _ in corpus.open(encoding="utf-8")),
        "passages": n,
        "repeats": cfg.repeats,
        "encode_batch": cfg.encode_batch,
        "load_average": loads,
        "limit_passages_per_s": summarize(limit_rate),
        "ralm_passages_per_s": summarize(ralm_rate),
        "ralm_of_limit": ratios(ralm_rate, limit_rate),
        "target_of_limit": TARGET_OF_LIMIT,
        "bm25_passages_per_s": summarize([b["passages"] / b["seconds"] for b in bm25]),
        "bm25_max_rss_mib": summarize([b["max_rss_mib"] for b in bm25]),
        "bm25_rss_apart": True,
        "peers": {},
        "runtimes": {},
    }
    peer_rates = {peer: [n / s for s in record["seconds"]] for peer, record in peers.items()}
    for peer, record in peers.items():
        result["peers"][peer] = {
            "venv": record["venv"],
            "passages_per_s": summarize(peer_rates[peer]),
            "ralm_over_peer": ratios(ralm_rate, peer_rates[peer]),
        }
    for rt, seconds in runtime_s.items():
        limit, ralm = [n / s for s in seconds["limit"]], [n / s for s in seconds["ralm"]]
        result["runtimes"][rt] = {
            "limit_passages_per_s": summarize(limit),
            "ralm_passages_per_s": summarize(ralm),
            "ralm_of_limit": ratios(ralm, limit),
            "ralm_over_peer": {peer: ratios(ralm, rate) for peer, rate in peer_rates.items()},
        }
    if peers:
        fastest = max(result["peers"], key=lambda p: result["peers"][p]["passages_per_s"]["median"])
        result["fastest_peer"] = fastest
        result["target_over_peers"] = TARGET_OVER_PEERS
    return result
