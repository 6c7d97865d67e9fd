"""Sequence classification from JSONL (``text``, ``label``, optional ``text_pair``; field names configurable)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sklearn.metrics import accuracy_score, classification_report, f1_score

from ralm_es.tasks.base import DataError, Example, LabelMap, require_examples


def read_classification(
    path: str | Path,
    text_field: str = "text",
    label_field: str = "label",
    pair_field: str | None = "text_pair",
    id_field: str = "id",
    labelled: bool = True,
) -> list[Example]:
    """One example per non-blank line; the id is ``id_field`` or, when absent, the line number."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    examples = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{where}: expected a JSON object")
            text = row.get(text_field)
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"{where}: missing or empty text field '{text_field}'")
            label = row.get(label_field)
            if labelled and (label is None or isinstance(label, (dict, list))):
                raise DataError(f"{where}: missing label field '{label_field}'")
            pair = row.get(pair_field) if pair_field else None
            examples.append(
                Example(
                    id=str(row.get(id_field, lineno)),
                    words=tuple(text.split()),
                    source=where,
                    label=str(label) if labelled else None,
                    pair_words=tuple(pair.split()) if isinstance(pair, str) and pair.strip() else None,
                )
            )
    require_examples(examples, path)
    return examples


def classification_labels(examples: Sequence[Example]) -> LabelMap:
    return LabelMap(sorted({ex.label for ex in examples if ex.label is not None}))


def check_classification_labels(examples: Sequence[Example], labels: LabelMap) -> None:
    for ex in examples:
        if ex.label is not None:
            labels.index(ex.label, ex.source)


def classification_metrics(gold: list[str], pred: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-label scores and scikit-learn's report table."""
    names = sorted(set(gold) | set(pred))
    per_label = classification_report(gold, pred, labels=names, output_dict=True, zero_division=0)
    return {
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_f1": float(f1_score(gold, pred, average="macro", zero_division=0)),
        "per_label": {
            name: {k.replace("f1-score", "f1"): float(v) for k, v in per_label[name].items()} for name in names
        },
        "report": classification_report(gold, pred, labels=names, digits=4, zero_division=0),
    }


@dataclass(frozen=True)
class ClassificationTask:
    """Sequence classification from JSONL, the fields named by the config: a label per example, macro-F1."""

    text_field: str = "text"
    label_field: str = "label"
    pair_field: str | None = "text_pair"
    id_field: str = "id"
    main_metric: str = "macro_f1"

    def read(self, path: str | Path, labelled: bool = True) -> list[Example]:
        return read_classification(
            path, self.text_field, self.label_field, self.pair_field, self.id_field, labelled=labelled
        )

    def labels(self, examples: Sequence[Example]) -> LabelMap:
        return classification_labels(examples)

    def check_labels(self, examples: Sequence[Example], labels: LabelMap) -> None:
        check_classification_labels(examples, labels)

    def gold(self, examples: Sequence[Example]) -> list[Any]:
        return [ex.label for ex in examples]

    def metrics(self, gold: list[Any], pred: list[Any]) -> dict[str, Any]:
        return classification_metrics(gold, pred)
