"""The ``pair`` fusion mode (each input and passage read jointly) and the training regularisers
``train.passage_dropout`` and ``train.consistency_weight``, on a tiny random BERT."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_train import claims_files, losses, ner_config, write_cache
from transformers import AutoTokenizer

from ralm_es.cli.main import cli
from ralm_es.config import ConfigError
from ralm_es.model.inputs import build_features
from ralm_es.model.spec import ModelSpec
from ralm_es.model.strategies import FusionError
from ralm_es.model.strategies.base import VALID, drop_passages
from ralm_es.retrieve.cache import CacheHit, CacheWriter, read_cache
from ralm_es.tasks import Example, LabelMap
from ralm_es.tasks.classification import read_classification
from ralm_es.train.checkpoint import new_model
from ralm_es.train.config import OptimSettings, TrainConfig, load_config
from ralm_es.train.loop import TrainError, train


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> AutoTokenizer:
    return AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)


def hit(i: int, text: str, score: float) -> CacheHit:
    return CacheHit(id=f"p{i}", doc_id=f"d{i}", rank=i + 1, score=score, text=text)


@pytest.fixture(scope="module")
def claims(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return claims_files(tmp_path_factory.mktemp("claims"), 40, 12)


def claims_config(folder: Path, data: dict[str, Path], model: Path, *sets: str) -> list[str]:
    path = ner_config(folder, data, model)
    return [str(path), "task.type=classification", "task.text_field=claim", "model.fusion=pair", *sets]


def load(args: list[str]) -> TrainConfig:
    return load_config(args[0], args[1:])


def test_a_pair_is_the_input_then_the_passage(tokenizer: AutoTokenizer) -> None:
    examples = [Example("a", ("aspirin", "lowers", "fever"), "f:1", label="A"), Example("b", ("x",), "f:2", label="A")]
    long_text = " ".join(["fever"] * 40)
    hits = [[hit(0, "aspirin reduces fever", 2.0), hit(1, long_text, 1.0)], []]
    spec = ModelSpec(task="classification", fusion="pair", k=3, max_length=16, passage_max_length=10)
    fs = build_features(examples, hits, tokenizer, spec, LabelMap(["A"]))
    batch = fs.batch([0, 1])
    assert batch[VALID].tolist() == [[True, True, False], [False, False, False]]
    ids, types, mask = batch["pair_input_ids"], batch["pair_token_type_ids"], batch["pair_attention_mask"]
    first = tokenizer("aspirin lowers fever", "aspirin reduces fever")["input_ids"]
    assert ids[0, 0, : len(first)].tolist() == first and mask[0, 0].sum() == len(first)
    assert (
        types[0, 0, : len(first)].tolist()
        == tokenizer("aspirin lowers fever", "aspirin reduces fever")["token_type_ids"]
    )
    # The long passage is cut to passage_max_length with its [CLS] and [SEP]: 8 tokens after the input's own.
    n = len(tokenizer("aspirin lowers fever")["input_ids"])
    assert mask[0, 1].sum() == n + 8 + 1 and ids[0, 1, n + 8].item() == tokenizer.sep_token_id
    assert mask[0, 2].sum() == 0 and mask[1].sum() == 0


def test_pair_fusion_is_for_classification_only(tokenizer: AutoTokenizer) -> None:
    ex = Example("s1", ("paris",), "f:1", tags=("B-LOC",))
    spec = ModelSpec(task="ner", fusion="pair")
    with pytest.raises(FusionError) as caught:
        build_features([ex], [[]], tokenizer, spec, LabelMap(["O", "B-LOC"]))
    assert str(caught.value) == "fusion 'pair' (model.fusion) is for classification tasks, not task.type ner"


def test_pair_mode_learns_and_explains_per_passage_weights(
    tmp_path: Path, claims: dict[str, Path], tiny_model_dir: Path
) -> None:
    result = train(load(claims_config(tmp_path, claims, tiny_model_dir, "train.max_steps=30")))
    seen = losses(result.out)
    assert result.finished and sum(seen[-5:]) < sum(seen[:5])
    runner = CliRunner()
    args = ["predict", "--model", str(result.out), str(claims["dev"]), "--cache", str(claims["dev_cache"])]
    out = runner.invoke(cli, [*args, "--json", "--explain"], catch_exceptions=False)
    records = [json.loads(line) for line in out.output.splitlines()]
    assert len(records) == 12
    for record in records:
        assert [p["rank"] for p in record["passages"]] == [1, 2, 3]
        (weights,) = record["weights"]
        assert len(weights) == 3 and sum(weights) == pytest.approx(1.0, abs=1e-4)
    text = runner.invoke(cli, [*args, "--explain", "--top", "2"], catch_exceptions=False).output.splitlines()
    first = records[0]
    ranked = sorted(range(3), key=lambda j: -first["weights"][0][j])[:2]
    assert text[4] == f"  {first['label']}: " + "  ".join(f"[{j + 1}] {first['weights'][0][j]:.3f}" for j in ranked)


def write_sparse_cache(path: Path, examples: list[Example], pool: list[Example], every: int) -> Path:
    """Hits as ``write_cache`` gives them for every ``every``-th example; none (an empty retrieval) for the rest."""
    _, entries = read_cache(write_cache(path.with_suffix(".full"), examples, pool))
    header, _ = read_cache(path.with_suffix(".full"))
    with CacheWriter(path, header) as writer:
        for i, ex in enumerate(examples):
            writer.write(ex.id, ex.text, entries[ex.id].hits if every and i % every == 0 else [])
    return path


def sparse_claims(folder: Path, claims: dict[str, Path]) -> dict[str, Path]:
    """``claims`` with caches in ``folder`` where half the training claims retrieved nothing and no dev claim
    retrieved anything."""
    train_ex = read_classification(claims["train"], text_field="claim")
    dev_ex = read_classification(claims["dev"], text_field="claim")
    return {
        **claims,
        "train_cache": write_sparse_cache(folder / "train.cache", train_ex, train_ex, every=2),
        "dev_cache": write_sparse_cache(folder / "dev.cache", dev_ex, train_ex, every=0),
    }


def test_inputs_without_passages_train_and_predict_in_pair_mode(
    tmp_path: Path, claims: dict[str, Path], tiny_model_dir: Path
) -> None:
    data = sparse_claims(tmp_path, claims)
    result = train(load(claims_config(tmp_path, data, tiny_model_dir, "train.max_steps=20")))
    seen = losses(result.out)
    assert result.finished and all(torch.isfinite(torch.tensor(seen)))
    assert sum(seen[-5:]) < sum(seen[:5])
    args = ["predict", "--model", str(result.out), str(claims["dev"]), "--cache", str(data["dev_cache"])]
    out = CliRunner().invoke(cli, [*args, "--json", "--explain"], catch_exceptions=False)
    records = [json.loads(line) for line in out.output.splitlines()]
    assert len(records) == 12 and all(r["label"] in {"SUPPORT", "CONTRADICT"} for r in records)
    assert all(r["passages"] == [] and r["weights"] == [[]] for r in records)
    # The text output says so, where it gave the label an empty list of weights.
    text = CliRunner().invoke(cli, [*args, "--explain"], catch_exceptions=False).output.splitlines()
    assert text[1::2] == ["  (no passages: retrieval found none for this input)"] * 12


def test_the_regularisers_are_off_by_default() -> None:
    settings = OptimSettings()
    assert settings.passage_dropout == 0 and settings.consistency_weight == 0


def test_passage_dropout_drops_slots_only() -> None:
    valid = torch.tensor([[True] * 8] * 4 + [[True, True, False, False, False, False, False, False]])
    batch = {VALID: valid, "passage_scores": torch.ones(5, 8)}
    dropped = drop_passages(batch, 0.5, torch.Generator().manual_seed(0))[VALID]
    assert not (dropped & ~valid).any() and 0 < dropped.sum() < valid.sum()
    assert torch.equal(drop_passages(batch, 0.0, torch.Generator().manual_seed(0))[VALID], valid)
    assert torch.equal(batch[VALID], valid)


@pytest.mark.parametrize("fusion", ["pair", "attention", "scores"])
def test_passage_dropout_and_consistency_change_training(
    fusion: str, tmp_path: Path, claims: dict[str, Path], tiny_model_dir: Path
) -> None:
    runs = {}
    for name, sets in {
        "plain": [],
        "dropout": ["train.passage_dropout=0.5"],
        "consistency": ["train.consistency_weight=1.0"],
    }.items():
        folder = tmp_path / name
        folder.mkdir()
        args = claims_config(folder, claims, tiny_model_dir, f"model.fusion={fusion}", "train.max_steps=4", *sets)
        runs[name] = losses(train(load(args)).out)
    # Same seed, data order and initial weights: only the setting differs.
    assert runs["dropout"] != pytest.approx(runs["plain"], abs=1e-6)
    assert runs["consistency"] != pytest.approx(runs["plain"], abs=1e-6)


def test_consistency_adds_the_kl_to_the_input_alone_prediction(
    tokenizer: AutoTokenizer, tiny_model_dir: Path, claims: dict[str, Path]
) -> None:
    examples = read_classification(claims["train"], text_field="claim")[:6]
    labels = LabelMap(["CONTRADICT", "SUPPORT"])
    hits = [[hit(i, f"drug {i} raises blood pressure in trials", 3.0 - i) for i in range(3)] for _ in examples]
    spec = ModelSpec(task="classification", fusion="pair", k=3, labels=tuple(labels.labels))
    batch = build_features(examples, hits, tokenizer, spec, labels).batch(range(6))
    torch.manual_seed(0)
    model = new_model(spec, str(tiny_model_dir)).eval()
    with torch.no_grad():
        plain, weighted = model(batch), model(batch, 0.5)
        alone = model({**batch, VALID: torch.zeros_like(batch[VALID])})
    p, q = plain.logits.log_softmax(-1), alone.logits.log_softmax(-1)
    kl = (p.exp() * (p - q)).sum(-1).mean()
    assert plain.loss is not None and weighted.loss is not None
    assert kl > 0 and weighted.loss.item() == pytest.approx(plain.loss.item() + 0.5 * kl.item(), abs=1e-6)


def test_a_dropped_attention_slot_gets_no_weight(tokenizer: AutoTokenizer, tiny_model_dir: Path) -> None:
    ex = Example("a", ("aspirin", "lowers", "fever"), "f:1", label="A")
    spec = ModelSpec(task="classification", fusion="attention", k=3, labels=("A", "B"))
    hits = [[hit(i, f"passage {i} about fever", 1.0) for i in range(3)]]
    batch = build_features([ex], hits, tokenizer, spec, LabelMap(["A", "B"])).batch([0])
    model = new_model(spec, str(tiny_model_dir)).eval()
    with torch.no_grad():
        weights = model({**batch, VALID: torch.tensor([[False, True, True]])}).passage_weights
    assert weights is not None and weights[0, 0, 0] == 0 and weights[0, 0, 1:].sum() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ["model.fusion=concat", "train.passage_dropout=0.2"],
            "train.passage_dropout needs a fusion mode with separate passages (attention, pair, scores), not 'concat'",
        ),
        (
            ["model.fusion=none", "train.consistency_weight=1"],
            "train.consistency_weight needs a fusion mode with separate passages (attention, pair, scores), not 'none'",
        ),
    ],
)
def test_regulariser_settings_that_cannot_apply_are_one_line(
    sets: list[str], message: str, tmp_path: Path, claims: dict[str, Path], tiny_model_dir: Path
) -> None:
    with pytest.raises(TrainError) as caught:
        train(load(claims_config(tmp_path, claims, tiny_model_dir, *sets)))
    assert str(caught.value) == message
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["train.passage_dropout=1"], "--set train.passage_dropout must be at least 0 and below 1, got 1.0"),
        (["train.consistency_weight=-1"], "--set train.consistency_weight must be 0 or more, got -1.0"),
    ],
)
def test_regulariser_values_out_of_range_are_refused_when_the_config_loads(
    sets: list[str], message: str, tmp_path: Path, claims: dict[str, Path], tiny_model_dir: Path
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(claims_config(tmp_path, claims, tiny_model_dir, *sets))
    assert str(caught.value) == message
    assert not (tmp_path / "run").exists()


def test_a_resumed_run_drops_the_same_passages(tmp_path: Path, claims: dict[str, Path], tiny_model_dir: Path) -> None:
    whole_dir, split_dir = tmp_path / "whole", tmp_path / "split"
    whole_dir.mkdir(), split_dir.mkdir()
    sets = ["train.max_steps=6", "train.passage_dropout=0.5"]
    whole = train(load(claims_config(whole_dir, claims, tiny_model_dir, *sets)))
    split = claims_config(split_dir, claims, tiny_model_dir, *sets)
    assert train(load(split), stop_after=3).steps == 3
    resumed = train(load([*split, "run.resume=true"]))
    assert resumed.steps == whole.steps == 6
    assert losses(split_dir / "run") == pytest.approx(losses(whole_dir / "run"), abs=1e-6)
