"""What both tasks share: the example record, the label map, and the errors for bad task data."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ralm_es.errors import RalmError


class DataError(RalmError, ValueError):
    """Task data that cannot be used: malformed, empty, or with labels the model does not know."""


@dataclass(frozen=True)
class Example:
    """One input. NER examples carry ``tags`` (one per word), classification examples a ``label``.

    ``source`` is ``file:line`` of the example's first line; a CoNLL word ``i`` sits on that line plus ``i``.
    """

    id: str
    words: tuple[str, ...]
    source: str
    tags: tuple[str, ...] | None = None
    label: str | None = None
    pair_words: tuple[str, ...] | None = None

    @property
    def text(self) -> str:
        return " ".join(self.words)


def require_examples(examples: Sequence[Example], path: str | Path) -> None:
    if not examples:
        raise DataError(f"{path}: empty data set (no examples)")


class LabelMap:
    """Labels in a fixed order; ``index`` fails naming the example that carries a label unseen in training."""

    def __init__(self, labels: Iterable[str]) -> None:
        self.labels = list(labels)
        self._index = {label: i for i, label in enumerate(self.labels)}

    def __len__(self) -> int:
        return len(self.labels)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelMap) and other.labels == self.labels

    def index(self, label: str, where: str) -> int:
        try:
            return self._index[label]
        except KeyError:
            known = ", ".join(self.labels)
            raise DataError(f"{where}: label '{label}' was not seen in training (known labels: {known})") from None


class Task(Protocol):
    """One task's reading, labelling and scoring (``NerTask``, ``ClassificationTask``)."""

    # The metric that picks the best checkpoint, a key of ``metrics``.
    main_metric: str

    def read(self, path: str | Path, labelled: bool = True) -> list[Example]: ...

    def labels(self, examples: Sequence[Example]) -> LabelMap:
        """The label map of the labels seen in ``examples``."""
        ...

    def check_labels(self, examples: Sequence[Example], labels: LabelMap) -> None:
        """Fail on the first label in ``examples`` that ``labels`` does not hold, naming file:line."""
        ...

    def gold(self, examples: Sequence[Example]) -> list[Any]: ...

    def metrics(self, gold: list[Any], pred: list[Any]) -> dict[str, Any]: ...
