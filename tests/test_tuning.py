"""``tune-retriever``: a tiny encoder trained on a SciFact slice learns, and is written as a folder Encoder loads;
the split is seeded and disjoint; batches hold true negatives only; bad qrels are one line naming file:line."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from elasticsearch import Elasticsearch
from safetensors.torch import load_file

from ralm_es.config import ConfigError
from ralm_es.embed import Encoder
from ralm_es.ingest import Ingest, IngestSettings
from ralm_es.retrieve.metrics import evaluate_run, split_queries
from ralm_es.retrieve.tuning import (
    Tuner,
    TuneReport,
    TuneSettings,
    TuningData,
    TuningError,
    _changes,
    batches,
    dev_candidates,
    load_data,
    memory_bm25,
    mine_bm25,
    training_pairs,
)
from ralm_es.store.elastic import ElasticsearchBackend

RALM = [sys.executable, "-m", "ralm_es.cli.main"]
SLICE_QUERIES = 60
SLICE_OTHER_DOCS = 200
# A learning rate a random 32-wide BERT moves at within a few dozen steps.
FAST = TuneSettings(epochs=3, patience=3, batch_size=8, lr=1e-3, max_length=64, dev_candidates=30, device="cpu")


def _slice(shared_data: Path, folder: Path) -> tuple[Path, Path, Path]:
    """The first SciFact training queries, their qrels, and a corpus of their relevant abstracts plus others."""
    scifact = shared_data / "scifact"
    qrels_lines = (scifact / "qrels" / "train.tsv").read_text().splitlines()
    judged: dict[str, list[str]] = {}
    for line in qrels_lines[1:]:
        qid, doc, _ = line.split("\t")
        judged.setdefault(qid, []).append(doc)
    chosen = sorted(judged, key=int)[:SLICE_QUERIES]
    relevant = {d for q in chosen for d in judged[q]}
    queries = [line for line in (scifact / "queries.train.jsonl").open() if json.loads(line)["_id"] in chosen]
    corpus, others = [], 0
    for line in (scifact / "corpus.jsonl").open():
        doc_id = json.loads(line)["_id"]
        if doc_id in relevant or others < SLICE_OTHER_DOCS:
            corpus.append(line)
            others += doc_id not in relevant
    paths = (folder / "queries.jsonl", folder / "qrels.tsv", folder / "corpus.jsonl")
    paths[0].write_text("".join(queries))
    paths[1].write_text(qrels_lines[0] + "\n" + "".join(f"{q}\t{d}\t1\n" for q in chosen for d in judged[q]))
    paths[2].write_text("".join(corpus))
    return paths


@pytest.fixture(scope="module")
def scifact_slice(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return _slice(shared_data, tmp_path_factory.mktemp("scifact-slice"))


@pytest.fixture(scope="module")
def slice_data(scifact_slice: tuple[Path, Path, Path]) -> TuningData:
    return load_data(*scifact_slice)


@pytest.fixture(scope="module")
def tuned(
    slice_data: TuningData, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[TuneReport, list[str]]:
    notices: list[str] = []
    out = tmp_path_factory.mktemp("tuned") / "encoder"
    with memory_bm25(slice_data.docs) as miner:
        report = Tuner(tiny_model_dir, FAST).run(slice_data, out, miner, "in-memory BM25", notices.append)
    return report, notices


def test_training_lowers_the_loss_and_raises_dev_ndcg(tuned: tuple[TuneReport, list[str]]) -> None:
    report, _ = tuned
    losses = [h.loss for h in report.history[1:]]
    assert len(losses) == FAST.epochs
    assert losses[-1] < losses[0]
    assert report.after["ndcg@10"] > report.before["ndcg@10"]
    best = max(report.history, key=lambda h: h.dev["ndcg@10"])
    assert report.best_epoch == best.epoch > 0


def test_the_folder_loads_in_encoder_and_holds_the_best_epoch(
    tuned: tuple[TuneReport, list[str]], slice_data: TuningData
) -> None:
    report, _ = tuned
    encoder = Encoder(report.out, device="cpu")
    assert encoder.pooling == "mean" and encoder.dim == 32
    assert encoder.revision == report.revision != report.base.revision
    record = json.loads((report.out / "tuning.json").read_text())
    assert record["revision"] == encoder.revision and record["best_epoch"] == report.best_epoch
    assert record["seed"] == FAST.seed and record["base"]["revision"] == report.base.revision
    assert record["data"]["qrels"].endswith("qrels.tsv")
    # Ranking the dev candidates with ralm-es's own Encoder gives the dev figures recorded for the best epoch.
    dev = record["split"]["dev_ids"]
    with memory_bm25(slice_data.docs) as miner:
        ranked = mine_bm25(miner, {q: slice_data.queries[q] for q in dev}, FAST.dev_candidates)
    candidates = dev_candidates(slice_data, dev, ranked, FAST.dev_candidates)
    run: dict[str, dict[str, float]] = {}
    for qid, docs in candidates.items():
        vectors = encoder.encode([slice_data.docs[d] for d in docs])
        scores = vectors @ encoder.encode([slice_data.queries[qid]])[0]
        run[qid] = dict(zip(docs, map(float, scores), strict=True))
    ndcg = evaluate_run(run, {q: slice_data.qrels[q] for q in dev})["ndcg@10"]
    assert ndcg == pytest.approx(record["after"]["ndcg@10"], abs=1e-3)


def test_notices_name_the_split_and_every_epoch(tuned: tuple[TuneReport, list[str]]) -> None:
    report, notices = tuned
    assert f"{report.train_queries} training and {report.dev_queries} dev queries (seed {FAST.seed})" in notices[0]
    assert "BM25 top 30" in notices[0]
    assert sum(n.startswith("epoch ") for n in notices) == FAST.epochs


def test_split_is_seeded_and_disjoint() -> None:
    ids = [str(i) for i in range(100)]
    train, dev = split_queries(ids, 0.2, seed=7)
    assert len(dev) == 20 and set(train) | set(dev) == set(ids) and not set(train) & set(dev)
    assert split_queries(list(reversed(ids)), 0.2, seed=7) == (train, dev)
    assert split_queries(ids, 0.2, seed=8)[1] != dev


def test_batches_hold_only_true_negatives(slice_data: TuningData) -> None:
    with memory_bm25(slice_data.docs) as miner:
        ranked = mine_bm25(miner, slice_data.queries, 20)
    rng = random.Random(0)
    pairs = training_pairs(slice_data, list(slice_data.queries), ranked, 20, rng)
    assert len(pairs) == sum(len(j) for j in slice_data.qrels.values())
    assert all(p.negative is not None and p.negative not in slice_data.qrels[p.query] for p in pairs)
    plan = batches(pairs, 8, slice_data.qrels, rng)
    key = lambda p: (p.query, p.positive, p.negative or "")  # noqa: E731
    assert sorted((p for b in plan for p in b), key=key) == sorted(pairs, key=key)
    for batch in plan:
        assert len(batch) <= 8
        docs = [d for p in batch for d in (p.positive, p.negative)]
        assert len(docs) == len(set(docs))
        for p in batch:
            others = {d for o in batch if o is not p for d in (o.positive, o.negative)}
            assert not others & set(slice_data.qrels[p.query])


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([*RALM, *args], capture_output=True, text=True, env=env, timeout=300)


def _args(queries: Path, qrels: Path, corpus: Path, out: Path, model: Path) -> list[str]:
    files = ["--queries", str(queries), "--qrels", str(qrels), "--corpus", str(corpus)]
    return ["tune-retriever", *files, "--out", str(out), "--model", str(model)]


def test_bad_qrels_line_is_one_line_naming_it(
    scifact_slice: tuple[Path, Path, Path], tiny_model_dir: Path, tmp_path: Path
) -> None:
    queries, qrels, corpus = scifact_slice
    lines = qrels.read_text().splitlines()
    bad = tmp_path / "bad.tsv"
    bad.write_text("\n".join([*lines[:3], lines[3].replace("\t1", "\tyes"), *lines[4:]]) + "\n")
    proc = _cli(*_args(queries, bad, corpus, tmp_path / "out", tiny_model_dir))
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"ralm-es: error: {bad}:4: relevance 'yes' is not an integer"
    assert not (tmp_path / "out").exists()


def test_judged_document_missing_from_the_corpus_names_the_qrels_line(
    scifact_slice: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    queries, qrels, corpus = scifact_slice
    lines = qrels.read_text().splitlines()
    qid = lines[5].split("\t")[0]
    bad = tmp_path / "qrels.tsv"
    bad.write_text("\n".join([*lines[:6], f"{qid}\tno-such-doc\t1", *lines[6:]]) + "\n")
    with pytest.raises(TuningError) as err:
        load_data(queries, bad, corpus)
    assert str(err.value) == f"{bad}:7: document 'no-such-doc' is not in the corpus {corpus}"
    # The line as the qrels reader counts it, behind a BOM too (it was a StopIteration traceback).
    bom = tmp_path / "bom.tsv"
    bom.write_text("\ufeff" + "\n".join([f"{qid}\tno-such-doc\t1", *lines[1:]]) + "\n", encoding="utf-8")
    with pytest.raises(TuningError, match=f"^{bom}:1: document 'no-such-doc' is not in the corpus"):
        load_data(queries, bom, corpus)
    # A judgement of a query that is not among the queries is left out, whatever document it names.
    stray = tmp_path / "stray.tsv"
    stray.write_text(qrels.read_text() + "not-a-query\tno-such-doc\t1\n")
    assert load_data(queries, stray, corpus).qrels == load_data(queries, qrels, corpus).qrels


def test_a_query_bm25_found_nothing_for_still_gets_a_negative(slice_data: TuningData) -> None:
    """One pair without a negative dropped the hard negatives of its whole batch (the loss needs a column each)."""
    first, second = list(slice_data.queries)[:2]
    ranked = {first: [], second: [d for d in slice_data.docs if d not in slice_data.qrels[second]][:5]}
    pairs = training_pairs(slice_data, [first, second], ranked, 20, random.Random(0))
    assert all(p.negative is not None and p.negative not in slice_data.qrels[p.query] for p in pairs)
    assert {p.negative for p in pairs if p.query == second} <= set(ranked[second])
    # No mining at all (--no-hard-negatives): in-batch negatives only.
    assert {p.negative for p in training_pairs(slice_data, [first, second], {}, 20, random.Random(0))} == {None}


def test_documents_judged_not_relevant_are_no_positives(scifact_slice: tuple[Path, Path, Path], tmp_path: Path) -> None:
    queries, qrels, corpus = scifact_slice
    lines = qrels.read_text().splitlines()
    qid, relevant = lines[5].split("\t")[:2]
    other = next(line.split("\t")[1] for line in lines[1:] if line.split("\t")[0] != qid)  # past the header
    judged = tmp_path / "qrels.tsv"
    # A not-relevant judgement of a corpus document, and one of a document the corpus lacks (not an error).
    judged.write_text("\n".join([*lines, f"{qid}\t{other}\t0", f"{qid}\tno-such-doc\t0"]) + "\n")
    data = load_data(queries, judged, corpus)
    assert data.qrels[qid][other] == 0 and "no-such-doc" not in data.qrels[qid]
    pairs = training_pairs(data, [qid], {qid: [other, relevant]}, 20, random.Random(0))
    assert [p.positive for p in pairs] == sorted(d for d, r in data.qrels[qid].items() if r > 0)
    assert relevant in {p.positive for p in pairs} and all(p.negative != other for p in pairs)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("dev_fraction", 1.0, "tune.dev_fraction must be between 0 and 1"),
        ("batch_size", 1, "tune.batch_size must be at least 2"),
        ("dev_candidates", -1, "tune.dev_candidates must not be negative"),
        ("mini_batch", -1, "tune.mini_batch must not be negative"),
        ("lr", float("inf"), "tune.lr must be a positive number"),
    ],
)
def test_bad_settings_name_the_setting(option: str, value: Any, message: str) -> None:
    """Named by setting, not by flag: the value may come from the config file's tune: section."""
    with pytest.raises(ConfigError, match=message):
        TuneSettings(**{option: value})


def test_an_existing_output_folder_is_refused(slice_data: TuningData, tiny_model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(TuningError, match=f"--out {tmp_path} already exists and is not an empty folder"):
        Tuner(tiny_model_dir, FAST).run(slice_data, tmp_path, None, "none", lambda m: None)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_a_refused_resume_names_what_changed() -> None:
    saved = {"settings": {"epochs": 2, "lr": 2e-5, "device": "cuda"}, "data": "a", "BM25 rankings": "b"}
    now = {"settings": {"epochs": 3, "lr": 2e-5}, "data": "a", "BM25 rankings": "c"}
    assert _changes(saved, now) == "other settings (epochs 2, now 3), other BM25 rankings"
    # A state of a version that compared the device too: no named difference, and no empty brackets.
    assert _changes(saved, {**now, "settings": {"epochs": 2, "lr": 2e-5}}) == "other settings, other BM25 rankings"


def test_a_max_length_past_the_encoders_positions_is_refused_up_front(tiny_model_dir: Path) -> None:
    # The tiny BERT has 512 positions, as MiniLM does; 513 was a tensor-size traceback after the BM25 mining.
    with pytest.raises(TuningError) as err:
        Tuner(tiny_model_dir, replace(FAST, max_length=513))
    assert str(err.value) == f"tune.max_length 513 is more than the 512 tokens the encoder in {tiny_model_dir} reads"
    assert Tuner(tiny_model_dir, replace(FAST, max_length=512)).s.max_length == 512


def test_a_run_paused_twice_resumes_to_the_same_encoder(
    tuned: tuple[TuneReport, list[str]], slice_data: TuningData, tiny_model_dir: Path, tmp_path: Path
) -> None:
    whole, _ = tuned
    out, state = tmp_path / "encoder", tmp_path / "encoder.tuning"
    notices: list[str] = []
    with memory_bm25(slice_data.docs) as miner:

        def run(**options: Any) -> TuneReport | None:
            return Tuner(tiny_model_dir, FAST).run(slice_data, out, miner, "in-memory BM25", notices.append, **options)

        assert run(stop_after=3) is None
        assert not out.exists() and (state / "state").is_dir()
        # The time epoch 1 took before the pause stays in its seconds.
        before_pause = json.loads((state / "state" / "state.json").read_text())["loop"]["epoch_seconds"]
        with pytest.raises(TuningError, match=f"{state} holds an unfinished tuning run for --out {out}: pass --resume"):
            run()
        # On across the end of epoch 1 and its evaluation.
        assert run(resume=True, stop_after=8) is None
        resumed = run(resume=True)
    assert resumed is not None and not state.exists()
    assert f"resuming epoch 1 at batch 3 from {state}" in notices
    assert [h.epoch for h in resumed.history] == [h.epoch for h in whole.history]
    assert [h.dev["ndcg@10"] for h in resumed.history] == pytest.approx([h.dev["ndcg@10"] for h in whole.history])
    assert [h.loss for h in resumed.history[1:]] == pytest.approx([h.loss for h in whole.history[1:]], abs=1e-6)
    assert resumed.best_epoch == whole.best_epoch and resumed.revision == whole.revision
    assert resumed.history[1].seconds > before_pause > 0


def test_resume_is_refused_without_a_state_or_with_other_settings(
    scifact_slice: tuple[Path, Path, Path], tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "encoder"
    args = [*_args(*scifact_slice, out, tiny_model_dir), "--epochs", "1", "--batch-size", "8", "--max-length", "32"]
    args += ["--no-hard-negatives", "--quiet"]
    resumed = _cli(*args, "--resume")
    assert resumed.returncode == 1
    assert (
        resumed.stderr.strip().splitlines()[-1]
        == f"ralm-es: error: --resume: {out}.tuning holds no unfinished tuning run"
    )
    paused = _cli(*args, "--stop-after", "1", "--json")
    assert paused.returncode == 0, paused.stderr
    assert json.loads(paused.stdout) == {"status": "paused", "batches": 1, "state": f"{out}.tuning"}
    other = _cli(*args, "--resume", "--lr", "0.001")
    assert other.returncode == 1 and not out.exists()
    assert other.stderr.strip().splitlines()[-1] == (
        f"ralm-es: error: --resume: {out}.tuning is a tuning run with other settings (lr 2e-05, now 0.001); "
        "delete it to start over"
    )
    # The same data under another spelling of its paths, on a device named rather than picked, goes on.
    copies = tmp_path / "copies"
    copies.mkdir()
    for path in scifact_slice:
        shutil.copy(path, copies / path.name)
    base = _args(*(copies / p.name for p in scifact_slice), out, tiny_model_dir)
    spelled = [*base, *args[len(base) :], "--device", "cpu", "--resume"]
    again = _cli(*spelled, "--stop-after", "1", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["status"] == "paused"
    # Other judgements behind the same path: the split and the batches drawn would change under the run.
    qrels = copies / scifact_slice[1].name
    kept = qrels.read_text()
    qrels.write_text("".join(kept.splitlines(keepends=True)[:-3]))
    changed = _cli(*spelled)
    assert changed.returncode == 1 and not out.exists()
    assert changed.stderr.strip().splitlines()[-1] == (
        f"ralm-es: error: --resume: {out}.tuning is a tuning run with other data; delete it to start over"
    )
    qrels.write_text(kept)
    finished = _cli(*spelled)
    assert finished.returncode == 0, finished.stderr
    assert (out / "tuning.json").is_file()


def test_gradcache_mini_batches_train_as_the_whole_batch_does(
    slice_data: TuningData, tiny_model_dir: Path, tmp_path: Path
) -> None:
    # Without dropout the two paths see the same numbers: only the memory they take differs.
    model = tmp_path / "no-dropout"
    shutil.copytree(tiny_model_dir, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(
        json.dumps({**config, "hidden_dropout_prob": 0, "attention_probs_dropout_prob": 0})
    )
    reports = {}
    with memory_bm25(slice_data.docs) as miner:
        for mini_batch in (0, 3):
            settings = replace(FAST, epochs=1, mini_batch=mini_batch)
            out = tmp_path / f"mini-{mini_batch}"
            reports[mini_batch] = Tuner(model, settings).run(slice_data, out, miner, "in-memory BM25", lambda m: None)
    whole, cached = reports[0], reports[3]
    assert whole is not None and cached is not None
    assert cached.history[1].loss == pytest.approx(whole.history[1].loss, rel=1e-4)
    assert cached.after["ndcg@10"] == pytest.approx(whole.after["ndcg@10"], abs=1e-3)
    a, b = load_file(str(whole.out / "model.safetensors")), load_file(str(cached.out / "model.safetensors"))
    init = load_file(str(model / "model.safetensors"))
    assert a.keys() == b.keys() == init.keys()
    # The training moved the weights, and both paths moved them the same way. Compared as whole updates, not
    # element by element: Adam turns summation-order noise in a gradient that is zero in exact arithmetic (the
    # attention key biases) into steps of the learning rate's size.
    moved = torch.cat([(a[k] - init[k]).flatten() for k in a]).norm()
    apart = torch.cat([(a[k] - b[k]).flatten() for k in a]).norm()
    assert moved > 0
    assert apart <= 1e-3 * moved


def test_hard_negatives_mined_from_an_elasticsearch_index(
    scifact_slice: tuple[Path, Path, Path],
    tiny_model_dir: Path,
    es_client: Elasticsearch,
    es_url: str,
    index_name: str,
    tmp_path: Path,
) -> None:
    queries, qrels, corpus = scifact_slice
    Ingest(ElasticsearchBackend(es_client, index_name), IngestSettings(embed=False), checkpoint_dir=tmp_path).run(
        [corpus]
    )
    out = tmp_path / "encoder"
    extra = ["--index", index_name, "--epochs", "1", "--batch-size", "8", "--max-length", "32", "--json", "--quiet"]
    proc = _cli("--es-url", es_url, *_args(queries, qrels, corpus, out, tiny_model_dir), *extra)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["negatives"] == f"BM25 of index {index_name}"
    assert f"its BM25 top 100 (BM25 of index {index_name})" in report["dev_evaluation"]
    assert len(report["history"]) == 2 and report["history"][1]["loss"] > 0
    assert Encoder(out, device="cpu").revision == report["revision"]


def test_an_index_of_another_corpus_is_refused(
    scifact_slice: tuple[Path, Path, Path], tiny_model_dir: Path, es_url: str, sample_index: str, tmp_path: Path
) -> None:
    queries, qrels, corpus = scifact_slice
    proc = _cli(
        "--es-url", es_url, *_args(queries, qrels, corpus, tmp_path / "out", tiny_model_dir), "--index", sample_index
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].endswith(f"in the corpus {corpus}: the index does not hold this corpus")
