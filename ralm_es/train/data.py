"""The splits a run trains and evaluates on: task examples joined with their cached retrieval, as features."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from ralm_es.embed import Encoder
from ralm_es.model.inputs import FeatureSet, build_features
from ralm_es.model.spec import ModelSpec
from ralm_es.retrieve.cache import read_cache, require
from ralm_es.tasks import DataError, Example, LabelMap, Task
from ralm_es.train.config import TrainConfig


def task_of(cfg: TrainConfig) -> Task:
    t = cfg.task
    return Task(t.type, t.text_field, t.label_field, t.pair_field, t.id_field)


def read_split(task: Task, path: str | Path, limit: int | None = None, labelled: bool = True) -> list[Example]:
    examples = task.read(path, labelled=labelled)
    return examples[:limit] if limit is not None else examples


def split_fraction(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """A seeded random ``fraction`` of the examples and the rest, both kept in file order."""
    n = max(1, math.ceil(len(examples) * fraction))
    generator = torch.Generator().manual_seed(seed)
    chosen = set(torch.randperm(len(examples), generator=generator)[:n].tolist())
    picked = [ex for i, ex in enumerate(examples) if i in chosen]
    return picked, [ex for i, ex in enumerate(examples) if i not in chosen]


def cached_hits(
    examples: list[Example], cache: str | Path | None, spec: ModelSpec, split: str
) -> list[list[dict[str, Any]]]:
    """Each example's hits from the retrieval cache; a missing cache or entry fails naming the examples."""
    if not spec.uses_passages:
        return [[] for _ in examples]
    if cache is None:
        raise DataError(f"fusion '{spec.fusion}' needs retrieved passages: set data.{split}_cache (ralm-es retrieve)")
    _, entries = read_cache(cache)
    require(entries, [ex.id for ex in examples], cache)
    return [entries[ex.id]["hits"] for ex in examples]


def frozen_embedder(spec: ModelSpec, device: str) -> Callable[[list[str]], np.ndarray] | None:
    """The fixed passage encoder of ``passage_encoder: frozen``; sets ``spec.frozen_dim`` from it."""
    if spec.fusion != "attention" or spec.passage_encoder != "frozen":
        return None
    encoder = Encoder(spec.encoder, device=device, max_length=spec.passage_max_length)
    spec.frozen_dim = encoder.dim
    return lambda texts: encoder.encode(texts, batch_size=128)


@dataclass
class Splits:
    train: FeatureSet
    dev: FeatureSet | None
    labels: LabelMap


def load_splits(
    cfg: TrainConfig,
    task: Task,
    spec: ModelSpec,
    tokenizer: PreTrainedTokenizerBase,
    embed: Callable[[list[str]], np.ndarray] | None,
) -> Splits:
    """Train (and dev) features, with the label map read from the training data."""
    data = cfg.data
    for name, value in (("train_fraction", data.train_fraction), ("holdout", data.holdout)):
        if not 0 <= value <= 1 or (name == "train_fraction" and value == 0):
            raise DataError(f"data.{name} must be a fraction between 0 and 1, got {value}")
    train = read_split(task, data.train, data.limit)
    dev = read_split(task, data.dev, data.limit) if data.dev else None
    dev_cache = data.dev_cache
    if dev is None and data.holdout > 0:
        dev, train = split_fraction(train, data.holdout, cfg.train.seed)
        dev_cache = data.train_cache
    if data.train_fraction < 1:
        train = split_fraction(train, data.train_fraction, cfg.train.seed + 1)[0]
    labels = task.labels(train)
    spec.labels = labels.labels
    train_fs = build_features(
        train, cached_hits(train, data.train_cache, spec, "train"), tokenizer, spec, labels, embed
    )
    dev_fs = None
    if dev is not None:
        task.check_labels(dev, labels)
        dev_fs = build_features(dev, cached_hits(dev, dev_cache, spec, "dev"), tokenizer, spec, labels, embed)
    return Splits(train_fs, dev_fs, labels)
