"""Training settings as dataclasses, loaded from YAML (``configs/*.yaml``) with ``--set key=value`` overrides."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ralm_es.config import ConfigError, check_bounds, check_choices, compose, file_layer, set_layer
from ralm_es.inference.task import TaskSettings
from ralm_es.model.spec import ModelSettings


@dataclass
class DataSettings:
    """Data files and their retrieval caches (``ralm-es retrieve``); a cache is needed unless fusion is none."""

    train: str = ""
    dev: str | None = None
    test: str | None = None
    train_cache: str | None = None
    dev_cache: str | None = None
    test_cache: str | None = None
    # Without a dev file: hold out this seeded fraction of the training examples as the dev set.
    holdout: float = 0.0
    # Train on a seeded ``train_fraction`` of the (remaining) training examples (label-efficiency runs).
    train_fraction: float = 1.0
    # Cut every split to its first N examples (quick runs and tests).
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.limit is not None:
            check_bounds("data", self, ("limit",), 1)
        # A holdout of 0 means "no dev split"; a train_fraction of 0 would train on nothing.
        if not 0 < self.train_fraction <= 1:
            raise ConfigError(f"data.train_fraction must be a fraction between 0 and 1, got {self.train_fraction}")
        # A holdout of 1 would hold out every training example.
        if not 0 <= self.holdout < 1:
            raise ConfigError(f"data.holdout must be at least 0 and below 1, got {self.holdout}")
        # The dev set comes from one place: a file, or a share of the training examples (with their cache).
        if self.holdout > 0 and self.dev:
            raise ConfigError("data.holdout and data.dev both give a dev set; set one of them (data.dev=null)")
        if self.holdout > 0 and self.dev_cache:
            raise ConfigError(
                "data.dev_cache is not read with data.holdout (the held-out examples' passages come "
                "from data.train_cache); leave it out"
            )


@dataclass
class OptimSettings:
    epochs: float = 3.0
    # Train exactly this many optimizer steps (the schedule's length) instead of ``epochs`` (quick runs and tests).
    max_steps: int | None = None
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 5e-5
    # Learning rate of the freshly initialised parts (head, fusion, case embeddings).
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 200
    eval_batch_size: int = 64
    # Evaluations without improvement of the dev metric before stopping; 0 never stops early.
    patience: int = 5
    log_every: int = 20
    seed: int = 13
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # Regularisers for a fusion mode with passage slots (attention, pair, scores); 0 disables each. Drop each retrieved
    # passage of a training batch with this probability (an example left with none trains on the input alone).
    passage_dropout: float = 0.0
    # Weight of CL-KL: KL from the prediction with passages to the prediction on the input alone.
    consistency_weight: float = 0.0
    # CPU threads per process (None: torch's default). On a busy machine one thread can be several times faster.
    threads: int | None = None

    def __post_init__(self) -> None:
        sizes = ("batch_size", "grad_accum", "eval_every", "eval_batch_size", "log_every")
        check_bounds("train", self, [*sizes, *(n for n in ("max_steps", "threads") if getattr(self, n) is not None)], 1)
        check_bounds("train", self, ("weight_decay", "grad_clip", "patience"), 0)
        check_choices("train", self, ("precision",))
        # A zero or negative rate would not train (or would climb the loss) without saying so.
        for name, value in (("epochs", self.epochs), ("lr", self.lr), ("head_lr", self.head_lr)):
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"train.{name} must be a finite number above 0, got {value}")
        for name, value in (("warmup_ratio", self.warmup_ratio), ("passage_dropout", self.passage_dropout)):
            if not 0 <= value < 1:
                raise ConfigError(f"train.{name} must be at least 0 and below 1, got {value}")
        if not self.consistency_weight >= 0:
            raise ConfigError(f"train.consistency_weight must be 0 or more, got {self.consistency_weight}")


@dataclass
class RunSettings:
    out: str = "runs/run"
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        # An empty path is the current directory: the run would be written among whatever is there.
        if not self.out.strip():
            raise ConfigError(f"run.out must name the run folder, got {self.out!r}")


@dataclass
class TrainConfig:
    task: TaskSettings = field(default_factory=TaskSettings)
    data: DataSettings = field(default_factory=DataSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    train: OptimSettings = field(default_factory=OptimSettings)
    run: RunSettings = field(default_factory=RunSettings)


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> TrainConfig:
    """A config file plus ``key=value`` overrides; unknown keys fail with close matches."""
    return compose(TrainConfig, file_layer(path), set_layer(overrides))
