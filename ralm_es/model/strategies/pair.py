"""``pair`` (classification): cross-encoder style. The trainable encoder reads each (input, passage) pair as one
sequence, ``[CLS] input [SEP] passage [SEP]``, so the input's tokens attend to the passage's; each pair is
mean-pooled to one vector and the pooled input alone attends over the k pair vectors
(``model.fusion.PassageAttention``, the retrieval scores as a prior, a gate and a residual). The weight each pair
got is the passage's weight for ``--explain``. An example without passages is the input alone (the residual).
Cost: k encoder passes per example of up to ``max_length + passage_max_length`` tokens each."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ralm_es.embed import mean_pool
from ralm_es.model.fusion import PassageAttention, score_prior
from ralm_es.model.strategies.base import VALID, FusionStrategy, passage_slots
from ralm_es.model.tokens import CASE_PAD
from ralm_es.retrieve.cache import CacheHit

if TYPE_CHECKING:
    from ralm_es.model.inputs import Features, FeatureSet
    from ralm_es.model.ralm import RalmModel
    from ralm_es.model.spec import ModelSettings, ModelSpec


class PairFusion(FusionStrategy):
    name = "pair"
    tasks = ("classification",)
    slotted = True
    reads = frozenset({*FusionStrategy.reads, "heads"})

    def encoder_length(self, settings: ModelSettings) -> tuple[int, str]:
        # The input with its [CLS] and [SEP], then the passage without its [CLS].
        return settings.max_length + settings.passage_max_length - 1, "model.max_length + model.passage_max_length - 1"

    def add_passages(self, fs: FeatureSet, feature: Features, rows: list[int], hits: list[CacheHit]) -> None:
        feature.passages = rows
        feature.scores = [hit.score for hit in hits]

    def batch(self, fs: FeatureSet, feats: list[Features]) -> dict[str, torch.Tensor]:
        """(B, k, W) pair tensors: the input's own tokens (its [SEP] included), then the passage and a [SEP], as
        token type 1; the passages' table tokens are already cut to ``passage_max_length - 2``."""
        k = fs.spec.k
        out = passage_slots(feats, k)
        rows = [[fs.table.tokens[p] for p in f.passages] for f in feats]
        width = max((len(f.input_ids) + len(t.ids) + 1 for f, r in zip(feats, rows, strict=True) for t in r), default=1)
        ids = torch.full((len(feats), k, width), fs.pad_id, dtype=torch.long)
        types = torch.zeros((len(feats), k, width), dtype=torch.long)
        cases = torch.full((len(feats), k, width), CASE_PAD, dtype=torch.long)
        mask = torch.zeros((len(feats), k, width), dtype=torch.long)
        for b, (f, row) in enumerate(zip(feats, rows, strict=True)):
            for j, tok in enumerate(row):
                n = len(f.input_ids) + len(tok.ids) + 1
                ids[b, j, :n] = torch.tensor([*f.input_ids, *tok.ids, fs.sep_id])
                types[b, j, :n] = torch.tensor([*f.token_type_ids, *[1] * (len(tok.ids) + 1)])
                cases[b, j, :n] = torch.tensor([*f.case_ids, *tok.cases, CASE_PAD])
                mask[b, j, :n] = 1
        out.update(
            {"pair_input_ids": ids, "pair_token_type_ids": types, "pair_case_ids": cases, "pair_attention_mask": mask}
        )
        return out

    def modules(self, spec: ModelSpec, hidden: int) -> dict[str, nn.Module]:
        return {"fusion": PassageAttention(hidden, spec.heads, spec.dropout)}

    def fuse(
        self, model: RalmModel, query: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        valid = batch[VALID]
        prior = score_prior(batch["passage_scores"], valid).to(query.dtype)
        fused, weights = model.get_submodule("fusion")(query, self._pairs(model, batch), valid, prior)
        return fused, weights

    def _pairs(self, model: RalmModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One mean-pooled vector per pair (B, k, d); zeros in the slots without a passage, which are not encoded."""
        valid = batch[VALID]
        ids, mask = batch["pair_input_ids"], batch["pair_attention_mask"]
        b, k, length = ids.shape
        hidden = int(model.encoder.config.hidden_size)
        flat_valid = valid.reshape(-1)
        if not flat_valid.any():
            return ids.new_zeros(b, k, hidden, dtype=torch.float)
        flat_mask = mask.view(-1, length)[flat_valid]
        states = model.encode(
            ids.view(-1, length)[flat_valid],
            flat_mask,
            batch["pair_case_ids"].view(-1, length)[flat_valid],
            batch["pair_token_type_ids"].view(-1, length)[flat_valid],
        )
        pooled = mean_pool(states, flat_mask)
        memory = pooled.new_zeros(b * k, pooled.shape[-1])
        memory[flat_valid] = pooled
        return memory.view(b, k, -1)
