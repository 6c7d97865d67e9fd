"""IR evaluation of a retrieval run against relevance judgements, computed by ranx.

nDCG uses linear gain (ranx ``ndcg``, the trec_eval/BEIR definition). Every query with at least one
relevant (score > 0) judgement is evaluated: one the run has no results for scores 0 on each metric.
Queries with no relevant document (nDCG is undefined for them) and run queries without judgements are
ignored. Retrieval returns passages while judgements are per document, so a run is built from hits with
:func:`passages_to_docs` (a document scores its best passage).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from ralm_es.corpus.lines import iter_lines
from ralm_es.errors import RalmError

METRICS = ("ndcg@10", "recall@100", "mrr@10", "map")
MAX_REPORTED = 10
# A qrels line is three short fields; a longer one is not a judgement (and is not held in memory whole).
MAX_QRELS_LINE = 64 * 1024


class QrelsError(RalmError):
    """A qrels file that cannot be read, with the offending ``file:line`` entries."""


def load_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """``{query_id: {doc_id: relevance}}`` from a BEIR qrels TSV (``query-id corpus-id score``, header optional)."""
    path = Path(path)
    if path.is_dir():
        raise QrelsError(f"{path} is a folder; give its qrels file (a BEIR folder's qrels/test.tsv, say)")
    if not path.is_file():
        raise QrelsError(f"{path}: no such file")
    qrels: dict[str, dict[str, int]] = {}
    first_at: dict[tuple[str, str], int] = {}
    problems: list[str] = []
    # Lines as the corpus readers read them: a BOM dropped (it would join the first query id), invalid UTF-8 named.
    for line in iter_lines(path, MAX_QRELS_LINE):
        where = f"{path}:{line.number}"
        if line.problem is not None:
            problems.append(f"{where}: {line.problem}")
            continue
        fields = line.text.split()
        if not fields:
            continue
        if len(fields) != 3:
            problems.append(f"{where}: expected 3 fields (query-id corpus-id score), got {len(fields)}")
            continue
        qid, doc_id, score = fields
        try:
            relevance = int(score)
        except ValueError:
            if line.number != 1:  # the first line may be the header
                problems.append(f"{where}: relevance '{score}' is not an integer")
            continue
        judged = qrels.setdefault(qid, {})
        if doc_id in judged and judged[doc_id] != relevance:
            # The later one silently won: which is meant cannot be told.
            first = first_at[(qid, doc_id)]
            problems.append(f"{where}: {qid} {doc_id} judged {relevance} here and {judged[doc_id]} at line {first}")
            continue
        first_at.setdefault((qid, doc_id), line.number)
        judged[doc_id] = relevance
    if problems:
        more = f" (and {len(problems) - MAX_REPORTED} more)" if len(problems) > MAX_REPORTED else ""
        raise QrelsError("; ".join(problems[:MAX_REPORTED]) + more)
    if not qrels:
        raise QrelsError(f"{path}: no relevance judgements")
    return qrels


class ScoredPassage(Protocol):
    """A hit of a passage of a document: a store's ``Hit``, a live search's ``RetrievedHit``."""

    doc_id: str
    score: float


def passages_to_docs(hits: Iterable[ScoredPassage]) -> dict[str, float]:
    """``{doc_id: best passage score}`` from the hits of passages."""
    docs: dict[str, float] = {}
    for hit in hits:
        doc_id, score = str(hit.doc_id), float(hit.score)
        if doc_id not in docs or score > docs[doc_id]:
            docs[doc_id] = score
    return docs


def relevant_judgements(qrels: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    """The queries of ``qrels`` with at least one relevant document: the ones a run can be scored on."""
    return {
        str(q): {str(d): int(r) for d, r in docs.items()}
        for q, docs in qrels.items()
        if max(docs.values(), default=0) > 0
    }


def evaluate_run(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]]) -> dict[str, Any]:
    """``{"ndcg@10", "recall@100", "mrr@10", "map", "queries"}`` averaged over every relevant query of ``qrels``.

    The qrels set the query set, so a caller scoring some queries passes the qrels of those queries only.
    """
    from ranx import Qrels, Run, evaluate  # numba compiles on first import: keep it off the CLI's start-up path

    relevant = relevant_judgements(qrels)
    if not relevant:
        raise QrelsError("no query has a relevant document to evaluate against")
    judged = {
        str(q): {str(d): float(s) for d, s in docs.items()} for q, docs in run.items() if docs and str(q) in relevant
    }
    if not judged:  # ranx cannot build an empty run; every query scores 0
        return {**dict.fromkeys(METRICS, 0.0), "queries": len(relevant)}
    # make_comparable gives judged queries missing from the run an empty result, which scores 0.
    scores = evaluate(Qrels(relevant), Run(judged), list(METRICS), make_comparable=True)
    return {**{name: float(scores[name]) for name in METRICS}, "queries": len(relevant)}


def split_queries(ids: Iterable[str], dev_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """A seeded ``(train, dev)`` split of query ids, each side sorted: the same seed and ids (in any order) give the
    same split, and both sides keep at least one query. The fusion sweep and the retriever tuner share it."""
    if not 0 < dev_fraction < 1:
        raise ValueError(f"the dev fraction must be between 0 and 1, got {dev_fraction}")
    order = sorted(ids)
    if len(order) < 2:
        raise QrelsError(f"{len(order)} judged queries cannot be split into a tuning and a dev part")
    random.Random(seed).shuffle(order)
    n_dev = min(len(order) - 1, max(1, round(len(order) * dev_fraction)))
    return sorted(order[n_dev:]), sorted(order[:n_dev])
