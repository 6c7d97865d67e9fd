"""The training benchmark harness: a benchmark cut short (a session's time limit) resumes its unfinished runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from test_train import conll_files, losses, ner_config

from bench.claims_split import claim_ids, write_queries
from bench.train_bench import fraction_override, run_one, split_claims
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
    # Two judged documents for claim 0, none for claim 19.
    rows = [f"{i}\tdoc{i}\t1" for i in ids[:-1]] + ["0\tdoc-extra\t1"]
    (tmp_path / "qrels.tsv").write_text("\n".join(["query-id\tcorpus-id\tscore", *rows]) + "\n")
    out = tmp_path / "split"
    parts = {name: claim_ids(path) for name, path in split_claims(tmp_path / "claims.jsonl", out, seed=13).items()}
    assert [len(parts[name]) for name in ("train", "dev", "test")] == [12, 4, 4]
    tune = parts["train"] | parts["dev"]
    assert write_queries(tune, tmp_path / "queries.jsonl", tmp_path / "qrels.tsv", out, "tune") == 16
    assert write_queries(parts["test"], tmp_path / "queries.jsonl", tmp_path / "qrels.tsv", out, "test") == 4
    tuned = {json.loads(line)["_id"] for line in (out / "tune.queries.jsonl").read_text().splitlines()}
    assert tuned == tune and not tuned & parts["test"]
    for name, wanted in (("tune", tune), ("test", parts["test"])):
        header, *judged = (out / f"{name}.qrels.tsv").read_text().splitlines()
        assert header == "query-id\tcorpus-id\tscore"
        assert sorted(judged) == sorted(row for row in rows if row.split("\t")[0] in wanted)
