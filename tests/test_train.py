"""Training end to end on a tiny random BERT: every fusion mode learns, checkpoints round-trip, runs resume."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from click.testing import CliRunner
from safetensors.torch import load_file
from transformers import AutoTokenizer

from ralm_es.cli.main import cli
from ralm_es.config import ConfigError, to_dict
from ralm_es.inference import predictions
from ralm_es.inference.runs import evaluate_file, open_run, predict_file
from ralm_es.inference.task import task_of
from ralm_es.model.labelling import Prediction
from ralm_es.model.spec import ModelSettings
from ralm_es.model.strategies import check_encoder_fits
from ralm_es.resumable import saved_loop
from ralm_es.retrieve.cache import CacheHeader, CacheHit, CacheWriter
from ralm_es.retrieve.settings import RetrievalSettings
from ralm_es.tasks import DataError, Example
from ralm_es.tasks.classification import read_classification
from ralm_es.tasks.ner import read_ner
from ralm_es.train import loop
from ralm_es.train.config import load_config
from ralm_es.train.data import load_splits
from ralm_es.train.loop import TrainError, train

PEOPLE = ["john smith", "mary jones", "peter blackburn", "anna berg", "li wei"]
PLACES = ["paris", "london", "brussels", "tokyo", "lima"]
ORGS = ["acme corp", "the european commission", "reuters", "fifa"]
TEMPLATES = [
    ("{per} visited {loc} on monday .", None),
    ("{org} said {per} would travel to {loc} .", None),
    ("shares of {org} fell in {loc} .", None),
    ("{per} joined {org} last year .", None),
]


def _tagged(template: str, rng: random.Random) -> list[tuple[str, str]]:
    values = {"per": ("PER", rng.choice(PEOPLE)), "loc": ("LOC", rng.choice(PLACES)), "org": ("ORG", rng.choice(ORGS))}
    rows: list[tuple[str, str]] = []
    for word in template.split():
        if word.startswith("{"):
            kind, name = values[word.strip("{}")]
            # Names are capitalised, as in news text; the uncased encoder needs the case features to see it.
            rows += [(part.capitalize(), f"{'B' if i == 0 else 'I'}-{kind}") for i, part in enumerate(name.split())]
        else:
            rows.append((word, "O"))
    return rows


def write_conll(path: Path, sentences: int, seed: int) -> Path:
    rng = random.Random(seed)
    lines = ["-DOCSTART- -X- -X- O", ""]
    for i in range(sentences):
        if i and i % 10 == 0:
            lines += ["-DOCSTART- -X- -X- O", ""]
        lines += [f"{word} X X {tag}" for word, tag in _tagged(rng.choice(TEMPLATES)[0], rng)] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_cache(path: Path, examples: list[Example], pool: list[Example], k: int = 3) -> Path:
    """Hits for each example: the pool sentences sharing most words with it (never the example itself)."""
    header = CacheHeader(index="test", mode="bm25", k=k, fusion=RetrievalSettings(mode="bm25").fusion_header())
    with CacheWriter(path, header) as writer:
        for ex in examples:
            words = set(ex.words)
            ranked = sorted((p for p in pool if p.id != ex.id), key=lambda p: -len(words & set(p.words)))[:k]
            hits = [
                CacheHit(
                    id=p.id,
                    doc_id=p.id.rsplit("-", 1)[0],
                    rank=r + 1,
                    score=float(len(words & set(p.words))),
                    scores={"bm25": float(len(words & set(p.words))), "dense": None},
                    text=p.text,
                )
                for r, p in enumerate(ranked)
            ]
            writer.write(ex.id, ex.text, hits)
    return path


def with_caches(train_path: Path, dev_path: Path, read: Callable[[Path], list[Example]]) -> dict[str, Path]:
    """The two data files and a retrieval cache beside each, whose passages are training examples."""
    train_ex, dev_ex = read(train_path), read(dev_path)
    return {
        "train": train_path,
        "dev": dev_path,
        "train_cache": write_cache(train_path.with_name("train.cache.jsonl"), train_ex, train_ex),
        "dev_cache": write_cache(dev_path.with_name("dev.cache.jsonl"), dev_ex, train_ex),
    }


def conll_files(folder: Path, train_sentences: int, dev_sentences: int) -> dict[str, Path]:
    train_path = write_conll(folder / "train.txt", train_sentences, seed=1)
    return with_caches(train_path, write_conll(folder / "dev.txt", dev_sentences, seed=2), read_ner)


def claims_files(folder: Path, train_claims: int, dev_claims: int) -> dict[str, Path]:
    train_path, dev_path = (
        write_claims(folder / "train.jsonl", train_claims, 1),
        write_claims(folder / "dev.jsonl", dev_claims, 2),
    )
    return with_caches(train_path, dev_path, lambda path: read_classification(path, text_field="claim"))


@pytest.fixture(scope="module")
def ner_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return conll_files(tmp_path_factory.mktemp("ner"), 48, 16)


def ner_config(folder: Path, data: dict[str, Path], model: Path, **overrides: object) -> Path:
    config = {
        "task": {"type": "ner"},
        "data": {k: str(v) for k, v in data.items()},
        "model": {"encoder": str(model), "fusion": "attention", "k": 3, "max_length": 32, "passage_max_length": 16},
        "train": {
            "epochs": 1,
            "max_steps": 12,
            "batch_size": 8,
            "lr": 1e-3,
            "eval_every": 6,
            "log_every": 1,
            "warmup_ratio": 0.0,
            "device": "cpu",
            # One thread: far faster than two on a busy two-core machine, and deterministic either way.
            "threads": 1,
        },
        "run": {"out": str(folder / "run"), "progress": False},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def record_evaluations(monkeypatch: pytest.MonkeyPatch) -> list[list[Prediction]]:
    """The dev predictions of the model in memory at each evaluation of the training loop, filled as it trains."""
    evaluated: list[list[Prediction]] = []
    real_predict = loop.predict

    def recording(*args: Any, **kwargs: Any) -> list[Prediction]:
        evaluated.append(real_predict(*args, **kwargs))
        return evaluated[-1]

    monkeypatch.setattr(loop, "predict", recording)
    return evaluated


def losses(run: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.mark.parametrize(
    "fusion", ["none", "concat", "attention", "attention-frozen", "attention-pooled"], ids=lambda f: f
)
def test_each_fusion_mode_learns(
    fusion: str, tmp_path: Path, ner_data: dict[str, Path], tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mode, _, variant = fusion.partition("-")
    sets = [f"model.fusion={mode}"]
    if variant == "frozen":
        sets.append("model.passage_encoder=frozen")
    if variant in ("frozen", "pooled"):
        sets.append("model.passage_memory=pooled")
    cfg = load_config(ner_config(tmp_path, ner_data, tiny_model_dir), sets)
    with caplog.at_level(logging.WARNING, logger="ralm_es.train.loop"):
        result = train(cfg)
    # The config's k and passage length are for the modes that read passages: none says it ignores them.
    ignored = (
        "fusion none does not read model.k=3 (read by concat, attention, pair, scores); model.passage_max_length=16 "
        "(read by concat, attention, pair): ignored"
    )
    assert [r.getMessage() for r in caplog.records if r.name == "ralm_es.train.loop"] == (
        [ignored] if mode == "none" else []
    )
    seen = losses(tmp_path / "run")
    assert result.finished and result.steps == 12
    assert sum(seen[-3:]) / 3 < sum(seen[:3]) / 3
    run = tmp_path / "run"
    for name in ("model.safetensors", "model.json", "config.yaml", "report.md", "training.png", "tokenizer.json"):
        assert (run / name).is_file(), name
    evals = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "dev" in r]
    assert [r["step"] for r in evals] == [6, 12]
    assert all(0 <= r["dev"]["f1"] <= 1 and set(r["dev"]["per_type"]) <= {"PER", "LOC", "ORG"} for r in evals)
    # none reads no passages: it takes no cache (given one, it is refused: see the test of that).
    cache = ["--cache", str(ner_data["dev_cache"])] if mode != "none" else []
    args = ["predict", "--model", str(run), str(ner_data["dev"]), *cache, "--explain"]
    explained = CliRunner().invoke(cli, args, catch_exceptions=False).output.splitlines()
    if mode == "attention":
        assert explained[1].startswith("  [1] ")
    else:
        assert explained[1] == f"  (fusion '{mode}' does not weigh passages)"


def test_checkpoint_round_trip_gives_identical_predictions(
    tmp_path: Path, ner_data: dict[str, Path], tiny_model_dir: Path
) -> None:
    sets = [f"data.test={ner_data['dev']}", f"data.test_cache={ner_data['dev_cache']}"]
    result = train(load_config(ner_config(tmp_path, ner_data, tiny_model_dir), sets))
    first, second = open_run(result.out, "cpu"), open_run(result.out, "cpu")
    a = predict_file(first, ner_data["dev"], ner_data["dev_cache"])[1]
    b = predict_file(second, ner_data["dev"], ner_data["dev_cache"])[1]
    assert [p.labels for p in a] == [p.labels for p in b]
    assert [p.weights for p in a] == [p.weights for p in b]
    # The reloaded best checkpoint scores the dev set exactly as the loop did when it saved it.
    metrics = evaluate_file(first, ner_data["dev"], ner_data["dev_cache"])
    assert metrics["f1"] == pytest.approx(result.best_metric, abs=1e-9)
    assert result.test is not None and result.test["f1"] == metrics["f1"]


def test_a_cache_of_another_file_with_the_same_ids_is_refused(
    tmp_path: Path, ner_data: dict[str, Path], tiny_model_dir: Path
) -> None:
    # A dev.txt written again with other sentences has the same ids (dev-d0-s0, ...) as the one the cache was made
    # from: its passages belong to other sentences.
    other = write_conll(tmp_path / "dev.txt", 16, seed=3)
    assert other != ner_data["dev"] and other.name == ner_data["dev"].name
    cfg = load_config(ner_config(tmp_path, {**ner_data, "dev": other}, tiny_model_dir))
    with pytest.raises(DataError, match=r"dev\.cache\.jsonl: the passages of 'dev-d0-s0' were retrieved for '.*', but"):
        load_splits(cfg, task_of(cfg.task), AutoTokenizer.from_pretrained(tiny_model_dir), None)


def test_holdout_and_train_fraction_split_the_training_data(
    tmp_path: Path, ner_data: dict[str, Path], tiny_model_dir: Path
) -> None:
    sets = ["data.dev=null", "data.dev_cache=null", "data.holdout=0.25", "data.train_fraction=0.5"]
    cfg = load_config(ner_config(tmp_path, ner_data, tiny_model_dir), sets)
    splits = load_splits(cfg, task_of(cfg.task), AutoTokenizer.from_pretrained(tiny_model_dir), None)
    assert splits.dev is not None and len(splits.dev) == 12 and len(splits.train) == 18
    train_ids = {ex.id for ex in splits.train.examples}
    assert train_ids.isdisjoint(ex.id for ex in splits.dev.examples)
    all_ids = {ex.id for ex in read_ner(ner_data["train"])}
    assert {ex.id for ex in splits.train.examples + splits.dev.examples} <= all_ids
    assert list(splits.spec.labels) == splits.labels.labels and splits.spec.labels[0] == "O"
    # 0.99 of fewer than 100 examples rounds up to all of them: refused naming the setting, not blamed on the data.
    holdout = ["data.dev=null", "data.dev_cache=null", "data.holdout=0.99"]
    cfg = load_config(ner_config(tmp_path, ner_data, tiny_model_dir), holdout)
    with pytest.raises(ConfigError, match=r"data\.holdout 0\.99 leaves none of the \d+ examples of .*train"):
        load_splits(cfg, task_of(cfg.task), AutoTokenizer.from_pretrained(tiny_model_dir), None)


def test_bf16_trains_on_the_cpu_and_auto_keeps_it_in_fp32(
    tmp_path: Path, ner_data: dict[str, Path], tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whatever this machine's CPU: torch computes bf16 everywhere (only slower where it emulates it).
    monkeypatch.setattr(predictions, "bf16_native", lambda device: True)
    runs = {}
    for precision in ("fp32", "auto", "bf16"):
        folder = tmp_path / precision
        folder.mkdir()
        runs[precision] = train(
            load_config(ner_config(folder, ner_data, tiny_model_dir), [f"train.precision={precision}"])
        )
    fp32, auto, bf16 = (losses(tmp_path / p / "run") for p in ("fp32", "auto", "bf16"))
    assert auto == fp32
    assert bf16 != pytest.approx(fp32, abs=1e-6)
    assert runs["bf16"].finished and sum(bf16[-3:]) / 3 < sum(bf16[:3]) / 3


def test_bf16_where_the_device_would_only_emulate_it_is_refused_before_anything_is_written(
    tmp_path: Path, ner_data: dict[str, Path], tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(predictions, "bf16_native", lambda device: False)
    cfg = load_config(ner_config(tmp_path, ner_data, tiny_model_dir), ["train.precision=bf16"])
    with pytest.raises(
        ConfigError, match=r"^train.precision bf16: the cpu here has no native bf16 .*use auto or fp32$"
    ):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_resume_continues_the_same_run(tmp_path: Path, ner_data: dict[str, Path], tiny_model_dir: Path) -> None:
    whole_dir, split_dir = tmp_path / "whole", tmp_path / "split"
    whole_dir.mkdir(), split_dir.mkdir()
    # Losses logged every 3 steps and a pause at 4: the window open at the pause must survive it.
    logged = ["train.log_every=3"]
    whole = train(load_config(ner_config(whole_dir, ner_data, tiny_model_dir), logged))
    config = ner_config(split_dir, ner_data, tiny_model_dir)
    paused = train(load_config(config, logged), stop_after=4)
    assert (paused.steps, paused.finished) == (4, False)
    with pytest.raises(TrainError, match=r"already holds a run: set run.resume=true"):
        train(load_config(config, logged))
    # Another seed or k would continue a different run under this one's name.
    with pytest.raises(TrainError, match=r"other settings \(model\.k 3 -> 2; train\.seed 13 -> 5\)"):
        train(load_config(config, [*logged, "run.resume=true", "model.k=2", "train.seed=5"]))
    resumed = train(load_config(config, [*logged, "run.resume=true"]))
    assert (resumed.steps, resumed.finished) == (whole.steps, True)
    assert losses(split_dir / "run") == pytest.approx(losses(whole_dir / "run"), abs=1e-6)
    a, b = (
        load_file(str(whole_dir / "run" / "state" / "model.safetensors")),
        load_file(str(split_dir / "run" / "state" / "model.safetensors")),
    )
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[key], b[key], atol=1e-6) for key in a)
    assert resumed.best_metric == pytest.approx(whole.best_metric)


def test_a_resume_may_change_where_and_how_it_runs_but_not_what_it_trains(
    tmp_path: Path, ner_data: dict[str, Path], tiny_model_dir: Path
) -> None:
    config = ner_config(tmp_path, ner_data, tiny_model_dir)
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text(yaml.safe_dump(to_dict(load_config(config))), encoding="utf-8")
    # The test set is scored after training: a wrong path is corrected on resume.
    allowed_changes = ("train.eval_batch_size=4", "train.device=auto", "train.threads=2", "run.progress=true")
    for allowed in (*allowed_changes, "data.test=test.txt", "data.test_cache=test.cache.jsonl"):
        loop._check_resumed_settings(out, load_config(config, [allowed]))
    with pytest.raises(TrainError, match=r"other settings \(train\.lr 0\.001 -> 0\.01\)"):
        loop._check_resumed_settings(out, load_config(config, ["train.lr=0.01"]))
    # A setting the saved config does not have (added by a later version) is not compared.
    saved = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    del saved["train"]["consistency_weight"]
    (out / "config.yaml").write_text(yaml.safe_dump(saved), encoding="utf-8")
    loop._check_resumed_settings(out, load_config(config))


def test_a_run_killed_between_saved_states_resumes_without_logging_steps_twice(
    tmp_path: Path, ner_data: dict[str, Path], tiny_model_dir: Path
) -> None:
    whole_dir, split_dir = tmp_path / "whole", tmp_path / "split"
    whole_dir.mkdir(), split_dir.mkdir()
    whole = train(load_config(ner_config(whole_dir, ner_data, tiny_model_dir)))
    config = ner_config(split_dir, ner_data, tiny_model_dir)
    run = split_dir / "run"
    train(load_config(config), stop_after=4)
    shutil.copytree(run / "state", tmp_path / "state-at-4")
    train(load_config(config, ["run.resume=true"]))
    # Killed after logging every step but before saving a state past step 4.
    shutil.rmtree(run / "state")
    shutil.copytree(tmp_path / "state-at-4", run / "state")
    resumed = train(load_config(config, ["run.resume=true"]))
    steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert steps == list(range(1, whole.steps + 1))
    assert losses(run) == pytest.approx(losses(whole_dir / "run"), abs=1e-6)
    assert resumed.best_metric == pytest.approx(whole.best_metric) and resumed.examples_per_s > 0


def test_a_cache_for_a_model_that_reads_no_passages_is_refused(
    tmp_path: Path, ner_data: dict[str, Path], tiny_model_dir: Path
) -> None:
    result = train(load_config(ner_config(tmp_path, ner_data, tiny_model_dir), ["model.fusion=none"]))
    for command in ("predict", "evaluate-model"):
        args = [command, "--model", str(result.out), str(ner_data["dev"]), "--cache", str(tmp_path / "nowhere.jsonl")]
        out = CliRunner().invoke(cli, args)
        assert out.exit_code == 2 and "uses fusion 'none', which reads no passages: leave --cache out" in out.output
    plain = CliRunner().invoke(cli, ["evaluate-model", "--model", str(result.out), str(ner_data["dev"])])
    assert plain.exit_code == 0, plain.output


def test_predict_explain_shows_passages_and_weights(
    tmp_path: Path, ner_data: dict[str, Path], tiny_model_dir: Path
) -> None:
    result = train(load_config(ner_config(tmp_path, ner_data, tiny_model_dir)))
    runner = CliRunner()
    args = ["predict", "--model", str(result.out), str(ner_data["dev"]), "--cache", str(ner_data["dev_cache"])]
    out = runner.invoke(cli, [*args, "--json", "--explain"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    records = [json.loads(line) for line in out.output.splitlines()]
    dev = read_ner(ner_data["dev"])
    assert [r["id"] for r in records] == [ex.id for ex in dev]
    first = records[0]
    assert len(first["tags"]) == len(first["words"]) == len(first["weights"])
    assert [p["rank"] for p in first["passages"]] == [1, 2, 3]
    # The entities of the tags, as /predict gives them (the command line gave none): each a run of its type's tags.
    assert all("entities" in record for record in records)
    for record in records:
        for entity in record["entities"]:
            span = record["tags"][entity["start"] : entity["end"]]
            assert span and all(tag[2:] == entity["type"] for tag in span)
            assert entity["text"] == " ".join(record["words"][entity["start"] : entity["end"]])
    for row in first["weights"]:
        assert sum(row) == pytest.approx(1.0, abs=1e-4)
    text = runner.invoke(cli, [*args, "--explain", "--top", "2"], catch_exceptions=False).output
    with pytest.raises(DataError, match=r"uses fusion 'attention': pass --cache with the retrieval cache of"):
        runner.invoke(cli, args[:4], catch_exceptions=False)
    assert text.startswith(f"{dev[0].id}\t{dev[0].words[0]}/")
    assert f"[1] {first['passages'][0]['id']}: {first['passages'][0]['text'][:40]}" in text


def ralm(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command line, whose entry point turns errors into one line."""
    command = [sys.executable, "-m", "ralm_es.cli.main", *args]
    return subprocess.run(command, capture_output=True, text=True, env=os.environ.copy(), timeout=300)


def test_a_missing_retrieval_cache_names_the_file_and_the_command_that_makes_it(
    tmp_path: Path, ner_data: dict[str, Path], tiny_model_dir: Path
) -> None:
    missing = tmp_path / "missing.cache.jsonl"
    make = (
        f"make it with `ralm-es retrieve {{0}} --index INDEX --out {missing}` (passages from an index) or "
        f"`ralm-es doc-context {{0}} --out {missing}` (the input's own document)"
    )
    config = ner_config(tmp_path, {**ner_data, "train_cache": missing}, tiny_model_dir)
    trained = ralm("train", "--config", str(config))
    assert trained.returncode == 1 and "Traceback" not in trained.stderr
    expected = f"ralm-es: error: {missing}: no such retrieval cache; {make.format(ner_data['train'])}"
    assert trained.stderr.strip().splitlines()[-1] == expected
    assert not (tmp_path / "run").exists()

    result = train(load_config(config, [f"data.train_cache={ner_data['train_cache']}", "train.max_steps=2"]))
    predicted = ralm("predict", "--model", str(result.out), str(ner_data["dev"]), "--cache", str(missing))
    assert predicted.returncode == 1 and "Traceback" not in predicted.stderr
    expected = f"ralm-es: error: {missing}: no such retrieval cache; {make.format(ner_data['dev'])}"
    assert predicted.stderr.strip().splitlines()[-1] == expected


def write_claims(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = rng.choice(["SUPPORT", "CONTRADICT"])
        verb = "raises" if label == "SUPPORT" else "lowers"
        rows.append({"id": f"c{seed}-{i}", "claim": f"drug {rng.choice(PLACES)} {verb} blood pressure", "label": label})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_classification_train_evaluate_and_explain(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = claims_files(tmp_path, 40, 12)
    config = ner_config(tmp_path, data, tiny_model_dir)
    # 30 steps: a batch of 8 claims gives a noisy loss, and the first and last five steps are compared.
    result = train(load_config(config, ["task.type=classification", "task.text_field=claim", "train.max_steps=30"]))
    seen = losses(result.out)
    assert sum(seen[-5:]) < sum(seen[:5])
    runner = CliRunner()
    args = ["--model", str(result.out), str(data["dev"]), "--cache", str(data["dev_cache"])]
    scored = runner.invoke(cli, ["evaluate-model", *args, "--json"], catch_exceptions=False)
    metrics = json.loads(scored.stdout)
    assert metrics["macro_f1"] == pytest.approx(result.best_metric)
    assert set(metrics["per_label"]) <= {"SUPPORT", "CONTRADICT"} and metrics["examples"] == 12
    explained = runner.invoke(cli, ["predict", *args, "--explain"], catch_exceptions=False).output.splitlines()
    assert explained[0].split("\t")[0] == "c2-0"
    assert explained[0].split("\t")[1] in {"SUPPORT", "CONTRADICT"}
    assert explained[1].startswith("  [1] ")


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("model.heads=5", r"model\.heads is 5, which does not divide the hidden size 32 of the encoder in "),
        ("model.max_length=600", r"model\.max_length is 600, over the 512 positions of the encoder in "),
        # attention's shared passages go through the trainable encoder too.
        ("model.passage_max_length=513", r"model\.passage_max_length is 513, over the 512 positions"),
    ],
)
def test_settings_the_encoder_cannot_run_are_refused_before_anything_is_read(
    tmp_path: Path, ner_data: dict[str, Path], tiny_model_dir: Path, setting: str, message: str
) -> None:
    cfg = load_config(ner_config(tmp_path, ner_data, tiny_model_dir), [setting])
    with pytest.raises(ConfigError, match=message):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_pair_needs_room_for_the_input_and_the_passage_together(tiny_model_dir: Path) -> None:
    fits = ModelSettings(fusion="pair", max_length=300, passage_max_length=213)
    check_encoder_fits(fits, 32, 512, tiny_model_dir)
    over = ModelSettings(fusion="pair", max_length=300, passage_max_length=214)
    with pytest.raises(ConfigError, match=r"model\.max_length \+ model\.passage_max_length - 1 is 513, over the 512"):
        check_encoder_fits(over, 32, 512, tiny_model_dir)


def test_an_empty_run_out_is_refused(tmp_path: Path, ner_data: dict[str, Path], tiny_model_dir: Path) -> None:
    # Path("") is the current directory: the run would be written among whatever is there.
    with pytest.raises(ConfigError, match=r"^--set run\.out must name the run folder, got ''$"):
        load_config(ner_config(tmp_path, ner_data, tiny_model_dir), ["run.out="])


def write_misc(path: Path) -> Path:
    """A CoNLL file with a MISC entity, a type the training data of ``ner_data`` lacks."""
    path.write_text("-DOCSTART- -X- -X- O\n\nJohn X X B-PER\nspeaks X X O\nFrench X X B-MISC\n\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("case", ["missing file", "unseen label", "no cache", "cache of another file"])
def test_a_bad_test_split_is_refused_before_training(
    case: str, tmp_path: Path, ner_data: dict[str, Path], tiny_model_dir: Path
) -> None:
    missing = tmp_path / "missing.txt"
    other = write_conll(tmp_path / "dev.txt", 16, seed=3)  # dev.txt's ids, other sentences
    test, cache, message = {
        "missing file": (missing, ner_data["dev_cache"], rf"^{missing}: no such file$"),
        "unseen label": (write_misc(tmp_path / "misc.txt"), ner_data["dev_cache"], r"misc\.txt.*MISC"),
        "no cache": (ner_data["dev"], None, r"^fusion 'attention' needs retrieved passages: set data\.test_cache"),
        "cache of another file": (other, ner_data["dev_cache"], r"dev\.cache\.jsonl: the passages of 'dev-d0-s0' were"),
    }[case]
    cfg = load_config(ner_config(tmp_path, ner_data, tiny_model_dir), [f"data.test={test}", f"data.test_cache={cache}"])
    with pytest.raises(DataError, match=message):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_a_finished_run_resumes_with_a_corrected_test_split(
    tmp_path: Path, ner_data: dict[str, Path], tiny_model_dir: Path
) -> None:
    config = ner_config(tmp_path, ner_data, tiny_model_dir)
    trained = train(load_config(config, ["train.max_steps=2"]))
    assert trained.finished and trained.test is None
    test = [f"data.test={ner_data['dev']}", f"data.test_cache={ner_data['dev_cache']}"]
    resumed = train(load_config(config, ["train.max_steps=2", "run.resume=true", *test]))
    assert resumed.steps == 2 and resumed.test is not None
    assert (
        resumed.test["f1"] == evaluate_file(open_run(resumed.out, "cpu"), ner_data["dev"], ner_data["dev_cache"])["f1"]
    )
    assert "| test f1 (best checkpoint) |" in (resumed.out / "report.md").read_text(encoding="utf-8")


def test_a_fresh_run_starts_its_metrics_afresh_in_a_folder_left_before_a_first_save(
    tmp_path: Path, ner_data: dict[str, Path], tiny_model_dir: Path
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    # A run killed before its first save: records, no state, no weights. A file of the user's own stays.
    stale = [{"step": s, "epoch": 0.1, "loss": 9.0, "lr": 0.001, "examples_per_s": 1.0} for s in (1, 2, 3)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in stale), encoding="utf-8")
    (run / "notes.txt").write_text("mine", encoding="utf-8")
    result = train(load_config(ner_config(tmp_path, ner_data, tiny_model_dir), ["train.max_steps=4"]))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4] and 9.0 not in losses(run)
    assert [r["step"] for r in records if "dev" in r] == [4] and result.finished
    assert (run / "notes.txt").read_text(encoding="utf-8") == "mine"


@pytest.mark.parametrize(("grad_accum", "steps"), [(1, 18), (4, 5)])
def test_epochs_train_that_many_epochs_of_micro_batches_whatever_the_accumulation(
    grad_accum: int, steps: int, tmp_path: Path, ner_data: dict[str, Path], tiny_model_dir: Path
) -> None:
    # 48 sentences in batches of 8: 6 micro-batches an epoch, 18 in 3 epochs; with 4 to a step the fifth takes 2.
    sets = ["train.max_steps=null", "train.epochs=3", f"train.grad_accum={grad_accum}", "train.eval_every=100"]
    result = train(load_config(ner_config(tmp_path, ner_data, tiny_model_dir), sets))
    assert (result.steps, result.total_steps) == (steps, steps)
    loop_state = saved_loop(result.out)
    assert loop_state is not None and loop_state["micro"] == 18
    records = [json.loads(line) for line in (result.out / "metrics.jsonl").read_text().splitlines()]
    micro = [min(s * grad_accum, 18) for s in range(1, steps + 1)]
    assert [r["epoch"] for r in records if "loss" in r] == [round(m / 6, 3) for m in micro]


def test_a_short_last_step_averages_its_micro_batches(
    tmp_path: Path, ner_data: dict[str, Path], tiny_model_dir: Path
) -> None:
    # One epoch is 6 micro-batches: accumulating up to 100 is one step of those 6, as accumulating exactly 6 is.
    runs = {}
    for grad_accum in (6, 100):
        folder = tmp_path / str(grad_accum)
        folder.mkdir()
        sets = ["train.max_steps=null", "train.epochs=1", f"train.grad_accum={grad_accum}"]
        runs[grad_accum] = train(load_config(ner_config(folder, ner_data, tiny_model_dir), sets))
    assert runs[6].steps == runs[100].steps == 1
    assert losses(tmp_path / "100" / "run") == pytest.approx(losses(tmp_path / "6" / "run"), abs=1e-6)
    a, b = (load_file(str(tmp_path / name / "run" / "model.safetensors")) for name in ("6", "100"))
    assert all(torch.allclose(a[key], b[key], atol=1e-6) for key in a)
