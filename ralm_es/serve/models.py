"""Request and response bodies of the REST API (they are also its OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from ralm_es.retrieve.settings import Mode
from ralm_es.store.base import Filter, StoreError

Scalar = str | int | float | bool
Word = Annotated[str, StringConstraints(pattern=r"^\S+$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FilterIn(Strict):
    """``term`` (one value), ``terms`` (any of a list) or ``range`` (``{"gte": 2000}``) on a metadata field."""

    field: str = Field(min_length=1, max_length=256)
    kind: Literal["term", "terms", "range"] = "term"
    value: Scalar | list[Scalar] | dict[str, int | float | str]

    @model_validator(mode="after")
    def value_fits_kind(self) -> FilterIn:
        # The store's own check, so the API refuses what every other path refuses (as a 422, in place).
        try:
            Filter(self.field, self.kind, self.value)
        except StoreError as exc:
            raise ValueError(str(exc)) from None
        return self


class QueryOptions(Strict):
    k: int | None = Field(default=None, ge=1, description="Passages per query (default: the server's).")
    mode: Mode | None = Field(default=None, description="Default: the server's mode.")
    filters: list[FilterIn] = Field(default_factory=list, max_length=32)


class SearchIn(QueryOptions):
    text: str = Field(description="The query.")
    exclude_ids: list[str] = Field(default_factory=list, max_length=1000, description="Passage ids never returned.")


class RetrieveInput(Strict):
    id: str | None = Field(default=None, description="The input's id (used for self-exclusion by doc id).")
    text: str
    exclude_ids: list[str] = Field(default_factory=list, max_length=1000)


class RetrieveIn(QueryOptions):
    inputs: list[RetrieveInput] = Field(min_length=1)


class HitOut(BaseModel):
    """One passage, as ``ralm-es search --json`` prints it."""

    id: str
    doc_id: str
    rank: int
    score: float
    scores: dict[str, float | None]
    ranks: dict[str, int | None]
    title: str
    text: str
    metadata: dict[str, Any]


class SearchOut(BaseModel):
    mode: Mode
    hits: list[HitOut]


class RetrieveResult(BaseModel):
    id: str | None
    hits: list[HitOut]


class RetrieveOut(BaseModel):
    mode: Mode
    results: list[RetrieveResult]


class PredictText(Strict):
    """One input as text, split on whitespace into words."""

    id: str | None = None
    text: str
    text_pair: str | None = Field(default=None, description="Second text of a pair-classification model.")


class PredictWords(Strict):
    """One NER input as pre-split words (CoNLL tokens)."""

    id: str | None = None
    words: list[Word] = Field(min_length=1, max_length=512)


class PredictIn(Strict):
    inputs: list[PredictText | PredictWords] = Field(min_length=1)
    explain: bool = Field(default=False, description="Add the passages used and the attention weight each got.")


class Entity(BaseModel):
    type: str
    start: int = Field(description="Index of the first word.")
    end: int = Field(description="Index after the last word.")
    text: str


class PassageOut(BaseModel):
    id: str | None
    doc_id: str | None
    rank: int | None
    score: float | None
    title: str | None
    text: str | None


class PredictionOut(BaseModel):
    id: str
    words: list[str] | None = None
    tags: list[str] | None = None
    entities: list[Entity] | None = None
    label: str | None = None
    probability: float | None = None
    passages: list[PassageOut] | None = None
    weights: list[list[float]] | None = Field(
        default=None,
        description="With explain and a fusion that weighs passages (attention, pair): per word (NER) or one row, "
        "a weight per passage.",
    )


class PredictOut(BaseModel):
    task: Literal["ner", "classification"]
    predictions: list[PredictionOut]


class IndexOut(BaseModel):
    index: str
    docs: int | None
    health: str | None
    aliases: list[str]
    vectors: dict[str, int] = Field(description="dense_vector fields and their dimension.")
    serving: bool = Field(description="Whether this server queries it.")


class HealthOut(BaseModel):
    status: Literal["ok", "unavailable"]
    version: str
    pid: int = Field(description="The process that answered: one of `serve --workers`.")
    threads: int = Field(description="The CPU threads its encoder and model run on: the cores divided by the workers.")
    cluster: dict[str, Any] | None
    index: dict[str, Any] | None
    model: dict[str, Any] | None
    queue: dict[str, int] = Field(
        description="Requests waiting for a batch (waiting), the most that may wait (size), the most queries a batch."
    )


class ErrorOut(BaseModel):
    detail: Any
