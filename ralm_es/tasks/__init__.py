"""The tasks fine-tuning knows: how to read their data, build label maps and score predictions, one ``Task`` each."""

from __future__ import annotations

from ralm_es.tasks.base import DataError, Example, LabelMap, Task
from ralm_es.tasks.classification import ClassificationTask
from ralm_es.tasks.ner import NerTask

__all__ = ["ClassificationTask", "DataError", "Example", "LabelMap", "NerTask", "Task"]
