"""The ``task`` section of a training config, which a run folder's ``config.yaml`` keeps: what the examples are
and which fields of a JSONL file hold them. Training reads it from its config, a run's users from the folder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ralm_es.tasks import Task


@dataclass
class TaskSettings:
    type: Literal["ner", "classification"] = "ner"
    # JSONL field names for classification.
    text_field: str = "text"
    label_field: str = "label"
    pair_field: str | None = "text_pair"
    id_field: str = "id"


def task_of(settings: TaskSettings) -> Task:
    return Task(settings.type, settings.text_field, settings.label_field, settings.pair_field, settings.id_field)
