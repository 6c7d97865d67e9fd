"""``scores`` (classification): how strongly the corpus matches the input, read from the retrieval scores alone.
Each of the k hits gives its fused score, its BM25 score (log1p) and its dense cosine, each with a flag for whether
the component found it; batch normalisation (``SignalNorm``) puts their scales side by side, and a small MLP adds
the result to the pooled input vector before the head. Unlike the attention prior, which is standardised within each
example, the absolute level is kept: a claim the corpus has no abstract for (SciFact's NOT_ENOUGH_INFO) matches it
more weakly. No passage text is tokenized or encoded, so a step costs about what ``none`` costs. The MLP's last
layer starts at zero, so training starts from the input alone; an example without passages (retrieval found nothing,
every slot dropped, or the input-alone view of ``train.consistency_weight``) gives the MLP zeros and leaves the
normalisation's statistics alone."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from ralm_es.model.strategies.base import VALID, Embed, FusionStrategy, Wrapped, passage_slots
from ralm_es.model.tokens import PassageTable
from ralm_es.retrieve.cache import CacheHit

if TYPE_CHECKING:
    from ralm_es.model.inputs import Features, FeatureSet
    from ralm_es.model.ralm import RalmModel
    from ralm_es.model.spec import ModelSpec

SIGNALS = 5  # fused score, log1p(BM25), dense cosine, found by BM25, found by dense


def hit_signals(hit: CacheHit) -> list[float]:
    """One hit's retrieval signals; a component that did not find the hit (or did not run) gives 0 and its flag 0."""
    bm25, dense = hit.scores.get("bm25"), hit.scores.get("dense")
    return [
        hit.score,
        math.log1p(max(bm25, 0.0)) if bm25 is not None else 0.0,
        dense if dense is not None else 0.0,
        float(bm25 is not None),
        float(dense is not None),
    ]


class SignalNorm(nn.BatchNorm1d):
    """Batch normalisation of the examples that have passages; the others stay zero. A training batch with one such
    example cannot give batch statistics and is normalised with the running ones."""

    def forward(self, x: torch.Tensor, has: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)
        if int(has.sum()) > 1 or (has.any() and not self.training):
            out[has] = super().forward(x[has])
        elif has.any():
            out[has] = nn.functional.batch_norm(
                x[has], self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return out


def signal_batch(feats: list[Features], k: int) -> dict[str, torch.Tensor]:
    """The signals of each example's k slots (B, k, SIGNALS), zero for a slot without a passage."""
    signals = torch.zeros(len(feats), k, SIGNALS)
    for b, f in enumerate(feats):
        if f.signals:
            signals[b, : len(f.signals)] = torch.tensor(f.signals)
    return {"passage_signals": signals}


def signal_modules(spec: ModelSpec, hidden: int) -> dict[str, nn.Module]:
    width = spec.k * SIGNALS
    mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, hidden))
    nn.init.zeros_(mlp[-1].weight)
    nn.init.zeros_(mlp[-1].bias)
    # No affine part of its own: the first linear layer is one, and a batch without passages leaves it unused.
    return {"score_norm": SignalNorm(width, affine=False), "score_mlp": mlp}


def add_signals(model: RalmModel, states: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``states`` (B, T, d) plus the MLP's reading of each example's signals, the same at every position."""
    valid = batch[VALID]
    # A dropped slot (train.passage_dropout) keeps its signals in the batch: they are cleared here.
    signals = (batch["passage_signals"] * valid.unsqueeze(-1)).flatten(1)
    mlp = model.get_submodule("score_mlp")
    normed = model.get_submodule("score_norm")(signals.float(), valid.any(-1))
    return states + mlp(normed.to(mlp[0].weight.dtype)).unsqueeze(1).to(states.dtype)


class ScoreFusion(FusionStrategy):
    name = "scores"
    tasks = ("classification",)
    slotted = True
    reads_scores = True
    reads = frozenset({"k"})

    def fill_table(
        self, spec: ModelSpec, table: PassageTable, tokenizer: PreTrainedTokenizerBase, embed: Embed | None
    ) -> None:
        """Nothing: the passages' texts are never read."""

    def add_passages(self, fs: FeatureSet, feature: Features, rows: list[int], hits: list[CacheHit]) -> None:
        feature.passages = rows
        feature.scores = [hit.score for hit in hits]
        feature.signals = [hit_signals(hit) for hit in hits]

    def batch(self, fs: FeatureSet, feats: list[Features]) -> dict[str, torch.Tensor]:
        return {**passage_slots(feats, fs.spec.k), **signal_batch(feats, fs.spec.k)}

    def modules(self, spec: ModelSpec, hidden: int) -> dict[str, nn.Module]:
        return signal_modules(spec, hidden)

    def fuse(
        self, model: RalmModel, query: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return add_signals(model, query, batch), None


class WithSignals(Wrapped):
    """Another mode with passage slots (``attention``, ``pair``) and, after its fusion step, the hits' retrieval
    signals added as ``scores`` adds them (``model.score_signals``): the evidence read, and how well it matched."""

    def __init__(self, inner: FusionStrategy) -> None:
        super().__init__(inner)
        self.reads_scores = True

    def add_passages(self, fs: FeatureSet, feature: Features, rows: list[int], hits: list[CacheHit]) -> None:
        self.inner.add_passages(fs, feature, rows, hits)
        feature.signals = [hit_signals(hit) for hit in hits]

    def batch(self, fs: FeatureSet, feats: list[Features]) -> dict[str, torch.Tensor]:
        return {**self.inner.batch(fs, feats), **signal_batch(feats, fs.spec.k)}

    def modules(self, spec: ModelSpec, hidden: int) -> dict[str, nn.Module]:
        return {**self.inner.modules(spec, hidden), **signal_modules(spec, hidden)}

    def fuse(
        self, model: RalmModel, query: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        fused, weights = self.inner.fuse(model, query, batch)
        return add_signals(model, fused, batch), weights
