"""``evaluate --sweep`` chooses fusion on a seeded tuning part of the queries, measures it on the held-out rest, and
``--save`` records the choice with the index, where search and retrieve pick it up unless a flag says otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from ralm_es.config import ConfigError
from ralm_es.corpora.benchmarks import sample_path
from ralm_es.retrieve.evaluate import sweep_settings
from ralm_es.retrieve.settings import RANK_FUSIONS, FusionName, RetrievalSettings
from ralm_es.store.local import LocalBackend

RALM = [sys.executable, "-m", "ralm_es.cli.main"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RALM, *args], capture_output=True, text=True, env=os.environ.copy(), timeout=600)


def test_every_fusion_the_settings_accept_has_its_strategy_and_is_swept() -> None:
    assert set(RANK_FUSIONS) == set(typing.get_args(FusionName))
    assert {s.fusion for s in sweep_settings(RetrievalSettings())} == set(RANK_FUSIONS)
    with pytest.raises(ConfigError, match=r"retrieval\.fusion must be one of rrf, linear, got 'borda'"):
        RetrievalSettings(fusion="borda")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def local_index(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    folder = tmp_path_factory.mktemp("tuning")
    index = folder / "index"
    proc = run_cli(
        "ingest", str(sample_path("sample_corpus.jsonl")), "--backend", "local", "--index", str(index),
        "--model", str(tiny_model_dir), "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    corpus = [json.loads(line) for line in sample_path("sample_corpus.jsonl").read_text().splitlines()[:10]]
    queries = folder / "queries.jsonl"
    queries.write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": d["title"] or d["text"][:60]}) + "\n" for i, d in enumerate(corpus))
    )
    qrels = folder / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\t{d['_id']}\t1\n" for i, d in enumerate(corpus)))
    return index, queries, qrels


def test_sweep_save_records_the_choice_and_search_uses_it(local_index: tuple[Path, Path, Path]) -> None:
    index, queries, qrels = local_index
    common = ["--backend", "local", "--index", str(index)]
    proc = run_cli("evaluate", *common, "--queries", str(queries), "--qrels", str(qrels), "--sweep", "--save", "--json")
    assert proc.returncode == 0, proc.stderr
    tuned = json.loads(proc.stdout)
    assert tuned["tuned_on"]["tune_queries"] == 8 and tuned["dev"]["queries"] == 2
    assert tuned["rows"][0]["settings"] == tuned["settings"]
    assert LocalBackend(index).tuned_settings()["settings"] == tuned["settings"]

    search = run_cli("search", "capital city", *common, "--json")
    assert search.returncode == 0, search.stderr
    assert f"fusion settings tuned for this index: {json.dumps(tuned['settings'])}" in search.stderr
    # A flag given on the command line wins over the recorded value of that setting.
    override = run_cli("search", "capital city", *common, "--dense-weight", "0.9", "--json")
    assert override.returncode == 0, override.stderr
    (notice,) = [line for line in override.stderr.splitlines() if "tuned for this index: " in line]
    taken = json.loads(notice.split("tuned for this index: ", 1)[1])
    assert taken == {name: value for name, value in tuned["settings"].items() if name != "dense_weight"}


def test_save_without_sweep_is_refused(local_index: tuple[Path, Path, Path]) -> None:
    index, queries, qrels = local_index
    proc = run_cli(
        "evaluate", "--backend", "local", "--index", str(index), "--queries", str(queries), "--qrels", str(qrels),
        "--save",
    )  # fmt: skip
    assert proc.returncode == 2 and "--save records the choice of --sweep" in proc.stderr
    # The split's settings do nothing without --sweep either.
    proc = run_cli(
        "evaluate", "--backend", "local", "--index", str(index), "--queries", str(queries), "--qrels", str(qrels),
        "--seed", "3", "--dev-fraction", "0.5",
    )  # fmt: skip
    assert proc.returncode == 2 and "--dev-fraction and --seed set the split of --sweep" in proc.stderr
