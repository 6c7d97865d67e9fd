"""IR evaluation of an index: run queries through the Retriever, score them against qrels, sweep fusion settings."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import product
from typing import Any

from ralm_es.retrieve.metrics import QrelsError, evaluate_run, passages_to_docs, relevant_judgements, split_queries
from ralm_es.retrieve.retriever import Retriever
from ralm_es.retrieve.settings import RANK_FUSIONS, Mode, RetrievalSettings

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
    """The fusion settings ``--sweep`` compares: for every fusion, each value of its own settings with each
    weight of the dense ranking (RRF constants, linear fusion's norms)."""
    return [
        dataclasses.replace(base, fusion=name, dense_weight=w, **dict(zip(strategy.sweep, values, strict=True)))
        for name, strategy in RANK_FUSIONS.items()
        for *values, w in product(*strategy.sweep.values(), (0.3, 0.5, 0.7))
    ]


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


@dataclass(frozen=True)
class TunedFusion:
    """The fusion setting with the best nDCG@10 on the tuning queries, and both it and the starting settings
    measured on dev queries that the choice never saw."""

    chosen: RetrievalSettings
    rows: list[dict[str, Any]]
    tune_queries: int
    dev: dict[str, Any]
    dev_base: dict[str, Any]
    seed: int
    dev_fraction: float

    def record(self) -> dict[str, Any]:
        """What is saved with the index: the settings, and how they were chosen."""
        return {
            "settings": self.chosen.fusion_header(),
            "tuned_on": {
                "tune_queries": self.tune_queries,
                "dev_queries": self.dev["queries"],
                "seed": self.seed,
                "dev_fraction": self.dev_fraction,
                "dev_ndcg@10": self.dev["ndcg@10"],
                "dev_ndcg@10_before": self.dev_base["ndcg@10"],
            },
        }


def tune_fusion(
    retriever: Retriever,
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    dev_fraction: float,
    seed: int,
) -> TunedFusion:
    """Sweep the fusion grid on a seeded tuning part of the judged queries; measure the pick on the rest."""
    scored = match_queries(queries, qrels).scored
    tune_ids, dev_ids = split_queries(scored, dev_fraction, seed)
    tune, dev = {q: scored[q] for q in tune_ids}, {q: scored[q] for q in dev_ids}
    rows = sweep(retriever, tune, qrels)
    by_header = {str(s.fusion_header()): s for s in sweep_settings(retriever.settings)}
    chosen = by_header[str(rows[0]["settings"])]
    return TunedFusion(
        chosen=chosen,
        rows=rows,
        tune_queries=len(tune),
        dev=evaluate_index(retriever.with_settings(chosen), dev, qrels, "hybrid"),
        dev_base=evaluate_index(
            retriever.with_settings(dataclasses.replace(retriever.settings, mode="hybrid")), dev, qrels, "hybrid"
        ),
        seed=seed,
        dev_fraction=dev_fraction,
    )
