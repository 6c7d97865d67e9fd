"""Fusion arithmetic on hand-made rankings (every expected value worked out by hand below), and cross-checked
against ranx's fusion on random runs."""

from __future__ import annotations

import math
import random

import pytest
from ranx import Run, fuse

from ralm_es.retrieve.fusion import Component, linear, rrf


def ids(fused: list) -> list[str]:
    return [f.id for f in fused]


def test_rrf_sums_reciprocal_ranks_and_keeps_components() -> None:
    fused = rrf({"bm25": [("a", 12.0), ("b", 9.0), ("c", 1.0)], "dense": [("c", 0.9), ("a", 0.8), ("d", 0.7)]})
    # a: 1/61 + 1/62, c: 1/63 + 1/61, b: 1/62, d: 1/63
    assert ids(fused) == ["a", "c", "b", "d"]
    by_id = {f.id: f for f in fused}
    assert by_id["a"].score == pytest.approx(1 / 61 + 1 / 62)
    assert by_id["c"].score == pytest.approx(1 / 61 + 1 / 63)
    assert by_id["b"].score == pytest.approx(1 / 62)
    assert by_id["c"].components == {"bm25": Component(1.0, 3), "dense": Component(0.9, 1)}
    assert by_id["d"].components == {"dense": Component(0.7, 3)}


def test_rrf_weights_and_constant() -> None:
    fused = rrf(
        {"bm25": [("a", 1.0), ("b", 0.5)], "dense": [("b", 1.0), ("a", 0.5)]}, k=10, weights={"bm25": 2, "dense": 1}
    )
    # a: 2/11 + 1/12, b: 2/12 + 1/11
    assert ids(fused) == ["a", "b"]
    assert fused[0].score == pytest.approx(2 / 11 + 1 / 12)
    assert fused[1].score == pytest.approx(2 / 12 + 1 / 11)


def test_rrf_ties_break_by_best_rank_then_id() -> None:
    fused = rrf(
        {"one": [("b", 0), ("zz", 0), ("c", 0), ("y", 0)], "two": [("a", 0), ("d", 0), ("e", 0), ("y", 0)]}, k=0
    )
    # k=0: a and b score 1 (both rank 1: id order); zz scores 1/2 at rank 2, y scores 1/4 + 1/4 at best rank 4.
    assert ids(fused)[:4] == ["a", "b", "d", "zz"]
    assert fused[3].score == fused[4].score == 0.5
    assert ids(fused)[4] == "y"


def test_rrf_keeps_the_first_position_of_a_repeated_id() -> None:
    fused = rrf({"bm25": [("a", 3.0), ("b", 2.0), ("a", 1.0)]})
    assert fused[0].components["bm25"] == Component(3.0, 1)
    assert fused[0].score == pytest.approx(1 / 61)


def test_weights_must_name_the_same_components() -> None:
    with pytest.raises(ValueError, match="dense"):
        rrf({"bm25": [("a", 1.0)], "dense": [("a", 1.0)]}, weights={"bm25": 1.0})


def test_linear_minmax_counts_missing_ids_as_zero() -> None:
    fused = linear(
        {"bm25": [("a", 10.0), ("b", 6.0), ("c", 2.0)], "dense": [("c", 0.9), ("a", 0.5)]},
        weights={"bm25": 0.3, "dense": 0.7},
    )
    # bm25 normalised: a=1, b=0.5, c=0; dense: c=1, a=0, b missing=0.
    assert ids(fused) == ["c", "a", "b"]
    assert [f.score for f in fused] == pytest.approx([0.7, 0.3, 0.15])
    assert fused[2].components == {"bm25": Component(6.0, 2)}


def test_linear_zscore_counts_missing_ids_as_the_list_minimum() -> None:
    fused = linear({"bm25": [("a", 3.0), ("b", 2.0), ("c", 1.0)], "dense": [("b", 4.0), ("a", 2.0)]}, norm="zscore")
    # bm25: mean 2, std sqrt(2/3): a=+sqrt(1.5), b=0, c=-sqrt(1.5). dense: mean 3, std 1: b=1, a=-1, c missing=-1.
    z = math.sqrt(1.5)
    assert ids(fused) == ["b", "a", "c"]
    assert [f.score for f in fused] == pytest.approx([1.0, z - 1, -z - 1])


def test_linear_minmax_constant_and_single_lists_do_not_divide_by_zero() -> None:
    fused = linear({"bm25": [("a", 5.0)], "dense": [("b", 0.3), ("a", 0.3)]})
    # Each list is constant: every hit normalises to 1, a missing id to 0.
    assert [(f.id, f.score) for f in fused] == [("a", 2.0), ("b", 1.0)]


def test_linear_zscore_constant_and_single_lists_do_not_divide_by_zero() -> None:
    fused = linear({"bm25": [("a", 2.0), ("b", 1.0)], "dense": [("b", 0.3), ("a", 0.3)]}, norm="zscore")
    assert [(f.id, f.score) for f in fused] == [("a", 1.0), ("b", -1.0)]
    single = linear({"dense": [("x", 7.0)]}, norm="zscore")
    assert [(f.id, f.score) for f in single] == [("x", 0.0)]


def test_linear_with_an_empty_list_uses_the_other() -> None:
    fused = linear({"bm25": [], "dense": [("a", 0.9), ("b", 0.1)]}, weights={"bm25": 0.5, "dense": 0.5})
    assert [(f.id, f.score) for f in fused] == [("a", 0.5), ("b", 0.0)]


def test_linear_rejects_an_unknown_normalisation() -> None:
    with pytest.raises(ValueError, match="minmax or zscore"):
        linear({"bm25": [("a", 1.0)]}, norm="softmax")  # type: ignore[arg-type]


def random_runs(seed: int) -> tuple[dict[str, list[tuple[str, float]]], dict[str, float]]:
    """Two ranked lists over overlapping ids with distinct scores (so ranks are unambiguous), and weights."""
    rng = random.Random(seed)
    pool = [f"d{i}" for i in range(30)]
    lists = {}
    for name in ("bm25", "dense"):
        # Two hits at least: ralm-es scores a lone hit 1 by design (retrieved beats missing), ranx 0.
        chosen = rng.sample(pool, rng.randint(2, 20))
        scores = rng.sample(range(1, 10_000), len(chosen))
        lists[name] = sorted(zip(chosen, (s / 100 for s in scores), strict=True), key=lambda p: -p[1])
    return lists, {"bm25": rng.uniform(0.1, 1), "dense": rng.uniform(0.1, 1)}


def ranx_scores(lists: dict[str, list[tuple[str, float]]], method: str, **params: object) -> dict[str, float]:
    runs = [Run({"q": dict(ranking)}, name=name) for name, ranking in lists.items()]
    norm = "min-max" if method == "wsum" else None
    return dict(fuse(runs=runs, norm=norm, method=method, params=params).to_dict()["q"])


@pytest.mark.parametrize("seed", range(10))
def test_rrf_agrees_with_ranx_on_random_runs(seed: int) -> None:
    lists, _ = random_runs(seed)
    expected = ranx_scores(lists, "rrf", k=60)
    fused = rrf(lists, k=60)
    assert {f.id: f.score for f in fused} == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(10))
def test_linear_minmax_agrees_with_ranx_weighted_sum(seed: int) -> None:
    lists, weights = random_runs(seed)
    expected = ranx_scores(lists, "wsum", weights=[weights["bm25"], weights["dense"]])
    fused = linear(lists, weights=weights)
    assert {f.id: f.score for f in fused} == pytest.approx(expected)
