"""The model's shape as plain data: saved as ``model.json`` in a run folder and enough to rebuild the model."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Fusion = Literal["none", "concat", "attention"]


@dataclass
class ModelSettings:
    """The ``model:`` section of a training config. ``encoder``: a local Hugging Face encoder folder (None: the
    packaged all-MiniLM-L6-v2); it is also the frozen passage encoder. ``fusion``: how retrieved passages reach the
    task head. ``passage_encoder``: ``shared`` encodes passages with the trainable encoder, ``frozen`` uses fixed
    vectors from the initial encoder (fast). ``passage_memory``: attend over each passage's token states
    (``tokens``) or one mean-pooled vector per passage (``pooled``)."""

    encoder: str | None = None
    fusion: Fusion = "attention"
    k: int = 8
    max_length: int = 128
    passage_max_length: int = 48
    passage_encoder: Literal["shared", "frozen"] = "shared"
    passage_memory: Literal["tokens", "pooled"] = "tokens"
    heads: int = 4
    case_features: bool = True
    dropout: float = 0.1


@dataclass(kw_only=True)
class ModelSpec(ModelSettings):
    """The settings plus what training reads from the data: the task, its labels and the frozen vectors' size."""

    task: Literal["ner", "classification"]
    labels: list[str] = field(default_factory=list)
    frozen_dim: int = 0

    @property
    def uses_passages(self) -> bool:
        return self.fusion != "none"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
