"""The on-disk store of frozen passage token states: it round-trips, grows by new passage ids only, refuses another
encoder's store, and a run trained on it (``passage_encoder: frozen``, ``passage_memory: tokens``) predicts the same
after reload."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from elasticsearch import Elasticsearch
from test_train import losses, ner_config, record_evaluations, write_cache, write_conll

from ralm_es.config import ConfigError
from ralm_es.embed import Encoder
from ralm_es.inference.runs import open_run, predict_file
from ralm_es.model.labelling import Prediction
from ralm_es.model.spec import ModelSpec
from ralm_es.model.token_store import TokenStore, TokenStoreError
from ralm_es.model.tokens import (
    CASE_DIGIT,
    CASE_LOWER,
    CASE_MIXED,
    CASE_OTHER,
    CASE_PAD,
    CASE_TITLE,
    CASE_UPPER,
    stored_token_cases,
)
from ralm_es.model_folder import ModelError
from ralm_es.retrieve.cache import CacheHeader, CacheWriter
from ralm_es.retrieve.retriever import RetrievalSettings, Retriever
from ralm_es.serve.predictor import PredictInput, Predictor
from ralm_es.store.elastic import ElasticsearchBackend
from ralm_es.tasks.ner import read_ner
from ralm_es.train.config import load_config
from ralm_es.train.loop import RunResult, train

TEXTS = {
    "doc1#0": "John Smith visited Paris on Monday .",
    "doc2#0": "Shares of Acme Corp fell in London after the long report was published by the European Commission .",
    "doc3#0": "Reuters",
}
TOKENS = ["model.passage_encoder=frozen", "model.passage_memory=tokens"]
CASED = [*TOKENS, "model.passage_case_features=true"]


class Counting:
    """An encoder that records which texts it was asked to encode."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.seen: list[str] = []

    def token_states(self, texts: Sequence[str], batch_size: int = 64) -> list[np.ndarray]:
        self.seen += texts
        return self.encoder.token_states(texts, batch_size)


@pytest.fixture(scope="module")
def encoder(tiny_model_dir: Path) -> Encoder:
    return Encoder(tiny_model_dir, device="cpu", max_length=16)


def stored_ids(store: Path) -> set[str]:
    """The passage ids a store holds states of (its keys are ``id@text-digest``)."""
    return {key.rpartition("@")[0] for key in json.loads((store / "index.json").read_text())}


def open_store(folder: Path, encoder: Encoder) -> TokenStore:
    return TokenStore.open(folder, encoder.revision, encoder.dim, encoder.max_length)


def test_the_store_gives_back_the_encoders_fp16_token_states(tmp_path: Path, encoder: Encoder) -> None:
    ids, texts = list(TEXTS), list(TEXTS.values())
    expected = encoder.token_states(texts, batch_size=2)
    store = open_store(tmp_path / "store", encoder)
    assert store.extend(ids, texts, encoder, batch_size=2) == 3
    reopened = open_store(tmp_path / "store", encoder)
    lengths = [min(16, len(tokens)) for tokens in encoder.tokenizer(texts)["input_ids"]]
    for got in (store.get(ids), reopened.get(ids)):
        assert [a.shape for a in got] == [(n, 32) for n in lengths]
        assert all(a.dtype == np.float16 for a in got)
        assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
    # Any order, any subset: each id's own states.
    assert np.array_equal(reopened.get(["doc3#0"])[0], expected[2])
    manifest = json.loads((tmp_path / "store" / "manifest.json").read_text())
    assert manifest["revision"] == encoder.revision and manifest["count"] == 3 and manifest["dtype"] == "float16"
    with pytest.raises(TokenStoreError, match=r"has no states for passage 'doc9#0'"):
        reopened.get(["doc1#0", "doc9#0"])


def test_extending_encodes_only_the_ids_not_stored(tmp_path: Path, encoder: Encoder) -> None:
    store = open_store(tmp_path / "store", encoder)
    counting = Counting(encoder)
    assert store.extend(["doc1#0", "doc2#0"], [TEXTS["doc1#0"], TEXTS["doc2#0"]], counting) == 2
    before = store.get(["doc1#0", "doc2#0"])
    # Rows an interrupted extend wrote without indexing them.
    with (tmp_path / "store" / "states.f16").open("ab") as fh:
        fh.write(b"\x01" * 100)
    # Another process's view of the same folder, extended with one known and one new passage.
    other = open_store(tmp_path / "store", encoder)
    assert other.extend(["doc2#0", "doc3#0", "doc3#0"], [TEXTS["doc2#0"], TEXTS["doc3#0"], TEXTS["doc3#0"]], counting)
    assert counting.seen == [TEXTS["doc1#0"], TEXTS["doc2#0"], TEXTS["doc3#0"]]
    # The first handle sees what the other added before adding anything itself.
    assert store.extend(list(TEXTS), list(TEXTS.values()), counting) == 0
    assert len(store) == 3 and counting.seen == [TEXTS["doc1#0"], TEXTS["doc2#0"], TEXTS["doc3#0"]]
    after = store.get(["doc1#0", "doc2#0"])
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    assert np.array_equal(store.get(["doc3#0"])[0], encoder.token_states([TEXTS["doc3#0"]])[0])
    rows = sum(len(a) for a in store.get(list(TEXTS)))
    assert (tmp_path / "store" / "states.f16").stat().st_size == rows * 32 * 2


def test_a_store_of_another_encoder_or_length_is_refused(tmp_path: Path, encoder: Encoder) -> None:
    folder = tmp_path / "store"
    TokenStore.open(folder, "0123456789abcdef", encoder.dim, 16)
    with pytest.raises(TokenStoreError) as refused:
        open_store(folder, encoder)
    message = str(refused.value)
    assert "\n" not in message
    assert f"token store {folder} was made by encoder revision 0123456789abcdef" in message
    assert f"this frozen encoder, revision {encoder.revision}" in message
    TokenStore.open(tmp_path / "short", encoder.revision, encoder.dim, 8)
    with pytest.raises(
        TokenStoreError, match=r"passage_max_length 8, fp32 states\), not by .* passage_max_length 16, fp32"
    ):
        open_store(tmp_path / "short", encoder)


def trained_and_recorded(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, sets: list[str]
) -> tuple[dict[str, Path], RunResult, list[list[Prediction]], ModelSpec]:
    """A run trained on ``ner_files`` with ``sets``, whose loss fell; its data, the dev predictions of the model in
    memory at each evaluation, and its saved spec."""
    data = ner_files(tmp_path, empty_dev=False)
    evaluated = record_evaluations(monkeypatch)
    result = train(load_config(ner_config(tmp_path, data, tiny_model_dir), sets))
    monkeypatch.undo()
    seen = losses(result.out)
    assert result.finished and sum(seen[-3:]) / 3 < sum(seen[:3]) / 3
    return data, result, evaluated, ModelSpec.from_json(json.loads((result.out / "model.json").read_text()))


def test_a_run_on_stored_tokens_learns_and_predicts_the_same_after_reload(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    data, result, evaluated, spec = trained_and_recorded(
        tmp_path, tiny_model_dir, monkeypatch, [*TOKENS, f"model.token_store={store}"]
    )
    assert (spec.passage_memory, spec.token_store, spec.frozen_dim) == ("tokens", str(store), 32)
    # Each distinct passage text once, under the id of its first hit.
    texts = {hit["id"]: hit["text"] for split in ("train_cache", "dev_cache") for hit in hits_of(data[split])}
    stored = {key.rpartition("@")[0] for key in TokenStore.open(store, spec.frozen_revision, 32, 16).index}
    assert stored <= set(texts) and {texts[i] for i in stored} == set(texts.values())
    stored_bytes = (store / "states.f16").stat().st_size

    reloaded = predict_file(open_run(result.out, "cpu"), data["dev"], data["dev_cache"])[1]
    in_memory = evaluated[[6, 12].index(result.best_step)]
    assert [p.labels for p in reloaded] == [p.labels for p in in_memory]
    assert [p.weights for p in reloaded] == [p.weights for p in in_memory]
    # Every passage was already stored: predicting encoded nothing new.
    assert (store / "states.f16").stat().st_size == stored_bytes
    # The run names the frozen encoder it was trained with; an encoder folder of other weights is refused.
    saved = json.loads((result.out / "model.json").read_text())
    (result.out / "model.json").write_text(json.dumps({**saved, "frozen_revision": "ffffffffffffffff"}))
    with pytest.raises(ModelError, match=rf"is revision {spec.frozen_revision}, but the run was trained with frozen "):
        predict_file(open_run(result.out, "cpu"), data["dev"], data["dev_cache"])


def test_serving_extends_the_store_with_live_passages(
    tmp_path: Path, tiny_model_dir: Path, tiny_encoder: Encoder, es_client: Elasticsearch, sample_index: str
) -> None:
    data = ner_files(tmp_path, empty_dev=False)
    store = tmp_path / "store"
    sets = [*TOKENS, f"model.token_store={store}", "train.max_steps=2", "data.dev=null", "data.dev_cache=null"]
    run = train(load_config(ner_config(tmp_path, data, tiny_model_dir), sets)).out
    trained = stored_ids(store)
    retriever = Retriever(ElasticsearchBackend(es_client, sample_index), tiny_encoder, RetrievalSettings(mode="bm25"))
    inputs = [PredictInput(words=["Paris", "is", "in", "France"]), PredictInput(words=["Acme", "hired", "John"])]
    first = Predictor.open(run, retriever, device="cpu").predict(inputs, explain=True)
    live = {p["id"] for record in first for p in record.passages or []}
    assert live and live.isdisjoint(trained) and stored_ids(store) == trained | live
    # A fresh predictor reads the same states back: the same tags and passage weights.
    assert Predictor.open(run, retriever, device="cpu").predict(inputs, explain=True) == first


def test_inputs_without_passages_train_and_predict(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = ner_files(tmp_path, empty_dev=True)
    home = tmp_path / "home"
    cfg = load_config(ner_config(tmp_path, data, tiny_model_dir), [*TOKENS, "train.max_steps=4", "train.eval_every=4"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RALM_ES_HOME", str(home))
        result = train(cfg)
        assert result.finished and result.best_metric is not None
        # Without model.token_store, the store is the encoder revision's under the cache home.
        spec = ModelSpec.from_json(json.loads((result.out / "model.json").read_text()))
        assert (home / "token-states" / spec.frozen_revision / "len16" / "manifest.json").is_file()
        predictions = predict_file(open_run(result.out, "cpu"), data["dev"], data["dev_cache"])[1]
    dev = read_ner(data["dev"])
    assert [len(p.labels) for p in predictions] == [len(ex.words) for ex in dev]
    assert all(p.weights == [[] for _ in p.labels] for p in predictions)


def test_token_store_set_for_another_mode_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = ner_files(tmp_path, empty_dev=False)
    sets = ["model.passage_encoder=frozen", "model.passage_memory=pooled", f"model.token_store={tmp_path / 's'}"]
    with pytest.raises(ConfigError, match=r"model.token_store applies to fusion attention with passage_encoder frozen"):
        train(load_config(ner_config(tmp_path, data, tiny_model_dir), sets))


def test_a_frozen_run_saved_before_token_stores_reads_as_pooled() -> None:
    saved = {"task": "ner", "fusion": "attention", "passage_encoder": "frozen", "passage_memory": "tokens"}
    assert ModelSpec.from_json(saved).passage_memory == "pooled"
    current = {**saved, "frozen_revision": "0123456789abcdef"}
    assert ModelSpec.from_json(current).passage_memory == "tokens"


def hits_of(cache: Path) -> list[dict[str, Any]]:
    return [hit for line in cache.read_text().splitlines()[1:] for hit in json.loads(line)["hits"]]


def ner_files(folder: Path, empty_dev: bool) -> dict[str, Path]:
    """Training sentences whose every third one has no hits, and dev sentences with hits, or with none at all."""
    train_path = write_conll(folder / "train.txt", 32, seed=1)
    dev_path = write_conll(folder / "dev.txt", 8, seed=2)
    train_ex, dev_ex = read_ner(train_path), read_ner(dev_path)
    train_cache = write_cache(folder / "train.cache.jsonl", train_ex, train_ex)
    lines = train_cache.read_text().splitlines()
    for i in range(1, len(lines), 3):
        lines[i] = json.dumps({**json.loads(lines[i]), "hits": []})
    train_cache.write_text("\n".join(lines) + "\n")
    dev_cache = folder / "dev.cache.jsonl"
    if empty_dev:
        with CacheWriter(dev_cache, CacheHeader(index="test", mode="bm25", k=3)) as writer:
            for ex in dev_ex:
                writer.write(ex.id, ex.text, [])
    else:
        write_cache(dev_cache, dev_ex, train_ex)
    return {"train": train_path, "dev": dev_path, "train_cache": train_cache, "dev_cache": dev_cache}


def test_one_passage_id_with_other_text_in_another_index_gets_its_own_states(encoder: Encoder, tmp_path: Path) -> None:
    """Passage ids are unique only within an index; the store serves every index of the encoder."""
    from ralm_es.inference.passages import FrozenPassages

    frozen = FrozenPassages(encoder, open_store(tmp_path / "store", encoder))
    (first,) = frozen.token_states(["doc1#0"], [TEXTS["doc1#0"]])
    (other,) = frozen.token_states(["doc1#0"], [TEXTS["doc2#0"]])
    (again,) = frozen.token_states(["doc1#0"], [TEXTS["doc1#0"]])
    np.testing.assert_array_equal(other, encoder.token_states([TEXTS["doc2#0"]])[0])
    np.testing.assert_array_equal(again, first)
    assert len(open_store(tmp_path / "store", encoder)) == 2


def test_an_onnx_frozen_encoder_keeps_int8_states_apart_and_its_run_predicts_the_same_after_reload(
    tmp_path: Path, tiny_model_dir: Path, encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("RALM_ES_HOME", str(home))
    data = ner_files(tmp_path, empty_dev=False)
    sets = [*TOKENS, "model.runtime=onnx-int8", "train.max_steps=6", "train.eval_every=6"]
    result = train(load_config(ner_config(tmp_path, data, tiny_model_dir), sets))
    spec = ModelSpec.from_json(json.loads((result.out / "model.json").read_text()))
    assert result.finished and spec.runtime == "onnx-int8"
    int8_store = home / "token-states" / f"{spec.frozen_revision}-int8" / "len16"
    manifest = json.loads((int8_store / "manifest.json").read_text())
    assert manifest["kind"] == "int8" and manifest["count"] > 0
    # Int8 states are close to torch's but not the same: they never fill (or read) a store of fp32 states.
    key = next(iter(json.loads((int8_store / "index.json").read_text())))
    text = next(hit["text"] for hit in hits_of(data["train_cache"]) if hit["id"] == key.rpartition("@")[0])
    (stored,) = TokenStore.open(int8_store, spec.frozen_revision, 32, 16, "int8").get([key])
    (fp32,) = encoder.token_states([text])
    assert stored.shape == fp32.shape and not np.array_equal(stored, fp32)
    assert np.corrcoef(stored.astype(np.float32).ravel(), fp32.astype(np.float32).ravel())[0, 1] > 0.9
    with pytest.raises(TokenStoreError, match=r"passage_max_length 16, int8 states\), not by .* fp32 states\)"):
        TokenStore.open(int8_store, spec.frozen_revision, 32, 16)
    assert not (home / "token-states" / spec.frozen_revision).exists()

    first = predict_file(open_run(result.out, "cpu"), data["dev"], data["dev_cache"])[1]
    again = predict_file(open_run(result.out, "cpu"), data["dev"], data["dev_cache"])[1]
    assert [(p.labels, p.weights) for p in first] == [(p.labels, p.weights) for p in again]


def test_the_frozen_encoders_runtime_set_for_a_mode_without_one_is_refused(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    data = ner_files(tmp_path, empty_dev=False)
    for sets in (["model.runtime=onnx"], ["model.fusion=none", "model.runtime=onnx-int8"]):
        refused = r"model.runtime onnx\S* applies to the frozen passage encoder \(fusion attention"
        with pytest.raises(ConfigError, match=refused):
            train(load_config(ner_config(tmp_path, data, tiny_model_dir), sets))
    with pytest.raises(ConfigError, match=r"runtime"):
        load_config(ner_config(tmp_path, data, tiny_model_dir), [*TOKENS, "model.runtime=tensorrt"])


def test_each_stored_token_gets_the_case_of_its_word(encoder: Encoder) -> None:
    texts = ["John Smith visited PARIS , 1996", "McDonald's"]
    cases = stored_token_cases(encoder.tokenizer, texts, encoder.max_length)
    assert [len(c) for c in cases] == [len(s) for s in encoder.token_states(texts)]
    words = [CASE_TITLE, CASE_TITLE, CASE_LOWER, CASE_UPPER, CASE_OTHER, CASE_DIGIT]
    assert cases[0] == [CASE_PAD, *words, CASE_PAD]
    # A word of several subwords ("mcdonald", "'", "s"): each of them has the word's class.
    assert len(cases[1]) > 3 and cases[1][1:-1] == [CASE_MIXED] * (len(cases[1]) - 2)
    # Cut where the encoder cuts, [SEP] last.
    assert stored_token_cases(encoder.tokenizer, texts[:1], 4) == [[CASE_PAD, CASE_TITLE, CASE_TITLE, CASE_PAD]]


def lowercased_cache(cache: Path, out: Path) -> Path:
    """The same cache with every passage's text in lower case: what an uncased encoder cannot tell apart."""
    header, *lines = cache.read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    for row in rows:
        row["hits"] = [{**hit, "text": hit["text"].lower()} for hit in row["hits"]]
    out.write_text("\n".join([header, *map(json.dumps, rows)]) + "\n")
    return out


def test_passage_case_features_tell_apart_what_the_uncased_states_cannot(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = {}
    for name, sets in (("cased", CASED), ("plain", TOKENS)):
        folder = tmp_path / name
        folder.mkdir()
        data = ner_files(folder, empty_dev=False)
        evaluated = record_evaluations(monkeypatch)
        result = train(load_config(ner_config(folder, data, tiny_model_dir), [*sets, f"model.token_store={folder}/s"]))
        monkeypatch.undo()
        seen = losses(result.out)
        assert result.finished and sum(seen[-3:]) / 3 < sum(seen[:3]) / 3
        run = open_run(result.out, "cpu")
        assert run.model.spec.passage_case_features == (name == "cased")
        as_given = predict_file(run, data["dev"], data["dev_cache"])[1]
        in_memory = evaluated[[6, 12].index(result.best_step)]
        assert [(p.labels, p.weights) for p in as_given] == [(p.labels, p.weights) for p in in_memory]
        lowered = predict_file(run, data["dev"], lowercased_cache(data["dev_cache"], folder / "lower.jsonl"))[1]
        weights[name] = ([p.weights for p in as_given], [p.weights for p in lowered])
    # The same token states either way; only the case embedding sees that the passages lost their capitals.
    assert weights["plain"][0] == weights["plain"][1]
    assert weights["cased"][0] != weights["cased"][1]


@pytest.mark.parametrize(
    "sets", [["model.fusion=concat"], ["model.passage_encoder=frozen", "model.passage_memory=pooled"]]
)
def test_passage_case_features_for_a_mode_without_stored_tokens_is_one_line(
    sets: list[str], tmp_path: Path, tiny_model_dir: Path
) -> None:
    data = ner_files(tmp_path, empty_dev=False)
    cfg = load_config(ner_config(tmp_path, data, tiny_model_dir), [*sets, "model.passage_case_features=true"])
    with pytest.raises(ConfigError, match=r"^model.passage_case_features applies to fusion attention with "):
        train(cfg)
