"""The ``task`` section of a training config, which a run folder's ``config.yaml`` keeps: what the examples are
and which fields of a JSONL file hold them. Training reads it from its config, a run's users from the folder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ralm_es.config import check_choices
from ralm_es.tasks import ClassificationTask, NerTask, Task


@dataclass
class TaskSettings:
    type: Literal["ner", "classification"] = "ner"
    # JSONL field names for classification.
    text_field: str = "text"
    label_field: str = "label"
    pair_field: str | None = "text_pair"
    id_field: str = "id"

    def __post_init__(self) -> None:
        check_choices("task", self, ("type",))


# The task each ``task.type`` names, built from the section (a test holds this equal to the type's values).
TASKS: dict[str, Callable[[TaskSettings], Task]] = {
    "ner": lambda s: NerTask(),
    "classification": lambda s: ClassificationTask(s.text_field, s.label_field, s.pair_field, s.id_field),
}


def task_of(settings: TaskSettings) -> Task:
    return TASKS[settings.type](settings)
