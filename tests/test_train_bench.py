"""The training benchmark harness: a benchmark cut short (a session's time limit) resumes its unfinished runs."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from test_train import conll_files, losses, ner_config

from bench.train_bench import fraction_override, run_one
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
