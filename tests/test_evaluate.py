"""``evaluate`` scores exactly the given queries that have judgements, on the real node: a qrels file that judges
more queries than were given does not dilute the metrics, and a mismatch is a warning (``--strict``: an error)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from elasticsearch import Elasticsearch

from ralm_es.cli.main import cli
from ralm_es.corpora.benchmarks import sample_path
from ralm_es.retrieve.evaluate import evaluate_index, match_queries, sweep
from ralm_es.retrieve.metrics import QrelsError
from ralm_es.retrieve.retriever import RetrievalSettings, Retriever
from ralm_es.store.elastic import ElasticsearchBackend

# Each query is the full text of one sample passage, so BM25 ranks that passage's document first.
DOCS = [json.loads(line) for line in sample_path("sample_corpus.jsonl").read_text().splitlines()[:5]]
QRELS = {f"q{i}": {d["_id"]: 1} for i, d in enumerate(DOCS)}
GIVEN = {"q0": DOCS[0]["text"], "q1": DOCS[1]["text"], "unjudged": "insulin"}


@pytest.fixture(scope="module")
def retriever(es_client: Elasticsearch, sample_index: str) -> Retriever:
    return Retriever(ElasticsearchBackend(es_client, sample_index), None, RetrievalSettings(mode="bm25"))


def test_match_counts_both_sides() -> None:
    match = match_queries(GIVEN, {**QRELS, "zeros": {"d": 0}, "unjudged": {DOCS[0]["_id"]: 0}})
    assert list(match.scored) == ["q0", "q1"]
    # A query whose judgements are all 0 has nothing to score against; qrels queries like it are never missed.
    assert match.unjudged == ["unjudged"] and match.not_given == ["q2", "q3", "q4"]
    assert not match.exact and match_queries({"q0": "x"}, {"q0": {"d": 1}}).exact
    line = match.describe("queries.jsonl", "qrels.tsv")
    assert line == (
        "scoring 2 of the 3 queries in queries.jsonl: 1 of them have no relevant judgement in qrels.tsv, "
        "and 3 queries judged in qrels.tsv are not in queries.jsonl"
    )


def test_metrics_average_over_the_given_queries_only(retriever: Retriever) -> None:
    metrics = evaluate_index(retriever, GIVEN, QRELS, "bm25")
    # Averaged over the 5 judged queries, the 3 not given would count as misses (MRR 0.4).
    assert metrics["queries"] == 2 and metrics["mrr@10"] == pytest.approx(1.0)
    assert metrics["ndcg@10"] == pytest.approx(1.0)
    with pytest.raises(QrelsError, match="none of the 1 given queries has a relevant judgement"):
        evaluate_index(retriever, {"unjudged": "insulin"}, QRELS, "bm25")


def test_sweep_scores_the_same_queries(retriever: Retriever, tiny_encoder: object) -> None:
    hybrid = Retriever(retriever.backend, tiny_encoder, RetrievalSettings(mode="hybrid"))  # type: ignore[arg-type]
    rows = sweep(hybrid, GIVEN, QRELS)
    assert len(rows) == 18 and {row["queries"] for row in rows} == {2}


def write_inputs(folder: Path) -> tuple[Path, Path]:
    queries = folder / "queries.jsonl"
    queries.write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in GIVEN.items()))
    qrels = folder / "qrels.tsv"
    lines = [f"{q}\t{d}\t{r}\n" for q, docs in QRELS.items() for d, r in docs.items()]
    qrels.write_text("query-id\tcorpus-id\tscore\n" + "".join(lines))
    return queries, qrels


def test_cli_warns_on_a_mismatch_and_strict_refuses(es_url: str, sample_index: str, tmp_path: Path) -> None:
    queries, qrels = write_inputs(tmp_path)
    args = ["evaluate", "--index", sample_index, "--mode", "bm25", "--queries", str(queries), "--qrels", str(qrels)]
    runner = CliRunner()
    env = {"RALM_ES_URL": es_url}
    scored = runner.invoke(cli, [*args, "--json"], env=env, catch_exceptions=False)
    assert scored.exit_code == 0, scored.output
    metrics = json.loads(scored.stdout)
    assert metrics["queries"] == 2 and metrics["mrr@10"] == pytest.approx(1.0)
    assert scored.stderr.splitlines() == [
        f"ralm-es: warning: scoring 2 of the 3 queries in {queries}: 1 of them have no relevant judgement in "
        f"{qrels}, and 3 queries judged in {qrels} are not in {queries}"
    ]
    text = runner.invoke(cli, args, env=env, catch_exceptions=False)
    assert text.stdout.splitlines()[0] == "mode bm25 over 2 queries"
    strict = runner.invoke(cli, [*args, "--strict"], env=env, catch_exceptions=False)
    assert strict.exit_code != 0 and strict.stdout == ""
    assert strict.stderr.splitlines() == [
        f"Error: scoring 2 of the 3 queries in {queries}: 1 of them have no "
        f"relevant judgement in {qrels}, and 3 queries judged in {qrels} are not in {queries} (--strict)"
    ]
    # Queries and qrels that match exactly pass --strict without a warning.
    queries.write_text("".join(json.dumps({"_id": f"q{i}", "text": d["text"]}) + "\n" for i, d in enumerate(DOCS)))
    exact = runner.invoke(cli, [*args, "--strict", "--json"], env=env, catch_exceptions=False)
    assert exact.exit_code == 0 and exact.stderr == "" and json.loads(exact.stdout)["queries"] == 5
    queries.write_text(json.dumps({"_id": "unjudged", "text": "insulin"}) + "\n")
    none = runner.invoke(cli, args, env=env, catch_exceptions=False)
    assert none.exit_code != 0
    assert none.stderr.splitlines() == [
        f"Error: none of the 1 queries in {queries} has a relevant judgement in {qrels}"
    ]
