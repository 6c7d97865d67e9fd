"""The tasks fine-tuning knows: how to read their data, build label maps and score predictions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ralm_es.tasks.base import DataError, Example, LabelMap
from ralm_es.tasks.classification import (
    check_classification_labels,
    classification_labels,
    classification_metrics,
    read_classification,
)
from ralm_es.tasks.ner import check_ner_labels, ner_labels, ner_metrics, read_ner

__all__ = ["DataError", "Example", "LabelMap", "Task"]


@dataclass(frozen=True)
class Task:
    """One task's reading, labelling and scoring. ``kind`` is ``ner`` or ``classification``."""

    kind: str
    text_field: str = "text"
    label_field: str = "label"
    pair_field: str | None = "text_pair"
    id_field: str = "id"

    @property
    def main_metric(self) -> str:
        return "f1" if self.kind == "ner" else "macro_f1"

    def read(self, path: str | Path, labelled: bool = True) -> list[Example]:
        if self.kind == "ner":
            return read_ner(path, labelled=labelled)
        return read_classification(
            path, self.text_field, self.label_field, self.pair_field, self.id_field, labelled=labelled
        )

    def labels(self, examples: Sequence[Example]) -> LabelMap:
        return ner_labels(examples) if self.kind == "ner" else classification_labels(examples)

    def check_labels(self, examples: Sequence[Example], labels: LabelMap) -> None:
        """Fail on the first label in ``examples`` that ``labels`` does not hold, naming file:line."""
        if self.kind == "ner":
            check_ner_labels(examples, labels)
        else:
            check_classification_labels(examples, labels)

    def gold(self, examples: Sequence[Example]) -> list[Any]:
        return [list(ex.tags or ()) if self.kind == "ner" else ex.label for ex in examples]

    def metrics(self, gold: list[Any], pred: list[Any]) -> dict[str, Any]:
        return ner_metrics(gold, pred) if self.kind == "ner" else classification_metrics(gold, pred)
