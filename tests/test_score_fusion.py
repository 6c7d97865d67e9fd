"""The ``scores`` fusion mode: retrieval signals (fused, BM25 and dense scores) of the k hits added to the pooled
input, on a tiny random BERT."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from test_pair_fusion import claims_config, load, sparse_claims
from test_train import claims_files, losses, record_evaluations
from transformers import AutoTokenizer

from ralm_es.embed import Encoder
from ralm_es.inference.runs import open_run, predict_file
from ralm_es.model.inputs import build_features
from ralm_es.model.spec import ModelSpec, ScoreScale
from ralm_es.model.strategies import FusionError
from ralm_es.model.strategies.base import VALID
from ralm_es.retrieve.cache import CacheHeader, CacheHit, CacheWriter, read_cache
from ralm_es.retrieve.retriever import RetrievalSettings, Retriever
from ralm_es.serve.predictor import Predictor
from ralm_es.store.base import EncoderRecord
from ralm_es.store.local import LocalBackend
from ralm_es.tasks import DataError, Example, LabelMap
from ralm_es.train.checkpoint import new_model
from ralm_es.train.loop import train

LABELS = LabelMap(["CONTRADICT", "SUPPORT"])


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> AutoTokenizer:
    return AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)


@pytest.fixture(scope="module")
def claims(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return claims_files(tmp_path_factory.mktemp("claims"), 40, 12)


def scored(i: int, fused: float, bm25: float | None, dense: float | None) -> CacheHit:
    return CacheHit(id=f"p{i}", doc_id=f"d{i}", rank=i + 1, score=fused, scores={"bm25": bm25, "dense": dense})


def test_each_hit_gives_its_scores_and_which_component_found_it(tokenizer: AutoTokenizer) -> None:
    examples = [
        Example("a", ("aspirin", "lowers", "fever"), "f:1", label="SUPPORT"),
        Example("b", ("x",), "f:2", label="SUPPORT"),
    ]
    hits = [[scored(0, 0.03, 20.0, 0.8), scored(1, 0.016, None, 0.7)], []]
    spec = ModelSpec(task="classification", fusion="scores", k=3)
    batch = build_features(examples, hits, tokenizer, spec, LABELS).batch([0, 1])
    assert batch[VALID].tolist() == [[True, True, False], [False, False, False]]
    signals = batch["passage_signals"]
    assert signals.shape == (2, 3, 5)
    assert signals[0, 0].tolist() == pytest.approx([0.03, math.log1p(20.0), 0.8, 1.0, 1.0])
    # Found by the dense search alone: no BM25 score, and its flag says so.
    assert signals[0, 1].tolist() == pytest.approx([0.016, 0.0, 0.7, 0.0, 1.0])
    assert not signals[0, 2].any() and not signals[1].any()


def test_score_fusion_is_for_classification_only(tokenizer: AutoTokenizer) -> None:
    ex = Example("s1", ("paris",), "f:1", tags=("B-LOC",))
    with pytest.raises(FusionError) as caught:
        build_features([ex], [[]], tokenizer, ModelSpec(task="ner", fusion="scores"), LabelMap(["O", "B-LOC"]))
    assert str(caught.value) == "fusion 'scores' (model.fusion) is for classification tasks, not task.type ner"


def test_the_signals_reach_the_prediction_once_trained_and_not_before(
    tokenizer: AutoTokenizer, tiny_model_dir: Path
) -> None:
    examples = [Example(f"c{i}", ("drug", "lowers", "pressure"), f"f:{i}", label="SUPPORT") for i in range(4)]
    strong = [[scored(j, 0.03, 30.0, 0.9) for j in range(3)]] * 2
    weak = [[scored(j, 0.01, 2.0, 0.2) for j in range(3)]] * 2
    spec = ModelSpec(task="classification", fusion="scores", k=3, labels=tuple(LABELS.labels))
    batch = build_features(examples, strong + weak, tokenizer, spec, LABELS).batch(range(4))
    torch.manual_seed(0)
    model = new_model(spec, str(tiny_model_dir)).eval()
    with torch.no_grad():
        before = model(batch).logits
    # The MLP's last layer starts at zero: the same input reads the same whatever its scores.
    assert torch.allclose(before[0], before[2], atol=1e-6)
    torch.nn.init.normal_(model.get_submodule("score_mlp")[-1].weight, std=0.1)
    with torch.no_grad():
        after = model(batch).logits
    assert torch.allclose(after[0], after[1], atol=1e-6) and not torch.allclose(after[0], after[2], atol=1e-3)


def test_an_example_without_passages_leaves_the_normalisation_alone(
    tokenizer: AutoTokenizer, tiny_model_dir: Path
) -> None:
    examples = [Example(f"c{i}", ("drug", "lowers", "pressure"), f"f:{i}", label="SUPPORT") for i in range(3)]
    hits = [[scored(0, 0.03, 30.0, 0.9)], [scored(0, 0.01, 2.0, 0.2)], []]
    spec = ModelSpec(task="classification", fusion="scores", k=2, labels=tuple(LABELS.labels))
    batch = build_features(examples, hits, tokenizer, spec, LABELS).batch(range(3))
    model = new_model(spec, str(tiny_model_dir)).train()
    norm = model.get_submodule("score_norm")
    model({**batch, VALID: torch.zeros_like(batch[VALID])})
    assert norm.num_batches_tracked.item() == 0 and not norm.running_mean.any()
    model(batch)
    # Two examples had passages: their batch statistics, not the empty third's, moved the running mean.
    assert norm.num_batches_tracked.item() == 1
    expected = 0.1 * torch.tensor([0.02, (math.log1p(30.0) + math.log1p(2.0)) / 2, 0.55, 1.0, 1.0, 0, 0, 0, 0, 0])
    assert norm.running_mean.tolist() == pytest.approx(expected.tolist(), abs=1e-6)
    # A training batch with a single example that has passages still runs, on the running statistics.
    one = {**batch, VALID: torch.tensor([[True, False], [False, False], [False, False]])}
    assert torch.isfinite(model(one).logits).all() and norm.num_batches_tracked.item() == 1


def test_scores_mode_learns_and_predicts_the_same_after_reload(
    tmp_path: Path, claims: dict[str, Path], tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The dev predictions of the model in memory, at each evaluation of the loop (every 6 steps).
    evaluated = record_evaluations(monkeypatch)
    result = train(load(claims_config(tmp_path, claims, tiny_model_dir, "model.fusion=scores", "train.max_steps=30")))
    monkeypatch.undo()
    seen = losses(result.out)
    assert result.finished and sum(seen[-5:]) < sum(seen[:5])
    reloaded = predict_file(open_run(result.out, "cpu"), claims["dev"], claims["dev_cache"])[1]
    in_memory = evaluated[result.best_step // 6 - 1]
    assert [(p.labels, p.probability) for p in reloaded] == [(p.labels, p.probability) for p in in_memory]
    # The normalisation's running statistics came back with the weights: another set of them predicts otherwise.
    run = open_run(result.out, "cpu")
    run.model.get_submodule("score_norm").running_mean.zero_()
    moved = predict_file(run, claims["dev"], claims["dev_cache"])[1]
    assert [p.probability for p in moved] != [p.probability for p in reloaded]


def test_inputs_without_passages_train_and_predict_in_scores_mode(
    tmp_path: Path, claims: dict[str, Path], tiny_model_dir: Path
) -> None:
    data = sparse_claims(tmp_path, claims)
    result = train(load(claims_config(tmp_path, data, tiny_model_dir, "model.fusion=scores", "train.max_steps=20")))
    seen = losses(result.out)
    assert result.finished and all(torch.isfinite(torch.tensor(seen)))
    predictions = predict_file(open_run(result.out, "cpu"), claims["dev"], data["dev_cache"])[1]
    assert len(predictions) == 12 and all(p.labels in {"SUPPORT", "CONTRADICT"} for p in predictions)
    assert all(p.probability is not None and 0 < p.probability <= 1 for p in predictions)


def test_attention_with_score_signals_carries_both_and_still_explains(
    tmp_path: Path, claims: dict[str, Path], tiny_model_dir: Path, tokenizer: AutoTokenizer
) -> None:
    ex = Example("a", ("aspirin", "lowers", "fever"), "f:1", label="SUPPORT")
    spec = ModelSpec(task="classification", fusion="attention", k=2, score_signals=True, labels=tuple(LABELS.labels))
    batch = build_features([ex], [[scored(0, 0.03, 20.0, 0.8)]], tokenizer, spec, LABELS).batch([0])
    assert "passage_input_ids" in batch and batch["passage_signals"][0, 0, :3].tolist() == pytest.approx(
        [0.03, math.log1p(20.0), 0.8]
    )
    model = new_model(spec, str(tiny_model_dir))
    assert {"fusion", "score_norm", "score_mlp"} <= {name for name, _ in model.named_children()}

    sets = ["model.fusion=attention", "model.score_signals=true", "train.max_steps=30"]
    result = train(load(claims_config(tmp_path, claims, tiny_model_dir, *sets)))
    seen = losses(result.out)
    assert result.finished and sum(seen[-5:]) < sum(seen[:5])
    run = open_run(result.out, "cpu")
    assert run.model.spec.score_signals
    predictions = predict_file(run, claims["dev"], claims["dev_cache"])[1]
    # The attention weights pass through the signals untouched: one per passage, summing to 1.
    assert all(p.weights is not None and sum(p.weights[0]) == pytest.approx(1.0, abs=1e-4) for p in predictions)


@pytest.mark.parametrize("fusion", ["none", "concat", "scores"])
def test_score_signals_without_a_mode_that_reads_passage_slots_is_one_line(
    fusion: str, tokenizer: AutoTokenizer
) -> None:
    ex = Example("a", ("aspirin",), "f:1", label="SUPPORT")
    spec = ModelSpec(task="classification", fusion=fusion, score_signals=True)
    with pytest.raises(FusionError) as caught:
        build_features([ex], [[]], tokenizer, spec, LABELS)
    assert str(caught.value) == (
        f"model.score_signals needs a fusion mode with separate passages (attention, pair), not '{fusion}'"
    )


def test_a_run_that_reads_scores_refuses_hits_of_another_retrieval(
    tmp_path: Path, claims: dict[str, Path], tiny_model_dir: Path, tiny_encoder: Encoder
) -> None:
    result = train(load(claims_config(tmp_path, claims, tiny_model_dir, "model.fusion=scores", "train.max_steps=2")))
    run = open_run(result.out, "cpu")
    # The fixture's caches are BM25 retrieval: the run recorded that scale.
    assert run.model.spec.score_scale == ScoreScale(mode="bm25", fusion={"title_boost": 1.0}, encoder=None)
    _, entries = read_cache(claims["dev_cache"])
    hybrid = tmp_path / "hybrid.cache"
    fusion = RetrievalSettings(mode="hybrid").fusion_header()
    header = CacheHeader(index="test", mode="hybrid", k=3, fusion=fusion, encoder=EncoderRecord(revision="abc123"))
    with CacheWriter(hybrid, header) as writer:
        for entry in entries.values():
            writer.write(entry.input_id, entry.query, entry.hits)
    with pytest.raises(DataError) as caught:
        predict_file(run, claims["dev"], hybrid)
    assert str(caught.value) == (
        f"{hybrid}: retrieval mode hybrid (fusion rrf, depth 50, num_candidates 100, title_boost 1.0, rrf_k 60.0, "
        "dense_weight 0.5), encoder abc123, but the run reads scores on the scale of its training retrieval, mode "
        "bm25 (title_boost 1.0): retrieve with those settings"
    )
    # A live retriever is checked the same way when the service starts; one of the same scale is taken.
    backend = LocalBackend(tmp_path / "index")
    with pytest.raises(DataError) as caught:
        Predictor(run, Retriever(backend, None, RetrievalSettings(mode="hybrid")))
    assert str(caught.value) == (
        f"the live retriever for {run.folder}: retrieval mode hybrid (fusion rrf, depth 50, num_candidates 100, "
        "title_boost 1.0, rrf_k 60.0, dense_weight 0.5), but the run reads scores on the scale of its training "
        "retrieval, mode bm25 (title_boost 1.0): retrieve with those settings"
    )
    same = Retriever(backend, None, RetrievalSettings(mode="bm25"))
    assert Predictor(run, same).retriever is same
    # BM25 with the title weighted otherwise scores on another scale too.
    with pytest.raises(DataError, match=r"mode bm25 \(title_boost 20\.0\), but the run reads scores"):
        Predictor(run, Retriever(backend, None, RetrievalSettings(mode="bm25", title_boost=20.0)))
    # BM25 encodes no query, so a BM25 retriever that holds an encoder (with_settings shares a hybrid retriever's)
    # has the same scale.
    hybrid_retriever = Retriever(backend, tiny_encoder, RetrievalSettings(mode="hybrid"))
    with pytest.raises(DataError):
        Predictor(run, hybrid_retriever)
    bm25_retriever = hybrid_retriever.with_settings(RetrievalSettings(mode="bm25"))
    assert Predictor(run, bm25_retriever).retriever is bm25_retriever


def test_a_mode_that_does_not_read_scores_records_no_scale(
    tmp_path: Path, claims: dict[str, Path], tiny_model_dir: Path
) -> None:
    result = train(load(claims_config(tmp_path, claims, tiny_model_dir, "model.fusion=pair", "train.max_steps=1")))
    assert open_run(result.out, "cpu").model.spec.score_scale is None
