"""Sequence classification from JSONL (``text``, ``label``, optional ``text_pair``; field names configurable)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sklearn.metrics import accuracy_score, classification_report, f1_score

from ralm_es.corpus.lines import iter_json_lines
from ralm_es.corpus.readers import ReadOptions, content_id
from ralm_es.tasks.base import DataError, Example, LabelMap, require_examples

# The corpus reader's JSONL line cap: a line past it could not be a corpus record either.
MAX_LINE_BYTES = ReadOptions().max_line_bytes


def read_classification(
    path: str | Path,
    text_field: str = "text",
    label_field: str = "label",
    pair_field: str | None = "text_pair",
    id_field: str = "id",
    labelled: bool = True,
) -> list[Example]:
    """One example per non-blank line; the id is ``id_field`` or, when absent, null or empty, the hash of the text
    (as the corpus reader, and so ``retrieve``, gives it).
    The first bad line fails naming ``file:line``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    examples = []
    first_at: dict[str, int] = {}
    # Lines as the corpus reader reads them: BOM dropped, split at \n only, each bad line named.
    for line in iter_json_lines(path, MAX_LINE_BYTES):
        where = f"{path}:{line.number}"
        if line.problem is not None:
            raise DataError(f"{where}: {line.problem}")
        row = line.obj
        text = row.get(text_field)
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: missing or empty text field '{text_field}'")
        label = None
        if labelled:
            if row.get(label_field) is None:
                raise DataError(f"{where}: missing label field '{label_field}'")
            value = row[label_field]
            # A class is any scalar (BoolQ's true/false, a pandas 1.0), written as text; an object or list is none.
            if isinstance(value, (dict, list)):
                raise DataError(f"{where}: label field '{label_field}' is a {type(value).__name__}, not one class")
            label = str(value)
            if not label.strip():
                raise DataError(f"{where}: empty label field '{label_field}'")
        pair = row.get(pair_field) if pair_field else None
        if pair is not None and not isinstance(pair, str):
            raise DataError(f"{where}: text pair field '{pair_field}' is a {type(pair).__name__}, not a string")
        raw_id = row.get(id_field)
        # As in the corpus reader, a null or empty id is no id, and the text's hash stands in: the id `ralm-es
        # retrieve` gives the same line, so its cache matches.
        hashed = raw_id in (None, "")
        example_id = _string_or_integer(content_id(text) if hashed else raw_id, f"{where}: id field '{id_field}'")
        # Two lines of one id hold one cache entry between them (retrieve skips the second), so one of them would be
        # read with the other's passages. Lines without ids and the same text share it rightly: the same query.
        if not hashed:
            if example_id in first_at:
                first = first_at[example_id]
                raise DataError(
                    f"{where}: id {example_id!r} again (first at line {first}); each example needs its own id"
                )
            first_at[example_id] = line.number
        examples.append(
            Example(
                id=example_id,
                words=tuple(text.split()),
                source=where,
                label=label,
                pair_words=tuple(pair.split()) if pair and pair.strip() else None,
            )
        )
    require_examples(examples, path)
    return examples


def _string_or_integer(value: Any, what: str) -> str:
    """An id as a string; as the corpus reader reads ids, only a string or an integer (not a bool) is one."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise DataError(f"{what} is a {type(value).__name__}; it must be a string or an integer")
    return str(value)


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
