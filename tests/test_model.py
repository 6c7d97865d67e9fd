"""The model's parts: case ids, features (first-subword labels, truncation, concat budget), the attention fusion,
and the errors for model folders, config keys, caches and GPU memory."""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from ralm_es.config import ConfigError
from ralm_es.inference.checkpoint import load_run_model
from ralm_es.inference.passages import cached_hits
from ralm_es.model.fusion import PassageAttention, score_prior
from ralm_es.model.inputs import build_features
from ralm_es.model.labelling import IGNORE
from ralm_es.model.spec import Fusion, ModelSpec
from ralm_es.model.strategies import STRATEGIES, FusionError, fusion_strategy, ignored_settings
from ralm_es.model.tokens import CASE_DIGIT, CASE_LOWER, CASE_MIXED, CASE_TITLE, CASE_UPPER, case_of
from ralm_es.model_folder import ModelError
from ralm_es.retrieve.cache import CacheError, CacheHeader, CacheHit, CacheWriter, read_header
from ralm_es.store.base import EncoderRecord
from ralm_es.tasks import DataError, Example, LabelMap
from ralm_es.train.checkpoint import new_model
from ralm_es.train.config import OptimSettings, TrainConfig, load_config
from ralm_es.train.loop import TrainError, train
from ralm_es.train.optim import param_groups


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> AutoTokenizer:
    return AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)


def hit(i: int, text: str, score: float) -> CacheHit:
    return CacheHit(id=f"p{i}", doc_id=f"d{i}", rank=i + 1, score=score, text=text)


def test_case_classes() -> None:
    assert [case_of(w) for w in ["EU", "Peter", "A", "rejects", "McDonald", "1996-08-22"]] == [
        CASE_UPPER,
        CASE_TITLE,
        CASE_TITLE,
        CASE_LOWER,
        CASE_MIXED,
        CASE_DIGIT,
    ]


def test_ner_features_label_first_subwords_and_count_truncation(tokenizer: AutoTokenizer) -> None:
    words = ("Blackburnshire", "rejects", "EU")
    ex = Example("s1", words, "f:1", tags=("B-LOC", "O", "B-ORG"))
    labels = LabelMap(["O", "B-LOC", "B-ORG"])
    fs = build_features([ex], [[]], tokenizer, ModelSpec(task="ner", fusion="none", max_length=64), labels)
    f = fs.features[0]
    pieces = tokenizer(list(words), is_split_into_words=True, add_special_tokens=False).word_ids()
    first = [pieces.index(w) + 1 for w in range(3)]
    assert f.word_starts == first
    assert [f.labels[p] for p in first] == [1, 0, 2]
    assert sum(label != IGNORE for label in f.labels) == 3
    assert f.case_ids[first[0]] == CASE_TITLE and f.case_ids[first[2]] == CASE_UPPER
    assert fs.truncated == 0
    short = build_features([ex], [[]], tokenizer, ModelSpec(task="ner", fusion="none", max_length=4), labels)
    assert short.truncated == 1 and len(short.features[0].input_ids) == 4
    assert short.features[0].word_starts[-1] == -1


def test_concat_appends_passages_within_the_budget(tokenizer: AutoTokenizer) -> None:
    ex = Example("s1", ("paris", "is", "big"), "f:1", label="A")
    hits = [hit(i, "the capital of france has many museums and bridges", 1.0) for i in range(4)]
    spec = ModelSpec(task="classification", fusion="concat", k=4, max_length=24)
    f = build_features([ex], [hits], tokenizer, spec, LabelMap(["A"])).features[0]
    assert len(f.input_ids) <= 24
    sep = tokenizer.sep_token_id
    assert f.input_ids.count(sep) >= 2 and f.token_type_ids[-1] == 1
    assert f.input_ids[: f.input_ids.index(sep) + 1] == tokenizer("paris is big")["input_ids"]


def test_attention_weights_follow_masks_and_the_score_prior() -> None:
    torch.manual_seed(0)
    fusion = PassageAttention(hidden=8, heads=2, dropout=0.0).eval()
    query, memory = torch.randn(2, 3, 8), torch.randn(2, 4, 8)
    valid = torch.tensor([[True, True, True, False], [False, False, False, False]])
    prior = score_prior(torch.tensor([[3.0, 1.0, 2.0, 9.0], [1.0, 2.0, 3.0, 4.0]]), valid)
    fused, weights = fusion(query, memory, valid, prior)
    assert weights.shape == (2, 3, 4)
    assert torch.allclose(weights[0].sum(-1), torch.ones(3)) and torch.all(weights[0, :, 3] == 0)
    # No passages at all: nothing attended, the residual alone.
    assert torch.all(weights[1] == 0)
    assert torch.allclose(fused[1], fusion.norm(query[1]), atol=1e-6)
    # With content logits silenced, the retrieval prior alone orders the weights.
    torch.nn.init.zeros_(fusion.q.weight), torch.nn.init.zeros_(fusion.q.bias)
    _, weights = fusion(query, memory, valid, prior)
    assert weights[0, 0, 0] > weights[0, 0, 2] > weights[0, 0, 1]


def test_run_and_encoder_folders_without_weights(tmp_path: Path, tiny_model_dir: Path) -> None:
    empty = tmp_path / "encoder"
    empty.mkdir()
    (empty / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    with pytest.raises(ModelError, match=rf"model folder {empty} has no weights"):
        new_model(ModelSpec(task="ner", labels=("O",)), str(empty))
    with pytest.raises(ModelError, match=rf"{tmp_path} is not a ralm-es run folder"):
        load_run_model(tmp_path, torch.device("cpu"))
    (tmp_path / "model.json").write_text("{}")
    with pytest.raises(ModelError, match=rf"run folder {tmp_path} has no weights \(model.safetensors\)"):
        load_run_model(tmp_path, torch.device("cpu"))
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "model.json").write_text('{"task": "ner", "frozen_encoder": null}')
    with pytest.raises(ModelError, match=r"model.json was not written by this version of ralm-es: .*'frozen_encoder'"):
        load_run_model(tmp_path, torch.device("cpu"))


def test_unknown_config_key_lists_close_matches(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  fuson: attention\n")
    with pytest.raises(ConfigError, match=r"unknown setting 'fuson'; did you mean fusion\?"):
        load_config(path)
    path.write_text("model:\n  fusion: attention\n")
    with pytest.raises(
        ConfigError, match=r"--set train.batchsize: unknown setting 'batchsize'; did you mean batch_size"
    ):
        load_config(path, ["train.batchsize=8"])
    with pytest.raises(ConfigError, match=r"expected one of none, concat, attention, pair"):
        load_config(path, ["model.fusion=sum"])


def test_a_cache_whose_header_names_no_runtime_resumes_under_torch(tmp_path: Path) -> None:
    # Caches written before the runtime was recorded: their vectors came from torch.
    cache = tmp_path / "cache.jsonl"
    old = {
        "format": "ralm-es-retrieval-cache",
        "version": 1,
        "index": "i",
        "mode": "dense",
        "k": 2,
        "encoder": {"name": "toy", "revision": "abc123", "dim": 32, "pooling": "mean", "path": "/m"},
    }
    cache.write_text(json.dumps(old) + "\n", encoding="utf-8")
    torch_encoder = EncoderRecord(name="toy", revision="abc123", dim=32, pooling="mean", path="/m", runtime="torch")
    assert read_header(cache).encoder == torch_encoder
    with CacheWriter(cache, CacheHeader(index="i", mode="dense", k=2, encoder=torch_encoder)) as writer:
        writer.write("a", "text a", [hit(0, "x", 1.0)])
    onnx = CacheHeader(index="i", mode="dense", k=2, encoder=replace(torch_encoder, runtime="onnx-int8"))
    with pytest.raises(CacheError), CacheWriter(cache, onnx):
        pass


def test_missing_cache_entries_are_named(tmp_path: Path) -> None:
    cache = tmp_path / "cache.jsonl"
    with CacheWriter(cache, CacheHeader(index="i", mode="bm25", k=2)) as writer:
        writer.write("a", "text a", [hit(0, "x", 1.0)])
    examples = [Example(i, ("w",), "f:1") for i in ("a", "b", "c")]
    spec = ModelSpec(task="ner", fusion="attention", k=2)
    with pytest.raises(CacheError, match=r"no retrieval for 2 example\(s\): b, c"):
        cached_hits(examples, cache, spec, "train")
    with pytest.raises(ValueError, match=r"fusion 'attention' needs retrieved passages: set data.dev_cache"):
        cached_hits(examples, None, spec, "dev")
    assert cached_hits(examples, None, ModelSpec(task="ner", fusion="none"), "dev") == [[], [], []]


def test_a_model_k_past_the_caches_k_is_refused(tmp_path: Path) -> None:
    cache = tmp_path / "cache.jsonl"
    with CacheWriter(cache, CacheHeader(index="i", mode="bm25", k=2)) as writer:
        writer.write("a", "w", [hit(0, "x", 1.0), hit(1, "y", 0.5)])
    examples = [Example("a", ("w",), "f:1")]
    with pytest.raises(DataError) as err:
        cached_hits(examples, cache, ModelSpec(task="ner", fusion="attention", k=3), "train")
    assert str(err.value) == (
        f"{cache}: model.k is 3, but this cache holds at most 2 hits an input; retrieve with -k 3, or set model.k "
        "to 2 or less"
    )
    hits = cached_hits(examples, cache, ModelSpec(task="ner", fusion="attention", k=2), "train")
    assert [h.id for h in hits[0]] == ["p0", "p1"]


def test_cuda_out_of_memory_names_the_batch_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    def out_of_memory(*args: object, **kwargs: object) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr("ralm_es.train.loop._train", out_of_memory)
    cfg = TrainConfig()
    with pytest.raises(TrainError, match=r"CUDA out of memory with train.batch_size=16 \(train.grad_accum=1"):
        train(cfg)


CONFIGS = Path(__file__).parents[1] / "configs"


@pytest.mark.parametrize(
    "path",
    [CONFIGS / "conll_ner.yaml", CONFIGS / "scifact_claims.yaml", *sorted(CONFIGS.glob("sample_*.yaml"))],
    ids=lambda p: p.name,
)
def test_shipped_configs_load(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.data.train and cfg.model.fusion in typing.get_args(Fusion)


def test_optimizer_groups_spare_biases_and_layernorm_from_decay(tiny_model_dir: Path) -> None:
    model = new_model(ModelSpec(task="ner", labels=("O", "B-X"), fusion="attention"), str(tiny_model_dir))
    groups = param_groups(model, OptimSettings(lr=1e-5, head_lr=1e-3, weight_decay=0.1))
    names = {id(p): n for n, p in model.named_parameters()}
    by_name = {names[id(p)]: (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    assert len(by_name) == len(names)
    assert by_name["encoder.embeddings.LayerNorm.weight"] == (1e-5, 0.0)
    assert by_name["encoder.encoder.layer.0.attention.self.query.bias"] == (1e-5, 0.0)
    assert by_name["encoder.encoder.layer.0.attention.self.query.weight"] == (1e-5, 0.1)
    assert by_name["head.weight"] == (1e-3, 0.1) and by_name["fusion.norm.weight"] == (1e-3, 0.0)
    assert groups[0]["lr"] == 1e-5


def test_every_fusion_mode_the_config_accepts_has_a_strategy(tmp_path: Path) -> None:
    modes = typing.get_args(Fusion)
    assert set(STRATEGIES) == set(modes)
    assert all(fusion_strategy(mode).name == mode for mode in modes)
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  fusion: none\n")
    assert [load_config(path, [f"model.fusion={mode}"]).model.fusion for mode in modes] == list(modes)


def test_settings_the_fusion_mode_does_not_read_are_named() -> None:
    # The documented baseline: the attention config with --set model.fusion=none.
    config = Path(__file__).parents[1] / "configs" / "conll_ner.yaml"
    assert ignored_settings(load_config(config).model) is None
    assert ignored_settings(load_config(config, ["model.fusion=none"]).model) == (
        "fusion none does not read model.passage_encoder=frozen (read by attention): ignored"
    )
    assert ignored_settings(load_config(config, ["model.fusion=pair", "model.heads=2", "model.k=4"]).model) == (
        "fusion pair does not read model.passage_encoder=frozen (read by attention): ignored"
    )
    assert ignored_settings(load_config(config, ["model.fusion=scores", "model.heads=2"]).model) == (
        "fusion scores does not read model.passage_encoder=frozen (read by attention); model.heads=2 (read by "
        "attention, pair): ignored"
    )


def test_an_unknown_fusion_mode_is_one_line_naming_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(FusionError) as caught:
        fusion_strategy("late")
    expected = "unknown fusion mode 'late' (model.fusion); expected one of none, concat, attention, pair, scores"
    assert str(caught.value) == expected
    # A run folder from a version with more modes.
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "model.json").write_text('{"task": "ner", "fusion": "late"}')
    with pytest.raises(ModelError) as loaded:
        load_run_model(tmp_path, torch.device("cpu"))
    message = str(loaded.value)
    assert message.startswith(f"{tmp_path / 'model.json'} was not written by this version") and "\n" not in message
    assert message.endswith("model.fusion must be one of none, concat, attention, pair, scores, got 'late'")


def test_the_spec_is_frozen_and_round_trips_through_json() -> None:
    spec = ModelSpec(task="ner", fusion="attention", labels=("O", "B-X"), frozen_dim=32)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.labels = ("O",)  # type: ignore[misc]
    assert ModelSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
