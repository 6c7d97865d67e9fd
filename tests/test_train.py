"""Training end to end on a tiny random BERT: every fusion mode learns, checkpoints round-trip, runs resume."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from ralm_es.retrieve.cache import CacheHeader, CacheWriter
from ralm_es.tasks import Example
from ralm_es.tasks.ner import read_ner
from ralm_es.train.config import load_config
from ralm_es.train.loop import train

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
    with CacheWriter(path, CacheHeader(index="test", mode="bm25", k=k)) as writer:
        for ex in examples:
            words = set(ex.words)
            ranked = sorted((p for p in pool if p.id != ex.id), key=lambda p: -len(words & set(p.words)))[:k]
            hits = [
                {
                    "id": p.id,
                    "doc_id": p.id.rsplit("-", 1)[0],
                    "rank": r + 1,
                    "score": float(len(words & set(p.words))),
                    "scores": {"bm25": float(len(words & set(p.words))), "dense": None},
                    "title": "",
                    "text": p.text,
                }
                for r, p in enumerate(ranked)
            ]
            writer.write(ex.id, ex.text, hits)
    return path


@pytest.fixture(scope="module")
def ner_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ner")
    train_path = write_conll(folder / "train.txt", 48, seed=1)
    dev_path = write_conll(folder / "dev.txt", 16, seed=2)
    train_ex, dev_ex = read_ner(train_path), read_ner(dev_path)
    return {
        "train": train_path,
        "dev": dev_path,
        "train_cache": write_cache(folder / "train.cache.jsonl", train_ex, train_ex),
        "dev_cache": write_cache(folder / "dev.cache.jsonl", dev_ex, train_ex),
    }


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
        },
        "run": {"out": str(folder / "run"), "progress": False},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def losses(run: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.mark.parametrize(
    "fusion", ["none", "concat", "attention", "attention-frozen", "attention-pooled"], ids=lambda f: f
)
def test_each_fusion_mode_learns(fusion: str, tmp_path: Path, ner_data: dict[str, Path], tiny_model_dir: Path) -> None:
    mode, _, variant = fusion.partition("-")
    sets = [f"model.fusion={mode}"]
    if variant == "frozen":
        sets.append("model.passage_encoder=frozen")
    if variant == "pooled":
        sets.append("model.passage_memory=pooled")
    cfg = load_config(ner_config(tmp_path, ner_data, tiny_model_dir), sets)
    result = train(cfg)
    seen = losses(tmp_path / "run")
    assert result.finished and result.steps == 12
    assert sum(seen[-3:]) / 3 < sum(seen[:3]) / 3
    run = tmp_path / "run"
    for name in ("model.safetensors", "model.json", "config.yaml", "report.md", "training.png", "tokenizer.json"):
        assert (run / name).is_file(), name
    assert "f1" in json.loads((run / "metrics.jsonl").read_text().splitlines()[-1]).get("dev", {"f1": 0})
