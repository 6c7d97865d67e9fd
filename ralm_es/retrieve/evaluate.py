"""IR evaluation of an index: run queries through the Retriever, score them against qrels, sweep fusion settings."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import product
from typing import Any

from ralm_es.retrieve.metrics import QrelsError, evaluate_run, passages_to_docs, relevant_judgements
from ralm_es.retrieve.retriever import Mode, RetrievalSettings, Retriever

EVAL_DEPTH = 100


def run_queries(
    retriever: Retriever, queries: Mapping[str, str], mode: Mode, k: int = EVAL_DEPTH, batch: int = 256
) -> dict[str, dict[str, float]]:
    """``{query_id: {doc_id: score}}`` with passages folded into their documents (best passage wins)."""
    ids = list(queries)
    run: dict[str, dict[str, float]] = {}
    for start in range(0, len(ids), batch):
        chunk = ids[start : start + batch]
        results = retriever.search_many([queries[q] for q in chunk], k=k, mode=mode, input_ids=chunk)
        for qid, hits in zip(chunk, results, strict=True):
            run[qid] = passages_to_docs(hits)
    return run


@dataclass(frozen=True)
class QueryMatch:
    """How the given queries line up with the qrels: the ones scored, and what is left out on either side."""

    scored: dict[str, str]
    # Given queries without a relevant judgement (nDCG is undefined for them): not scored.
    unjudged: list[str]
    # Queries the qrels judge relevant documents for that were not given: not scored either.
    not_given: list[str]

    @property
    def exact(self) -> bool:
        return not self.unjudged and not self.not_given

    def describe(self, queries: str, qrels: str) -> str:
        """One line naming the two sources: how many given queries are scored and what each side left out."""
        given = len(self.scored) + len(self.unjudged)
        return (
            f"scoring {len(self.scored)} of the {given} queries in {queries}: {len(self.unjudged)} of them have no "
            f"relevant judgement in {qrels}, and {len(self.not_given)} queries judged in {qrels} are not in {queries}"
        )


def match_queries(queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]]) -> QueryMatch:
    relevant = relevant_judgements(qrels)
    return QueryMatch(
        scored={q: text for q, text in queries.items() if q in relevant},
        unjudged=[q for q in queries if q not in relevant],
        not_given=[q for q in relevant if q not in queries],
    )


def evaluate_index(
    retriever: Retriever, queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]], mode: Mode
) -> dict[str, Any]:
    """Metrics averaged over exactly the given queries that have a relevant judgement (``queries``: how many)."""
    scored = match_queries(queries, qrels).scored
    if not scored:
        raise QrelsError(f"none of the {len(queries)} given queries has a relevant judgement in the qrels")
    # Only the scored queries' judgements: evaluate_run averages over every query of the qrels it is given.
    return evaluate_run(run_queries(retriever, scored, mode), {q: qrels[q] for q in scored})


def sweep_settings(base: RetrievalSettings) -> list[RetrievalSettings]:
    """The fusion settings ``--sweep`` compares: RRF constants and weights, linear weights and norms."""
    grid = [
        dataclasses.replace(base, fusion="rrf", rrf_k=rrf_k, dense_weight=w)
        for rrf_k, w in product((10.0, 30.0, 60.0, 100.0), (0.3, 0.5, 0.7))
    ]
    grid += [
        dataclasses.replace(base, fusion="linear", norm=norm, dense_weight=w)
        for norm, w in product(("minmax", "zscore"), (0.3, 0.5, 0.7))
    ]
    return grid


def sweep(
    retriever: Retriever, queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]]
) -> list[dict[str, Any]]:
    """Hybrid metrics for every fusion setting in the grid; rows sorted best nDCG@10 first."""
    rows = []
    for settings in sweep_settings(retriever.settings):
        variant = retriever.with_settings(settings)
        metrics = evaluate_index(variant, queries, qrels, "hybrid")
        rows.append({"settings": settings.fusion_header(), **metrics})
    return sorted(rows, key=lambda r: -r["ndcg@10"])
