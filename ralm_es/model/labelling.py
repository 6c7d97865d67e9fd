"""How a task's labels meet the model: one per token (NER: the tag of each word sits on its first sub-token, the other
positions are ignored) or one per input (classification: the input's mean-pooled states are the single query), in
features, batches, logits and decoded predictions. ``LABELLINGS`` holds one per ``task.type``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from ralm_es.embed import mean_pool
from ralm_es.tasks.base import Example, LabelMap

# The label of a position the loss skips (cross_entropy's ignore_index).
IGNORE = -100


@dataclass
class Prediction:
    # NER: one tag per word; classification: one label.
    labels: list[str] | str
    # NER: per word, the weight of each passage; classification: one row. None where the mode weighs no passage
    # (none, concat, scores).
    weights: list[list[float]] | None
    probability: float | None = None


@dataclass(frozen=True)
class Scored:
    """One example's model output: the label probabilities of its query slots, the weight each slot gave each of its
    passages (None for a mode that weighs none), and the token position of each word's first sub-token."""

    probs: torch.Tensor
    weights: torch.Tensor | None
    word_starts: list[int]


def pad(rows: list[list[int]], width: int, value: int) -> torch.Tensor:
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


class Labelling(Protocol):
    def labels(self, ex: Example, labels: LabelMap, word_starts: list[int], length: int) -> list[int] | int:
        """The label ids of one example's features (``length`` token positions)."""
        ...

    def batch(self, rows: list[list[int] | int], width: int) -> torch.Tensor: ...

    def query(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The query slots the fusion strategy fuses passages into: (batch, slots, hidden)."""
        ...

    def logits(self, logits: torch.Tensor) -> torch.Tensor:
        """The head's output over the query slots, as the loss and the predictions read it."""
        ...

    def decode(self, row: Scored, names: Sequence[str]) -> Prediction:
        """One example's prediction, its labels named by ``names``."""
        ...


class PerToken:
    """NER: a tag per word, on its first sub-token; every token state is a query slot."""

    def labels(self, ex: Example, labels: LabelMap, word_starts: list[int], length: int) -> list[int]:
        tags = [IGNORE] * length
        for w, pos in enumerate(word_starts):
            if pos >= 0:
                tags[pos] = labels.index((ex.tags or ())[w], ex.source)
        return tags

    def batch(self, rows: list[list[int] | int], width: int) -> torch.Tensor:
        return pad(rows, width, IGNORE)  # type: ignore[arg-type]

    def query(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return states

    def logits(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def decode(self, row: Scored, names: Sequence[str]) -> Prediction:
        # A word cut off by truncation has no position: it is predicted outside any entity.
        tags = [names[int(row.probs[p].argmax())] if p >= 0 else "O" for p in row.word_starts]
        weights = row.weights
        if weights is None:
            return Prediction(tags, None)
        return Prediction(tags, [weights[p].tolist() if p >= 0 else [0.0] * weights.shape[1] for p in row.word_starts])


class PerInput:
    """Classification: one label per input, read from the mean of its token states (one query slot)."""

    def labels(self, ex: Example, labels: LabelMap, word_starts: list[int], length: int) -> int:
        return labels.index(ex.label or "", ex.source)

    def batch(self, rows: list[list[int] | int], width: int) -> torch.Tensor:
        return torch.tensor(rows, dtype=torch.long)

    def query(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return mean_pool(states, mask).unsqueeze(1)

    def logits(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.squeeze(1)

    def decode(self, row: Scored, names: Sequence[str]) -> Prediction:
        best = int(row.probs.argmax())
        weights = [row.weights[0].tolist()] if row.weights is not None else None
        return Prediction(names[best], weights, float(row.probs[best]))


# The labelling of each ``task.type`` (a test holds this equal to the tasks).
LABELLINGS: dict[str, Labelling] = {"ner": PerToken(), "classification": PerInput()}
