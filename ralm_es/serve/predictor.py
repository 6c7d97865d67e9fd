"""A trained run folder answering requests: examples built in memory, passages retrieved live, labels out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ralm_es.inference.passages import check_score_scale, frozen_embedder
from ralm_es.inference.predictions import predict
from ralm_es.inference.records import PredictionRecord, prediction_record
from ralm_es.inference.runs import LoadedRun, open_run
from ralm_es.model.inputs import build_features
from ralm_es.model.spec import ScoreScale
from ralm_es.retrieve.cache import CacheHit
from ralm_es.retrieve.retriever import Retriever
from ralm_es.tasks import DataError, Example

# Examples per model forward pass within one /predict batch (the requests serve.batch_size gathers).
PREDICT_BATCH = 32


@dataclass
class PredictInput:
    """``id``: the caller's id for the input, None where it gave none (then the prediction reports
    ``fallback_id``, the input's position in its request, or in this call); only the caller's id is a document id
    for ``retrieval.exclude``."""

    words: list[str]
    id: str | None = None
    pair_words: list[str] | None = None
    fallback_id: str | None = None


class Predictor:
    """Labels inputs with ``run``; a retrieval-augmented run gets its top ``k`` passages from ``retriever``."""

    def __init__(self, run: LoadedRun, retriever: Retriever | None = None) -> None:
        spec = run.model.spec
        if run.model.strategy.uses_passages and retriever is None:
            raise DataError(f"the model in {run.folder} uses fusion '{spec.fusion}' and needs a retriever")
        if retriever is not None and run.model.strategy.reads_scores:
            s = retriever.settings
            encoder = retriever.query_encoder
            live = ScoreScale(s.mode, s.fusion_header(), encoder.revision if encoder is not None else None)
            check_score_scale(spec, live, f"the live retriever for {run.folder}")
        self.run = run
        self.retriever = retriever
        self.embed = frozen_embedder(spec, run.device_name)

    @classmethod
    def open(cls, folder: str | Path, retriever: Retriever | None = None, device: str = "auto") -> Predictor:
        return cls(open_run(folder, device), retriever)

    @property
    def task(self) -> str:
        return self.run.model.spec.task

    def info(self) -> dict[str, Any]:
        spec = self.run.model.spec
        return {
            "run": str(self.run.folder),
            "task": spec.task,
            "fusion": spec.fusion,
            "k": spec.k,
            "labels": spec.labels,
        }

    def predict(self, inputs: list[PredictInput], explain: bool = False) -> list[PredictionRecord]:
        spec = self.run.model.spec
        examples = [
            Example(
                id=item.id if item.id is not None else item.fallback_id or str(i),
                words=tuple(item.words),
                source=f"inputs[{i}]",
                pair_words=tuple(item.pair_words) if item.pair_words else None,
            )
            for i, item in enumerate(inputs)
        ]
        hits: Sequence[Sequence[CacheHit]] = [[] for _ in examples]
        if self.run.model.strategy.uses_passages:
            assert self.retriever is not None
            # The callers' own ids (not the positions standing in for missing ones) for retrieval.exclude.
            hits = self.retriever.search_many(
                [ex.text for ex in examples], k=spec.k, input_ids=[item.id for item in inputs]
            )
        fs = build_features(examples, hits, self.run.tokenizer, spec, None, self.embed)
        preds = predict(self.run.model, fs, PREDICT_BATCH, next(self.run.model.parameters()).device)
        return [
            prediction_record(ex, ex_hits, pred, explain)
            for ex, ex_hits, pred in zip(examples, fs.hits, preds, strict=True)
        ]
