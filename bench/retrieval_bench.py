"""Retrieval on SciFact train (quality, latency split, search_many vs a loop) and CoNLL-2003 sentences as queries."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.common import (
    DelayProxy,
    Session,
    head_conll,
    load_average,
    percentiles,
    ratios,
    read_jsonl,
    summarize,
    timed,
)
from bench.ingest_bench import scifact_corpus, settings_for
from ralm_es.config import ConnectionSettings
from ralm_es.corpora.benchmarks import conll_paths, scifact_paths
from ralm_es.corpus.readers import ReadOptions, read_corpus
from ralm_es.corpus.types import Record
from ralm_es.es.client import connect
from ralm_es.ingest import Ingest
from ralm_es.retrieve.evaluate import evaluate_index, sweep, sweep_settings
from ralm_es.retrieve.metrics import load_qrels
from ralm_es.retrieve.retriever import RetrievalSettings, Retriever
from ralm_es.store.elastic import ElasticsearchBackend

CONLL_TRAIN_SENTENCES = 14_041
CONLL_TARGET_S = 120.0
MANY_TARGET = 5.0
REST_OF_TOOK_TARGET = 0.2
RETRIEVE_BATCH = 256  # inputs per search_many call, as `ralm-es retrieve` sends them
WARMUP = 5
# The round trip the proxy adds for "a cluster some way off": a cloud deployment from another network is further.
DISTANT_S = 0.005


class TookRecorder:
    """The Elasticsearch client with the ``took`` of each ``_msearch`` component remembered."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.took_ms: list[int] = []

    def msearch(self, **kwargs: Any) -> Any:
        response = self._client.msearch(**kwargs)
        self.took_ms.extend(int(r.get("took", 0)) for r in response["responses"])
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class TimedEncoder:
    """The encoder with the time spent in ``encode`` added up."""

    def __init__(self, encoder: Any) -> None:
        self._encoder = encoder
        self.seconds = 0.0

    def encode(self, *args: Any, **kwargs: Any) -> np.ndarray:
        vectors, elapsed = timed(lambda: self._encoder.encode(*args, **kwargs))
        self.seconds += elapsed
        return vectors

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)


def scifact_index(session: Session) -> str:
    """The embedded SciFact index the ingest benchmark left, or a new one when it did not run."""
    if "scifact_index" not in session.shared:
        index = session.scratch.name("scifact")
        backend = ElasticsearchBackend(session.client, index)
        Ingest(backend, settings_for(session, embed=True), encoder=session.encoder, checkpoint_dir=session.workdir).run(
            [scifact_corpus(session)]
        )
        session.shared["scifact_index"] = index
    return session.shared["scifact_index"]


def train_queries(session: Session) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """Train queries with judgements; on a corpus slice only those whose relevant abstracts are all in it."""
    paths = scifact_paths()
    qrels = load_qrels(paths["qrels_train"])
    queries = {q["_id"]: q["text"] for q in read_jsonl(paths["queries_train"]) if q["_id"] in qrels}
    if session.config.abstracts is not None:
        docs = {d["_id"] for d in read_jsonl(scifact_corpus(session))}
        queries = {q: t for q, t in queries.items() if set(qrels[q]) <= docs}
    if session.config.queries is not None:
        queries = dict(list(queries.items())[: session.config.queries])
    return queries, {q: qrels[q] for q in queries}


def quality(retriever: Retriever, queries: dict[str, str], qrels: dict[str, dict[str, int]]) -> dict[str, Any]:
    base = retriever.settings
    rows = {
        "bm25": evaluate_index(retriever, queries, qrels, "bm25"),
        "dense": evaluate_index(retriever, queries, qrels, "dense"),
        "hybrid_rrf": evaluate_index(
            retriever.with_settings(dataclasses.replace(base, fusion="rrf")), queries, qrels, "hybrid"
        ),
        "hybrid_linear": evaluate_index(
            retriever.with_settings(dataclasses.replace(base, fusion="linear")), queries, qrels, "hybrid"
        ),
    }
    swept = sweep(retriever, queries, qrels)
    return {
        "queries": len(queries),
        "modes": rows,
        "sweep_settings": len(sweep_settings(base)),
        "sweep_best": swept[0],
        "defaults": {
            "rrf": dataclasses.replace(base, fusion="rrf").fusion_header(),
            "linear": dataclasses.replace(base, fusion="linear").fusion_header(),
        },
    }


def latency(session: Session, index: str, queries: Sequence[str]) -> dict[str, Any]:
    """Single hybrid searches split into query encoding, Elasticsearch's ``took`` (both components) and the rest."""
    recorder = TookRecorder(session.client)
    encoder = TimedEncoder(session.encoder)
    backend = ElasticsearchBackend(recorder, index)  # type: ignore[arg-type]
    # No query-vector cache, so every search pays for its encoding.
    retriever = Retriever(backend, encoder, RetrievalSettings(query_cache_size=0))  # type: ignore[arg-type]
    for query in queries[:WARMUP]:
        retriever.search(query)
    parts: dict[str, list[float]] = {"total": [], "encode": [], "took": [], "rest": []}
    for query in queries:
        recorder.took_ms.clear()
        encoder.seconds = 0.0
        _, total = timed(lambda q=query: retriever.search(q))
        took = sum(recorder.took_ms) / 1000
        parts["total"].append(total)
        parts["encode"].append(encoder.seconds)
        parts["took"].append(took)
        parts["rest"].append(total - encoder.seconds - took)
    result: dict[str, Any] = {name: {**percentiles(values), "samples": values} for name, values in parts.items()}
    result["queries"] = len(queries)
    result["rest_of_took_p50"] = result["rest"]["p50"] / max(result["took"]["p50"], 1e-9)
    result["target_rest_of_took"] = REST_OF_TOOK_TARGET
    return result


def texts_latency(session: Session, index: str, queries: Sequence[str]) -> dict[str, Any]:
    """Single hybrid searches with the passages' texts read after fusion (``fetch``) and with the rankings
    (``inline``), alternating query by query, their vectors computed beforehand: on the node, and through a proxy
    that holds every request ``DISTANT_S`` (a cluster that far away)."""
    result: dict[str, Any] = {"queries": len(queries), "delay_ms": DISTANT_S * 1000}
    with DelayProxy(session.config.es_url, DISTANT_S) as distant_url:
        for place, url in (("near", session.config.es_url), ("distant", distant_url)):
            client = connect(ConnectionSettings(hosts=[url]))
            base = Retriever(ElasticsearchBackend(client, index), session.encoder, RetrievalSettings())
            base.encode(queries)
            retrievers = {texts: base.with_settings(RetrievalSettings(texts=texts)) for texts in ("fetch", "inline")}
            seconds: dict[str, list[float]] = {texts: [] for texts in retrievers}
            for retriever in retrievers.values():
                retriever.search_many(queries[:WARMUP])
            for query in queries:
                for texts, retriever in retrievers.items():
                    seconds[texts].append(timed(lambda r=retriever, q=query: r.search(q))[1])
            result[place] = {texts: {**percentiles(values), "samples": values} for texts, values in seconds.items()}
            client.close()
    return result


def many_queries(n: int) -> list[str]:
    """``n`` distinct texts: the train claims, then abstract titles of the corpus."""
    texts = list(dict.fromkeys(q["text"] for q in read_jsonl(scifact_paths()["queries_train"])))
    if len(texts) < n:
        titles = (d["title"] for d in read_jsonl(scifact_paths()["corpus"]) if d["title"].strip())
        texts = list(dict.fromkeys([*texts, *titles]))
    return texts[:n]


def many_vs_loop(session: Session, index: str, queries: list[str]) -> dict[str, Any]:
    retriever = Retriever(
        ElasticsearchBackend(session.client, index), session.encoder, RetrievalSettings(query_cache_size=0)
    )
    retriever.search_many(queries[:WARMUP])
    loop_s, many_s = [], []
    for _ in range(session.config.repeats):
        loop_s.append(timed(lambda: [retriever.search(q) for q in queries])[1])
        many_s.append(timed(lambda: retriever.search_many(queries))[1])
    n = len(queries)
    loop_qps, many_qps = [n / s for s in loop_s], [n / s for s in many_s]
    return {
        "queries": n,
        "loop_queries_per_s": summarize(loop_qps),
        "many_queries_per_s": summarize(many_qps),
        "many_over_loop": ratios(many_qps, loop_qps),
        "target": MANY_TARGET,
    }


def conll(session: Session) -> dict[str, Any]:
    """Every (or the first N) CoNLL-2003 training sentence as a hybrid k=8 query against an index of them all."""
    cfg = session.config
    path = head_conll(conll_paths()["train"], cfg.conll_sentences, session.workdir / "conll-train-slice.txt")
    index = session.scratch.name("conll")
    settings = dataclasses.replace(settings_for(session, embed=True), read=ReadOptions(format="conll"))
    summary = Ingest(
        ElasticsearchBackend(session.client, index), settings, encoder=session.encoder, checkpoint_dir=session.workdir
    ).run([path])
    records = [r for r in read_corpus(path, ReadOptions(format="conll")) if isinstance(r, Record)]
    retriever = Retriever(
        ElasticsearchBackend(session.client, index),
        session.encoder,
        RetrievalSettings(k=8, exclude="doc+content", query_cache_size=0),
    )

    def retrieve_all() -> int:
        answered = 0
        for start in range(0, len(records), RETRIEVE_BATCH):
            chunk = records[start : start + RETRIEVE_BATCH]
            hits = retriever.search_many([r.text for r in chunk], input_ids=[r.id for r in chunk])
            answered += sum(1 for h in hits if h)
        return answered

    seconds, answered = [], 0
    for _ in range(cfg.conll_repeats):
        answered, elapsed = timed(retrieve_all)
        seconds.append(elapsed)
    session.scratch.drop(index)
    return {
        "sentences": len(records),
        "full_train_set": len(records) == CONLL_TRAIN_SENTENCES,
        "answered": answered,
        "index_passages_per_s": summary.passages / summary.seconds,
        "seconds": summarize(seconds),
        "target_s": CONLL_TARGET_S,
    }


def run(session: Session) -> dict[str, Any]:
    index = scifact_index(session)
    queries, qrels = train_queries(session)
    started = time.perf_counter()
    retriever = Retriever(ElasticsearchBackend(session.client, index), session.encoder, RetrievalSettings())
    result: dict[str, Any] = {"load_average": [load_average()], "quality": quality(retriever, queries, qrels)}
    # Latency needs no judgements, so it takes train claims whether or not their abstracts are in a slice.
    result["latency"] = latency(session, index, many_queries(session.config.latency_queries))
    result["load_average"].append(load_average())
    result["texts"] = texts_latency(session, index, many_queries(session.config.latency_queries))
    result["load_average"].append(load_average())
    result["many"] = many_vs_loop(session, index, many_queries(session.config.many_queries))
    result["load_average"].append(load_average())
    result["conll"] = conll(session)
    result["load_average"].append(load_average())
    result["seconds"] = time.perf_counter() - started
    return result
