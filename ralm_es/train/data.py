"""The splits a run trains and evaluates on: task examples joined with their cached retrieval, as features."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from ralm_es.config import ConfigError
from ralm_es.inference.passages import FrozenPassages, cached_hits, header_scale
from ralm_es.model.inputs import FeatureSet, build_features
from ralm_es.model.spec import ModelSpec, ScoreScale
from ralm_es.model.strategies import strategy_of
from ralm_es.retrieve.cache import read_header
from ralm_es.tasks import Example, LabelMap, Task
from ralm_es.train.config import TrainConfig


def read_split(task: Task, path: str | Path, limit: int | None = None) -> list[Example]:
    examples = task.read(path)
    return examples[:limit] if limit is not None else examples


def split_fraction(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """A seeded random ``fraction`` of the examples and the rest, both kept in file order."""
    n = max(1, math.ceil(len(examples) * fraction))
    generator = torch.Generator().manual_seed(seed)
    chosen = set(torch.randperm(len(examples), generator=generator)[:n].tolist())
    picked = [ex for i, ex in enumerate(examples) if i in chosen]
    return picked, [ex for i, ex in enumerate(examples) if i not in chosen]


@dataclass
class Splits:
    train: FeatureSet
    dev: FeatureSet | None
    labels: LabelMap
    # The model's spec, complete: the settings, the task, the labels of the training data, the frozen vector size.
    spec: ModelSpec


def training_scale(cfg: TrainConfig) -> ScoreScale | None:
    """The retrieval of the training cache, for a mode that reads scores on their own scale (None otherwise, or
    when there is no cache to read: ``cached_hits`` then says what is missing)."""
    cache = cfg.data.train_cache
    if not strategy_of(cfg.model).reads_scores or cache is None or not Path(cache).is_file():
        return None
    return header_scale(read_header(cache))


def load_splits(
    cfg: TrainConfig, task: Task, tokenizer: PreTrainedTokenizerBase, embed: FrozenPassages | None
) -> Splits:
    """Train (and dev) features, with the label map read from the training data; the test file and its cache, when
    set, are checked against them."""
    data = cfg.data
    train = read_split(task, data.train, data.limit)
    dev = read_split(task, data.dev, data.limit) if data.dev else None
    dev_cache = data.dev_cache
    if dev is None and data.holdout > 0:
        dev, train = split_fraction(train, data.holdout, cfg.train.seed)
        dev_cache = data.train_cache
        if not train:
            raise ConfigError(
                f"data.holdout {data.holdout} leaves none of the {len(dev)} examples of {data.train} to train on"
            )
    if data.train_fraction < 1:
        train = split_fraction(train, data.train_fraction, cfg.train.seed + 1)[0]
    labels = task.labels(train)
    spec = ModelSpec(
        task=cfg.task.type,
        labels=tuple(labels.labels),
        frozen_dim=embed.dim if embed is not None else 0,
        frozen_revision=embed.encoder.revision if embed is not None else "",
        score_scale=training_scale(cfg),
        **asdict(cfg.model),
    )
    train_hits = cached_hits(train, data.train_cache, spec, "train", data.train)
    train_fs = build_features(train, train_hits, tokenizer, spec, labels, embed)
    dev_fs = None
    if dev is not None:
        task.check_labels(dev, labels)
        dev_hits = cached_hits(dev, dev_cache, spec, "dev", data.dev or data.train)
        dev_fs = build_features(dev, dev_hits, tokenizer, spec, labels, embed)
    if data.test:
        # Scored only once training ends (``evaluate_file``): a bad test file, label or cache fails here, before it.
        test = read_split(task, data.test, data.limit)
        task.check_labels(test, labels)
        cached_hits(test, data.test_cache, spec, "test", data.test)
    return Splits(train_fs, dev_fs, labels, spec)
