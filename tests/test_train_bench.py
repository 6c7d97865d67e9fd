"""The training benchmark harness: a benchmark cut short (a session's time limit) resumes its unfinished runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from test_train import conll_files, losses, ner_config

from bench.claims_split import claim_ids, evidence_qrels, write_queries
from bench.conll_pairs import sentences, story_pairs, write_pairs
from bench.train_bench import fraction_override, run_one, split_claims
from ralm_es.retrieve.tuning import load_data
from ralm_es.train.config import load_config
from ralm_es.train.loop import train


def test_a_run_cut_short_resumes_and_a_changed_configuration_starts_over(tmp_path: Path, tiny_model_dir: Path) -> None:
    base, work = ner_config(tmp_path, conll_files(tmp_path, 32, 8), tiny_model_dir), tmp_path / "work"
    whole = run_one(base, "whole", work, [])
    assert whole["resumed_at_step"] is None

    # The same configuration, stopped after 4 steps as a killed benchmark leaves it.
    train(load_config(base, [f"run.out={work / 'cut'}", "run.progress=false"]), stop_after=4)
    resumed = run_one(base, "cut", work, [])
    assert resumed["resumed_at_step"] == 4 and resumed["steps"] == whole["steps"]
    assert resumed["dev_f1"] == pytest.approx(whole["dev_f1"])
    assert losses(work / "cut") == pytest.approx(losses(work / "whole"), abs=1e-6)

    # Finished but never recorded: it goes straight to its evaluation.
    again = run_one(base, "whole", work, [])
    assert again["resumed_at_step"] == whole["steps"] and again["dev_f1"] == pytest.approx(whole["dev_f1"])

    changed = run_one(base, "cut", work, ["train.lr=0.002"])
    assert changed["resumed_at_step"] is None and changed["steps"] == whole["steps"]
    assert losses(work / "cut")[0] == pytest.approx(losses(work / "whole")[0], abs=1e-6)
    assert losses(work / "cut")[1:] != pytest.approx(losses(work / "whole")[1:], abs=1e-6)


def test_a_fraction_override_names_its_fraction() -> None:
    assert fraction_override("1:train.eval_every=300") == (1.0, "train.eval_every=300")
    for bad in ("train.eval_every=300", "1:train.eval_every", "all:train.eval_every=300"):
        with pytest.raises(argparse.ArgumentTypeError, match=f"'{bad}' is not FRACTION:KEY=VALUE"):
            fraction_override(bad)


def test_the_claims_split_keeps_its_test_claims_out_of_the_tuning_queries(tmp_path: Path) -> None:
    ids = [str(i) for i in range(20)]
    (tmp_path / "claims.jsonl").write_text("".join(json.dumps({"id": i, "claim": f"claim {i}"}) + "\n" for i in ids))
    (tmp_path / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": f"claim {i}"}) + "\n" for i in ids))
    # Two judged documents for claim 0, none for claim 19 (a training claim of this split).
    rows = [f"{i}\tdoc{i}\t1" for i in ids[:-1]] + ["0\tdoc-extra\t1"]
    (tmp_path / "qrels.tsv").write_text("\n".join(["query-id\tcorpus-id\tscore", *rows]) + "\n")
    out = tmp_path / "split"
    parts = {name: claim_ids(path) for name, path in split_claims(tmp_path / "claims.jsonl", out, seed=13).items()}
    assert [len(parts[name]) for name in ("train", "dev", "test")] == [12, 4, 4]
    tune = parts["train"] | parts["dev"]
    assert "19" in tune
    assert write_queries(tune, tmp_path / "queries.jsonl", tmp_path / "qrels.tsv", out, "tune") == 15
    assert write_queries(parts["test"], tmp_path / "queries.jsonl", tmp_path / "qrels.tsv", out, "test") == 4
    tuned = {json.loads(line)["_id"] for line in (out / "tune.queries.jsonl").read_text().splitlines()}
    assert tuned == tune - {"19"} and not tuned & parts["test"]
    for name, wanted in (("tune", tune), ("test", parts["test"])):
        header, *judged = (out / f"{name}.qrels.tsv").read_text().splitlines()
        assert header == "query-id\tcorpus-id\tscore"
        assert sorted(judged) == sorted(row for row in rows if row.split("\t")[0] in wanted)


def test_evidence_qrels_judge_the_evidence_abstracts_and_leave_a_claim_without_evidence_out(tmp_path: Path) -> None:
    claims = [
        {"id": 1, "claim": "a", "evidence": {"d1": "SUPPORT", "d2": "SUPPORT"}, "cited_doc_ids": ["d1", "d2", "d3"]},
        {"id": 2, "claim": "b", "evidence": {}, "cited_doc_ids": ["d4"]},
        {"id": 3, "claim": "c", "evidence": {"d5": "CONTRADICT"}, "cited_doc_ids": ["d5", "d6"]},
    ]
    # Blank lines, as an edited file may hold, are passed over.
    (tmp_path / "claims.jsonl").write_text("\n\n".join(json.dumps(claim) for claim in claims) + "\n")
    (tmp_path / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": str(c["id"]), "text": c["claim"]}) + "\n" for c in claims)
    )
    qrels = evidence_qrels(tmp_path / "claims.jsonl", tmp_path)
    assert qrels.read_text().splitlines() == ["query-id\tcorpus-id\tscore", "1\td1\t1", "1\td2\t1", "3\td5\t1"]
    assert write_queries({"1", "2"}, tmp_path / "queries.jsonl", qrels, tmp_path, "tune") == 1
    assert (tmp_path / "tune.qrels.tsv").read_text().splitlines()[1:] == ["1\td1\t1", "1\td2\t1"]
    assert [json.loads(line)["_id"] for line in (tmp_path / "tune.queries.jsonl").read_text().splitlines()] == ["1"]


def test_conll_story_pairs_judge_a_query_s_own_document_and_keep_queries_out_of_the_corpus(tmp_path: Path) -> None:
    def doc(*lines: str) -> str:
        return "-DOCSTART- -X- -X- O\n\n" + "".join(
            "".join(f"{w} NNP B-NP B-PER\n" for w in line.split()) + "\n" for line in lines
        )

    train = tmp_path / "train.txt"
    train.write_text(
        doc("Alpha met Bravo in Paris", "Charlie went", "Delta stayed", "Echo spoke to Foxtrot", "Kilo left")
        + doc("Golf was alone here")
        + doc("Hotel beat India today", "Juliet lost", "Lima won again today")
    )
    records = sentences(train)
    assert len(records) == 9
    # Every sentence of three words or more is drawn: two-word sentences never are, so they are the corpus.
    queries, qrels, corpus = story_pairs(records, queries=10, window=2, min_words=3, seed=13)
    assert [r.id for r in corpus] == ["train-d0-s1", "train-d0-s2", "train-d0-s4", "train-d2-s1"]
    assert qrels == {
        "train-d0-s0": ["train-d0-s1", "train-d0-s2"],  # s4 is 4 sentences away
        "train-d0-s3": ["train-d0-s1", "train-d0-s2", "train-d0-s4"],
        "train-d2-s0": ["train-d2-s1"],
        "train-d2-s2": ["train-d2-s1"],
    }
    # The one-sentence document's sentence has no story to pair with: no query, and not in the corpus either.
    assert [q.id for q in queries] == list(qrels)
    assert all("B-PER" not in r.text and "NNP" not in r.text for r in records)
    assert story_pairs(records, queries=10, window=1, min_words=3, seed=13)[1]["train-d0-s3"] == [
        "train-d0-s2",
        "train-d0-s4",
    ]
    # A smaller sample is seeded: the same draw again, and a subset of the eligible sentences.
    few = story_pairs(records, queries=3, window=2, min_words=3, seed=13)[1]
    assert few == story_pairs(records, queries=3, window=2, min_words=3, seed=13)[1]
    assert set(few) <= set(qrels) | {"train-d1-s0"}
    # The files load as tuning data (every judged document is in the corpus).
    assert write_pairs(tmp_path / "pairs", queries, qrels, corpus) == 7
    out = tmp_path / "pairs"
    data = load_data(out / "queries.jsonl", out / "qrels.tsv", out / "corpus.jsonl")
    assert set(data.queries) == set(qrels) and set(data.docs) == {r.id for r in corpus}
