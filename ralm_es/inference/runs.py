"""A finished run folder put to work: predictions (with passage weights) and evaluation on a labelled file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from ralm_es.config import ConfigError, from_dict, load_yaml
from ralm_es.embed import pick_device
from ralm_es.inference.checkpoint import load_run_model
from ralm_es.inference.passages import cached_hits, frozen_embedder
from ralm_es.inference.predictions import predict
from ralm_es.inference.task import TaskSettings, task_of
from ralm_es.model.inputs import FeatureSet, build_features
from ralm_es.model.labelling import Prediction
from ralm_es.model.ralm import RalmModel
from ralm_es.tasks import DataError, LabelMap, Task


@dataclass
class LoadedRun:
    folder: Path
    model: RalmModel
    tokenizer: PreTrainedTokenizerBase
    task: Task
    device_name: str

    @property
    def labels(self) -> LabelMap:
        return LabelMap(self.model.spec.labels)


def open_run(folder: str | Path, device: str = "auto") -> LoadedRun:
    folder = Path(folder)
    model, tokenizer = load_run_model(folder, pick_device(device))
    return LoadedRun(folder, model, tokenizer, task_of(run_task(folder)), device)


def run_task(folder: Path) -> TaskSettings:
    """The task settings the run was trained with, from the ``task`` section of its ``config.yaml``."""
    path = folder / "config.yaml"
    section = load_yaml(path).get("task", {})
    if not isinstance(section, dict):
        raise ConfigError(f"{path}.task: expected a mapping, got {section!r}")
    return from_dict(TaskSettings, section, where=f"{path}.task")


def features(
    run: LoadedRun, path: str | Path, cache: str | Path | None, labelled: bool, limit: int | None = None
) -> FeatureSet:
    """Features of the file's examples (the first ``limit`` of them, when given)."""
    spec = run.model.spec
    examples = run.task.read(path, labelled=labelled)[:limit]
    if labelled:
        run.task.check_labels(examples, run.labels)
    if run.model.strategy.uses_passages and cache is None:
        raise DataError(
            f"the model in {run.folder} uses fusion '{spec.fusion}': pass --cache with the retrieval cache of {path} "
            "(ralm-es retrieve)"
        )
    hits = cached_hits(examples, cache, spec, "test", path)
    embed = frozen_embedder(spec, run.device_name)
    return build_features(examples, hits, run.tokenizer, spec, run.labels if labelled else None, embed)


def predict_file(
    run: LoadedRun, path: str | Path, cache: str | Path | None, batch_size: int = 64
) -> tuple[FeatureSet, list[Prediction]]:
    fs = features(run, path, cache, labelled=False)
    return fs, predict(run.model, fs, batch_size, next(run.model.parameters()).device)


def evaluate_file(
    run: LoadedRun, path: str | Path, cache: str | Path | None, batch_size: int = 64, limit: int | None = None
) -> dict[str, Any]:
    """The task's metrics on a labelled file, plus how many inputs were cut to the length budget."""
    fs = features(run, path, cache, labelled=True, limit=limit)
    preds = predict(run.model, fs, batch_size, next(run.model.parameters()).device)
    metrics = run.task.metrics(run.task.gold(fs.examples), [p.labels for p in preds])
    return {**metrics, "examples": len(fs), "truncated": fs.truncated}
