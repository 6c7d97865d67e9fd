"""The model's shape as plain data: saved as ``model.json`` in a run folder and enough to rebuild the model.
Both classes are frozen: a spec is built once, complete, after the data gave its labels."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from ralm_es.config import ConfigError, check_bounds, check_choices
from ralm_es.onnx_runtime import Runtime
from ralm_es.retrieve.settings import recorded_ranking

# The modes the config accepts; each has its strategy in ``ralm_es.model.strategies``.
Fusion = Literal["none", "concat", "attention", "pair", "scores"]


@dataclass(frozen=True)
class ModelSettings:
    """The ``model:`` section of a training config. ``encoder``: a local Hugging Face encoder folder (None: the
    packaged all-MiniLM-L6-v2); it is also the frozen passage encoder. ``fusion``: how retrieved passages reach the
    task head. ``passage_encoder`` (attention only): ``shared`` encodes passages with the trainable encoder,
    ``frozen`` with a fixed copy of the initial encoder, once per distinct passage (fast). ``passage_memory``
    (attention): attend over each passage's token states (``tokens``) or one vector per passage (``pooled``: the
    mean-pooled shared states, or the frozen encoder's sentence embedding). Frozen token states are kept on disk
    in a token store (``ralm_es.model.token_store``), the folder ``token_store`` (None: one per encoder revision and
    passage length under the cache home); it applies to frozen tokens only. ``runtime``: what runs the frozen
    passage encoder (``torch``, ``torch-bf16``, or ONNX Runtime on the CPU: ``onnx``, ``onnx-int8``); frozen passages
    only.
    ``passage_max_length``: tokens of a passage, with its [CLS] and [SEP]; ``pair`` appends the passage (and its
    [SEP]) to the input of up to ``max_length`` tokens. ``score_signals`` (``attention``, ``pair``): after the mode's
    fusion step, add each hit's retrieval scores as the ``scores`` mode reads them. ``passage_case_features``
    (frozen token memory): add a learned word-case embedding to each stored passage token, as ``case_features``
    does for the input (the default encoder is uncased, so the frozen states do not say which words were capitalised;
    shared passages get ``case_features`` through the encoder itself). ``concat_passages`` (``attention``): also
    append the passages to the input, each after a [SEP] within ``max_length``, as ``concat`` does, so the encoder
    reads the nearest ones with the input and the input's states then attend over all k."""

    encoder: str | None = None
    fusion: Fusion = "attention"
    k: int = 8
    max_length: int = 128
    passage_max_length: int = 48
    passage_encoder: Literal["shared", "frozen"] = "shared"
    passage_memory: Literal["tokens", "pooled"] = "tokens"
    token_store: str | None = None
    runtime: Runtime = "torch"
    heads: int = 4
    case_features: bool = True
    dropout: float = 0.1
    score_signals: bool = False
    passage_case_features: bool = False
    concat_passages: bool = False

    def __post_init__(self) -> None:
        check_bounds("model", self, ("k", "heads"), 1)
        check_choices("model", self, ("fusion", "passage_encoder", "passage_memory", "runtime"))
        for name, value in (("max_length", self.max_length), ("passage_max_length", self.passage_max_length)):
            if value < 3:
                raise ConfigError(f"model.{name} must be at least 3 ([CLS], one token, [SEP]), got {value}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout must be at least 0 and below 1, got {self.dropout}")


@dataclass(frozen=True)
class ScoreScale:
    """What sets the scale of retrieval scores: the retrieval mode, hybrid's fusion settings and, where dense search
    takes part, the query encoder's revision."""

    mode: str
    fusion: dict[str, Any]
    # The revision of the encoder that encoded the queries; None when none did (BM25 alone).
    encoder: str | None = None

    def __post_init__(self) -> None:
        # A run saved before single modes recorded their ranking settings holds none: read as the defaults.
        object.__setattr__(self, "fusion", recorded_ranking(self.mode, self.fusion))

    def describe(self) -> str:
        fusion = ", ".join(f"{k} {v}" for k, v in self.fusion.items())
        encoder = f", encoder {self.encoder}" if self.encoder else ""
        return f"mode {self.mode}" + (f" ({fusion})" if fusion else "") + encoder


@dataclass(frozen=True, kw_only=True)
class ModelSpec(ModelSettings):
    """The settings plus what training reads from the data: the task, its labels and, with frozen passages, the
    fixed encoder's vector size and revision (the content hash predictions check the encoder against) and, for a mode
    that reads retrieval scores, the retrieval they came from."""

    task: Literal["ner", "classification"]
    labels: tuple[str, ...] = ()
    frozen_dim: int = 0
    frozen_revision: str = ""
    # For a mode that reads retrieval scores on their own scale: the retrieval of the training cache (mode, fusion
    # settings, encoder revision); hits of another retrieval are refused when predicting.
    score_scale: ScoreScale | None = None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "labels": list(self.labels)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelSpec:
        """A spec from ``model.json``; a field this version does not know is a TypeError naming it."""
        if data.get("passage_encoder") == "frozen" and "frozen_revision" not in data:
            # Saved before token stores, when frozen passages were always one pooled vector each.
            data = {**data, "passage_memory": "pooled"}
        scale = data.get("score_scale")
        return cls(
            **{
                **data,
                "labels": tuple(data.get("labels", ())),
                "score_scale": ScoreScale(**scale) if scale is not None else None,
            }
        )
