"""``model.concat_passages``: ``attention`` whose passages are also appended to the input as ``concat`` appends them;
on a tiny random BERT, with the frozen token store and with the shared encoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_pair_fusion import hit
from test_token_store import TOKENS, ner_files, trained_and_recorded
from test_train import losses, ner_config
from transformers import AutoTokenizer

from ralm_es.embed import Encoder
from ralm_es.inference.passages import FrozenPassages
from ralm_es.inference.runs import open_run, predict_file
from ralm_es.model.inputs import build_features
from ralm_es.model.spec import ModelSpec
from ralm_es.model.strategies import FusionError
from ralm_es.model.strategies.base import VALID
from ralm_es.model.token_store import TokenStore
from ralm_es.retrieve.cache import CacheHit
from ralm_es.tasks import Example, LabelMap
from ralm_es.train.config import load_config
from ralm_es.train.loop import TrainError, train

TAGS = LabelMap(["O", "B-PER", "B-LOC"])
CONTEXT = [*TOKENS, "model.concat_passages=true"]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> AutoTokenizer:
    return AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)


def story() -> tuple[list[Example], list[list[CacheHit]]]:
    examples = [
        Example("s1", ("Smith", "flew", "home"), "f:1", tags=("B-PER", "O", "O")),
        Example("s2", ("Paris",), "f:2", tags=("B-LOC",)),
    ]
    hits = [[hit(0, "John Smith visited Paris", 2.0), hit(1, " ".join(["report"] * 40), 1.0)], []]
    return examples, hits


def test_the_input_carries_the_passages_as_concat_has_them_and_the_slots_as_attention_has_them(
    tokenizer: AutoTokenizer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    examples, hits = story()
    encoder = Encoder(tiny_model_dir, device="cpu", max_length=16)
    frozen = FrozenPassages(encoder, TokenStore.open(tmp_path / "store", encoder.revision, encoder.dim, 16))
    common = {"task": "ner", "k": 3, "max_length": 24, "passage_max_length": 16, "labels": tuple(TAGS.labels)}
    both = ModelSpec(
        fusion="attention", passage_encoder="frozen", concat_passages=True, frozen_dim=encoder.dim, **common
    )
    attention = ModelSpec(fusion="attention", passage_encoder="frozen", frozen_dim=encoder.dim, **common)
    concat = ModelSpec(fusion="concat", **common)
    got = build_features(examples, hits, tokenizer, both, TAGS, frozen).batch([0, 1])
    as_concat = build_features(examples, hits, tokenizer, concat, TAGS).batch([0, 1])
    as_attention = build_features(examples, hits, tokenizer, attention, TAGS, frozen).batch([0, 1])

    for key in ("input_ids", "token_type_ids", "case_ids", "attention_mask", "labels"):
        assert got[key].tolist() == as_concat[key].tolist(), key
    for key in (VALID, "passage_scores", "passage_states", "passage_token_mask"):
        assert got[key].tolist() == as_attention[key].tolist(), key
    # The first passage whole after the input, the second cut to the room left within max_length 24.
    sep = tokenizer.sep_token_id
    first = tokenizer("John Smith visited Paris", add_special_tokens=False)["input_ids"]
    ids = got["input_ids"][0].tolist()
    assert ids[5 : 6 + len(first)] == [*first, sep] and len(ids) == 24 and ids[-1] == sep
    # Only the input's words are labelled; the sentence without hits is its input alone, with empty slots.
    assert (got["labels"][0, 5:] == -100).all()
    assert not got[VALID][1].any() and int(got["attention_mask"][1].sum()) == 3
    assert got["passage_states"].shape[:2] == (2, 3) and np.isfinite(got["passage_states"].numpy()).all()


def test_a_run_with_the_story_in_its_input_and_its_memory_learns_and_predicts_the_same_after_reload(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every third training sentence has no hits: those train on their input alone.
    sets = [*CONTEXT, f"model.token_store={tmp_path / 's'}"]
    data, result, evaluated, spec = trained_and_recorded(tmp_path, tiny_model_dir, monkeypatch, sets)
    assert spec.concat_passages and spec.passage_memory == "tokens"

    reloaded = predict_file(open_run(result.out, "cpu"), data["dev"], data["dev_cache"])[1]
    in_memory = evaluated[[6, 12].index(result.best_step)]
    assert [p.labels for p in reloaded] == [p.labels for p in in_memory]
    assert [p.weights for p in reloaded] == [p.weights for p in in_memory]
    # predict --explain still has a weight per passage, summing to one over each token's passages.
    assert all(sum(w) == pytest.approx(1.0, abs=1e-3) for p in reloaded for w in p.weights if w)

    # Without the appended passages the same weights predict otherwise: the run reads the story in its input.
    saved = json.loads((result.out / "model.json").read_text())
    (result.out / "model.json").write_text(json.dumps({**saved, "concat_passages": False}))
    apart = predict_file(open_run(result.out, "cpu"), data["dev"], data["dev_cache"])[1]
    assert [p.weights for p in apart] != [p.weights for p in reloaded]


def test_the_shared_encoder_takes_the_story_in_its_input_too(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = ner_files(tmp_path, empty_dev=False)
    cfg = load_config(ner_config(tmp_path, data, tiny_model_dir), ["model.concat_passages=true", "train.max_steps=6"])
    result = train(cfg)
    assert result.finished and all(loss == loss for loss in losses(result.out))
    predictions = predict_file(open_run(result.out, "cpu"), data["dev"], data["dev_cache"])[1]
    assert len(predictions) == 8 and all(p.weights for p in predictions)


@pytest.mark.parametrize("fusion", ["none", "concat"])
def test_concat_passages_with_a_mode_that_does_not_read_passages_apart_is_one_line(
    fusion: str, tokenizer: AutoTokenizer
) -> None:
    examples, hits = story()
    spec = ModelSpec(task="ner", fusion=fusion, concat_passages=True)
    with pytest.raises(FusionError) as caught:
        build_features(examples, hits, tokenizer, spec, TAGS)
    assert str(caught.value) == (
        f"model.concat_passages needs a fusion mode that reads the passages apart from the input (attention), "
        f"not '{fusion}'"
    )


@pytest.mark.parametrize("fusion", ["pair", "scores"])
def test_concat_passages_with_a_classification_mode_of_its_own_is_one_line(
    fusion: str, tokenizer: AutoTokenizer
) -> None:
    spec = ModelSpec(task="classification", fusion=fusion, concat_passages=True)
    with pytest.raises(FusionError, match=rf"apart from the input \(attention\), not '{fusion}'$"):
        build_features([Example("a", ("x",), "f:1", label="A")], [[]], tokenizer, spec, LabelMap(["A"]))


@pytest.mark.parametrize("setting", ["train.passage_dropout=0.2", "train.consistency_weight=1"])
def test_the_regularisers_that_clear_slots_are_refused_with_the_passages_in_the_input(
    setting: str, tmp_path: Path, tiny_model_dir: Path
) -> None:
    data = ner_files(tmp_path, empty_dev=False)
    with pytest.raises(TrainError) as caught:
        train(load_config(ner_config(tmp_path, data, tiny_model_dir), [*CONTEXT, setting]))
    name = setting.split("=")[0]
    assert str(caught.value) == (
        f"{name} needs a fusion mode with separate passages (attention, pair, scores), "
        "not 'attention' with model.concat_passages"
    )
    assert not (tmp_path / "run").exists()
