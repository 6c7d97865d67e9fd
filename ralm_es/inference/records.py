"""One prediction as it is reported, the same from ``ralm-es predict --json`` and from the service's /predict."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from seqeval.metrics.sequence_labeling import get_entities

from ralm_es.model.labelling import Prediction
from ralm_es.tasks import Example

PASSAGE_KEYS = ("id", "doc_id", "rank", "score", "title", "text")


class ReportedHit(Protocol):
    """A passage an example read: a cached hit, or one retrieved live."""

    id: str
    doc_id: str
    rank: int
    score: float
    title: str
    text: str


@dataclass(frozen=True)
class EntitySpan:
    type: str
    # Word indices: the first, and the one after the last.
    start: int
    end: int
    text: str


@dataclass
class PredictionRecord:
    """NER: the words, their tags and the entities they make; classification: the text, its label and the label's
    probability. With explain: the passages read and, for a mode that weighs them, each one's weight."""

    id: str
    words: list[str] | None = None
    tags: list[str] | None = None
    entities: list[EntitySpan] | None = None
    text: str | None = None
    label: str | None = None
    probability: float | None = None
    passages: list[dict[str, Any]] | None = None
    weights: list[list[float]] | None = None

    def to_json(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}


def prediction_record(
    example: Example, hits: Sequence[ReportedHit], pred: Prediction, explain: bool
) -> PredictionRecord:
    if isinstance(pred.labels, list):
        words = list(example.words)
        entities = [
            EntitySpan(kind, start, end + 1, " ".join(words[start : end + 1]))
            for kind, start, end in get_entities(pred.labels)
        ]
        record = PredictionRecord(example.id, words=words, tags=pred.labels, entities=entities)
    else:
        record = PredictionRecord(example.id, text=example.text, label=pred.labels, probability=pred.probability)
    if explain:
        record.passages = [{key: getattr(hit, key) for key in PASSAGE_KEYS} for hit in hits]
        record.weights = pred.weights
    return record
