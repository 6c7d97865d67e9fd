"""Client-side fusion of ranked lists: reciprocal-rank fusion and normalised linear combination.

Pure functions, so the arithmetic is tested without a cluster. Every input is a mapping from a component
name (``"bm25"``, ``"dense"``) to a ranking: a list of ``(id, score)`` best first. The output is a list of
:class:`Fused` best first, each carrying every component's raw score and 1-based rank where it appeared.

Conventions:
- Rank is the position in the input list (1-based), whatever the scores say; an id repeated within one
  list keeps its first (best) position.
- Ties in the fused score are broken by the best component rank, then by id, so the order is deterministic.
- ``minmax``: ``(s - min) / (max - min)``; an id missing from a list counts 0 for it, the same as that
  list's worst hit. A list whose scores are all equal (one hit, or a constant) normalises to 1 for each
  hit: being retrieved still beats being missing.
- ``zscore``: ``(s - mean) / std`` (population std); an id missing from a list counts the minimum of
  that list's normalised scores. A constant list normalises to 0 for each hit, so it adds no ordering.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

Ranking = Sequence[tuple[str, float]]
Norm = Literal["minmax", "zscore"]


@dataclass(frozen=True)
class Component:
    """One component list's view of an id: its raw score and 1-based rank there."""

    score: float
    rank: int


@dataclass(frozen=True)
class Fused:
    id: str
    score: float
    components: dict[str, Component] = field(default_factory=dict)


def _positions(rankings: Mapping[str, Ranking]) -> dict[str, dict[str, Component]]:
    """``{id: {component: Component}}``, keeping the first occurrence of an id within a list."""
    seen: dict[str, dict[str, Component]] = {}
    for name, ranking in rankings.items():
        for rank, (doc_id, score) in enumerate(ranking, 1):
            seen.setdefault(doc_id, {}).setdefault(name, Component(float(score), rank))
    return seen


def _weights(rankings: Mapping[str, Ranking], weights: Mapping[str, float] | None) -> dict[str, float]:
    if weights is None:
        return dict.fromkeys(rankings, 1.0)
    if set(weights) != set(rankings):
        raise ValueError(f"weights are for {sorted(weights)} but the rankings are {sorted(rankings)}")
    return {name: float(w) for name, w in weights.items()}


def _ordered(scores: dict[str, float], seen: dict[str, dict[str, Component]]) -> list[Fused]:
    def key(doc_id: str) -> tuple[float, int, str]:
        return (-scores[doc_id], min(c.rank for c in seen[doc_id].values()), doc_id)

    return [Fused(doc_id, scores[doc_id], seen[doc_id]) for doc_id in sorted(scores, key=key)]


def rrf(rankings: Mapping[str, Ranking], k: float = 60, weights: Mapping[str, float] | None = None) -> list[Fused]:
    """Reciprocal-rank fusion: ``sum over lists of weight / (k + rank)``; an absent id adds nothing."""
    if k < 0:
        raise ValueError(f"the RRF constant must be non-negative, got {k}")
    w = _weights(rankings, weights)
    seen = _positions(rankings)
    scores = {doc_id: sum(w[name] / (k + c.rank) for name, c in comps.items()) for doc_id, comps in seen.items()}
    return _ordered(scores, seen)


def _normalise(scores: list[float], norm: Norm) -> tuple[list[float], float]:
    """The normalised scores and the value an id missing from this list gets."""
    if norm == "minmax":
        low, high = min(scores), max(scores)
        if high == low:
            return [1.0] * len(scores), 0.0
        return [(s - low) / (high - low) for s in scores], 0.0
    if norm == "zscore":
        mean = math.fsum(scores) / len(scores)
        std = math.sqrt(math.fsum((s - mean) ** 2 for s in scores) / len(scores))
        normed = [0.0] * len(scores) if std == 0 else [(s - mean) / std for s in scores]
        return normed, min(normed)
    raise ValueError(f"unknown normalisation '{norm}'; use minmax or zscore")


def linear(
    score_lists: Mapping[str, Ranking], weights: Mapping[str, float] | None = None, norm: Norm = "minmax"
) -> list[Fused]:
    """``sum over lists of weight * normalised score``, with missing ids handled as the module says."""
    w = _weights(score_lists, weights)
    seen = _positions(score_lists)
    scores = dict.fromkeys(seen, 0.0)
    for name in score_lists:
        ids = [doc_id for doc_id, comps in seen.items() if name in comps]
        if not ids:
            continue
        normed, missing = _normalise([seen[doc_id][name].score for doc_id in ids], norm)
        value = dict(zip(ids, normed, strict=True))
        for doc_id in scores:
            scores[doc_id] += w[name] * value.get(doc_id, missing)
    return _ordered(scores, seen)
