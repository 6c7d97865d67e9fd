"""IR metrics on a toy run whose values are worked out by hand, qrels parsing, and passage-to-document runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ralm_es.retrieve.metrics import QrelsError, evaluate_run, load_qrels, passages_to_docs
from ralm_es.store.base import Hit

QRELS = {"q1": {"d1": 1, "d3": 2}, "q2": {"d2": 1}, "q3": {"d9": 1}, "q4": {"d5": 0}}
RUN = {
    "q1": {"d1": 0.9, "d2": 0.8, "d3": 0.7},
    "q2": {"d1": 1.0, "d2": 0.5},
    "unjudged": {"d1": 1.0},
}


def test_toy_run_matches_hand_computed_values() -> None:
    result = evaluate_run(RUN, QRELS)
    # q1: DCG = 1/log2(2) + 2/log2(4) = 2, ideal = 2/log2(2) + 1/log2(3); q2: DCG = 1/log2(3), ideal = 1;
    # q3 has no results (scores 0); q4 has no relevant document and is not evaluated; "unjudged" is ignored.
    ndcg_q1 = 2 / (2 + 1 / math.log2(3))
    ndcg_q2 = 1 / math.log2(3)
    assert result["queries"] == 3
    assert result["ndcg@10"] == pytest.approx((ndcg_q1 + ndcg_q2) / 3)
    assert result["recall@100"] == pytest.approx(2 / 3)
    # reciprocal ranks: q1 1, q2 1/2, q3 0
    assert result["mrr@10"] == pytest.approx((1 + 1 / 2) / 3)
    # average precision: q1 (1/1 + 2/3) / 2, q2 (1/2) / 1, q3 0
    assert result["map"] == pytest.approx(((1 + 2 / 3) / 2 + 1 / 2) / 3)


def test_a_run_with_nothing_for_the_judged_queries_scores_zero() -> None:
    result = evaluate_run({"unjudged": {"d1": 1.0}}, {"q1": {"d1": 1}})
    assert result == {"ndcg@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0, "map": 0.0, "queries": 1}


def test_qrels_without_any_relevant_document_are_refused() -> None:
    with pytest.raises(QrelsError, match="no query has a relevant document"):
        evaluate_run(RUN, {"q1": {"d1": 0}})


def test_passages_to_docs_keeps_the_best_passage_per_document() -> None:
    hits = [Hit("a#0", "a", 0.4), Hit("b#0", "b", 0.9), Hit("a#1", "a", 0.7)]
    assert passages_to_docs(hits) == {"a": 0.7, "b": 0.9}


def test_load_qrels_reads_beir_tsv_with_header(tmp_path: Path) -> None:
    path = tmp_path / "qrels.tsv"
    path.write_text("query-id\tcorpus-id\tscore\n1\t10\t1\n1\t11\t2\n\n2\t10\t0\n", encoding="utf-8")
    assert load_qrels(path) == {"1": {"10": 1, "11": 2}, "2": {"10": 0}}


def test_load_qrels_names_each_malformed_line(tmp_path: Path) -> None:
    path = tmp_path / "qrels.tsv"
    path.write_text("query-id\tcorpus-id\tscore\n1\t10\t1\n1\t11\n2\t10\thigh\n", encoding="utf-8")
    with pytest.raises(QrelsError) as err:
        load_qrels(path)
    assert f"{path}:3: expected 3 fields" in str(err.value)
    assert f"{path}:4: relevance 'high' is not an integer" in str(err.value)


def test_load_qrels_reads_past_a_bom_and_names_bad_bytes_and_conflicting_judgements(tmp_path: Path) -> None:
    """A BOM joined the first query id (q1 lost its judgement, unsaid); invalid UTF-8 named no line; a second,
    different judgement of the same pair silently replaced the first."""
    path = tmp_path / "qrels.tsv"
    path.write_bytes(b"\xef\xbb\xbfq1\ta\t1\nq2\tz\t1\n")
    assert load_qrels(path) == {"q1": {"a": 1}, "q2": {"z": 1}}
    path.write_bytes(b"q1\ta\t1\nq2\t\xff\t1\nq1\ta\t0\nq1\ta\t1\n")
    with pytest.raises(QrelsError) as refused:
        load_qrels(path)
    assert str(refused.value) == (
        f"{path}:2: invalid UTF-8 (byte 3 of the line); {path}:3: q1 a judged 0 here and 1 at line 1"
    )


def test_load_qrels_names_a_folder_as_one(tmp_path: Path) -> None:
    with pytest.raises(QrelsError, match=rf"^{tmp_path} is a folder; give its qrels file"):
        load_qrels(tmp_path)


def test_load_qrels_refuses_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "qrels.tsv"
    path.write_text("query-id\tcorpus-id\tscore\n", encoding="utf-8")
    with pytest.raises(QrelsError, match="no relevance judgements"):
        load_qrels(path)


def test_scifact_qrels_load_and_a_perfect_run_scores_one(shared_data: Path) -> None:
    path = shared_data / "scifact" / "qrels" / "train.tsv"
    lines = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()[1:] if line.strip()]
    qrels = load_qrels(path)
    assert sum(len(docs) for docs in qrels.values()) == len({(q, d) for q, d, _ in lines})
    perfect = {q: {d: float(r) for d, r in docs.items()} for q, docs in qrels.items()}
    result = evaluate_run(perfect, qrels)
    assert result["queries"] == len({q for q, _, r in lines if int(r) > 0})
    for name in ("ndcg@10", "mrr@10", "map"):
        assert result[name] == pytest.approx(1.0)
