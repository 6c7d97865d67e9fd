"""``attention``: the input's states attend over the passages (``model.fusion.PassageAttention``), with the
retrieval scores as a prior. Its variants: ``passage_encoder`` ``shared`` (the trainable encoder reads each
passage in every batch) or ``frozen`` (a fixed encoder reads each distinct passage once, its states projected to
the model's width), and ``passage_memory`` ``tokens`` (attend over every passage token: with frozen passages, the
fixed encoder's token states from the token store) or ``pooled`` (one vector per passage: mean-pooled shared
states, or the frozen encoder's sentence embedding)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from ralm_es.embed import mean_pool
from ralm_es.model.fusion import PassageAttention, score_prior
from ralm_es.model.strategies.base import VALID, Embed, FusionStrategy, passage_slots
from ralm_es.model.tokens import N_CASES, PassageTable, stored_token_cases
from ralm_es.retrieve.cache import CacheHit

if TYPE_CHECKING:
    from ralm_es.model.inputs import Features, FeatureSet
    from ralm_es.model.ralm import RalmModel
    from ralm_es.model.spec import ModelSettings, ModelSpec


class AttentionFusion(FusionStrategy):
    name = "attention"
    slotted = True
    takes_context = True
    reads = frozenset({*FusionStrategy.reads, "passage_encoder", "passage_memory", "heads"})

    def frozen_passages(self, settings: ModelSettings) -> bool:
        return settings.passage_encoder == "frozen"

    def stored_tokens(self, settings: ModelSettings) -> bool:
        return self.frozen_passages(settings) and settings.passage_memory == "tokens"

    def encoder_length(self, settings: ModelSettings) -> tuple[int, str]:
        # Shared passages go through the trainable encoder too; frozen ones are cut to their encoder's limit.
        if not self.frozen_passages(settings) and settings.passage_max_length > settings.max_length:
            return settings.passage_max_length, "model.passage_max_length"
        return super().encoder_length(settings)

    def fill_table(
        self, spec: ModelSpec, table: PassageTable, tokenizer: PreTrainedTokenizerBase, embed: Embed | None
    ) -> None:
        if not self.frozen_passages(spec):
            super().fill_table(spec, table, tokenizer, embed)
            return
        if embed is None:
            raise ValueError("frozen passage vectors need an embed_passages function")
        if self.stored_tokens(spec):
            table.states = embed.token_states(table.ids, table.texts)
            if spec.passage_case_features:
                length = min(spec.passage_max_length, tokenizer.model_max_length)
                table.state_cases = stored_token_cases(tokenizer, table.texts, length)
                if any(len(c) != len(s) for c, s in zip(table.state_cases, table.states, strict=True)):
                    raise ValueError("the token store's states do not line up with the passages' tokens")
        else:
            table.vectors = embed(table.texts)

    def add_passages(self, fs: FeatureSet, feature: Features, rows: list[int], hits: list[CacheHit]) -> None:
        feature.passages = rows
        feature.scores = [hit.score for hit in hits]

    def batch(self, fs: FeatureSet, feats: list[Features]) -> dict[str, torch.Tensor]:
        k = fs.spec.k
        out = passage_slots(feats, k)
        if fs.table.states is not None:
            return {**out, **_stored_states(fs.table, feats, k, fs.spec.frozen_dim)}
        if self.frozen_passages(fs.spec):
            assert fs.table.vectors is not None
            vectors = torch.zeros(len(feats), k, fs.table.vectors.shape[1])
            for b, f in enumerate(feats):
                if f.passages:
                    vectors[b, : len(f.passages)] = torch.from_numpy(fs.table.vectors[f.passages])
            out["passage_vectors"] = vectors
            return out
        rows = [[fs.table.tokens[p] for p in f.passages] for f in feats]
        width = 2 + max((len(t.ids) for r in rows for t in r), default=0)
        ids = torch.full((len(feats), k, width), fs.pad_id, dtype=torch.long)
        cases = torch.zeros((len(feats), k, width), dtype=torch.long)
        mask = torch.zeros((len(feats), k, width), dtype=torch.long)
        for b, row in enumerate(rows):
            for j, tok in enumerate(row):
                n = len(tok.ids) + 2
                ids[b, j, :n] = torch.tensor([fs.cls_id, *tok.ids, fs.sep_id])
                cases[b, j, 1 : n - 1] = torch.tensor(tok.cases, dtype=torch.long)
                mask[b, j, :n] = 1
        out.update({"passage_input_ids": ids, "passage_case_ids": cases, "passage_attention_mask": mask})
        return out

    def modules(self, spec: ModelSpec, hidden: int) -> dict[str, nn.Module]:
        out: dict[str, nn.Module] = {"fusion": PassageAttention(hidden, spec.heads, spec.dropout)}
        if self.frozen_passages(spec):
            out["passage_proj"] = nn.Linear(spec.frozen_dim, hidden)
        if spec.passage_case_features:
            out["passage_case"] = nn.Embedding(N_CASES, hidden)
            # Zero start, as the input's case embedding: the stored states come through unchanged at first.
            nn.init.zeros_(out["passage_case"].weight)
        return out

    def fuse(
        self, model: RalmModel, query: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        memory, memory_mask = self._memory(model, batch)
        prior = score_prior(batch["passage_scores"], batch[VALID]).to(query.dtype)
        fused, weights = model.get_submodule("fusion")(query, memory, memory_mask, prior)
        return fused, weights

    def _memory(self, model: RalmModel, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Passage memory (B, S, d) and its mask (B, S); S is k (one vector each) or k times passage length."""
        spec = model.spec
        valid = batch[VALID]
        if self.stored_tokens(spec):
            proj = model.get_submodule("passage_proj")
            states, mask = batch["passage_states"], batch["passage_token_mask"]
            b, k, length, dim = states.shape
            memory = proj(states.view(b, k * length, dim).to(proj.weight.dtype))
            if spec.passage_case_features:
                memory = memory + model.get_submodule("passage_case")(batch["passage_token_cases"].view(b, k * length))
            # A dropped slot (train.passage_dropout) keeps its states in the batch: its mask is cleared here.
            return memory, (mask & valid.unsqueeze(-1)).view(b, k * length)
        if self.frozen_passages(spec):
            return model.get_submodule("passage_proj")(batch["passage_vectors"]), valid
        ids, mask = batch["passage_input_ids"], batch["passage_attention_mask"]
        b, k, length = ids.shape
        flat_valid = valid.reshape(-1)
        if not flat_valid.any():
            hidden = int(model.encoder.config.hidden_size)
            slots = k if spec.passage_memory == "pooled" else k * length
            return ids.new_zeros(b, slots, hidden, dtype=torch.float), ids.new_zeros(b, slots, dtype=torch.bool)
        states = model.encode(
            ids.view(-1, length)[flat_valid],
            mask.view(-1, length)[flat_valid],
            batch["passage_case_ids"].view(-1, length)[flat_valid],
        )
        if spec.passage_memory == "pooled":
            memory = states.new_zeros(b * k, states.shape[-1])
            memory[flat_valid] = mean_pool(states, mask.view(-1, length)[flat_valid])
            return memory.view(b, k, -1), valid
        memory = states.new_zeros(b * k, length, states.shape[-1])
        memory[flat_valid] = states
        # A dropped slot (train.passage_dropout) keeps its tokens in the batch: its mask is cleared here.
        slot_mask = mask.bool() & valid.unsqueeze(-1)
        return memory.view(b, k * length, -1), slot_mask.view(b, k * length)


def _stored_states(table: PassageTable, feats: list[Features], k: int, dim: int) -> dict[str, torch.Tensor]:
    """The frozen token states of each example's passages (B, k, L, dim) in float16, L the longest passage of the
    batch (at least 1, so a batch without passages still has a memory), which tokens are real (B, k, L) and, when
    the table has them, each token's word-case class (B, k, L)."""
    assert table.states is not None
    states, state_cases = table.states, table.state_cases
    length = max((len(states[p]) for f in feats for p in f.passages), default=1)
    out = np.zeros((len(feats), k, length, dim), dtype=np.float16)
    mask = torch.zeros((len(feats), k, length), dtype=torch.bool)
    cases = torch.zeros((len(feats), k, length), dtype=torch.long)
    for b, f in enumerate(feats):
        for j, p in enumerate(f.passages):
            n = len(states[p])
            out[b, j, :n] = states[p]
            mask[b, j, :n] = True
            if state_cases is not None:
                cases[b, j, :n] = torch.tensor(state_cases[p], dtype=torch.long)
    batch = {"passage_states": torch.from_numpy(out), "passage_token_mask": mask}
    return {**batch, "passage_token_cases": cases} if state_cases is not None else batch
