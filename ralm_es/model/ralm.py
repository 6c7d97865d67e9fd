"""The retrieval-augmented encoder: a Hugging Face encoder with word-case embeddings, optional passage fusion
(``none`` | ``concat`` | ``attention``, one code path) and a token- or sequence-level classification head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel

from ralm_es.embed import mean_pool
from ralm_es.model.fusion import PassageAttention, score_prior
from ralm_es.model.inputs import IGNORE, N_CASES
from ralm_es.model.spec import ModelSpec


@dataclass
class Output:
    logits: torch.Tensor
    loss: torch.Tensor | None
    # (B, T, k) for NER, (B, 1, k) for classification; None unless fusion is attention.
    passage_weights: torch.Tensor | None


class RalmModel(nn.Module):
    def __init__(self, spec: ModelSpec, encoder: PreTrainedModel) -> None:
        super().__init__()
        self.spec = spec
        # The pooler is unused (we mean-pool) and would leave DDP with parameters that never get gradients.
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None
        self.encoder = encoder
        hidden = int(encoder.config.hidden_size)
        self.case_embed = nn.Embedding(N_CASES, hidden) if spec.case_features else None
        if self.case_embed is not None:
            # Zero start: the pretrained encoder sees its usual inputs until case proves useful.
            nn.init.zeros_(self.case_embed.weight)
        self.fusion = PassageAttention(hidden, spec.heads, spec.dropout) if spec.fusion == "attention" else None
        use_frozen = spec.fusion == "attention" and spec.passage_encoder == "frozen"
        self.passage_proj = nn.Linear(spec.frozen_dim, hidden) if use_frozen else None
        self.drop = nn.Dropout(spec.dropout)
        self.head = nn.Linear(hidden, len(spec.labels))

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        case_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        embeds = self.encoder.get_input_embeddings()(input_ids)
        if self.case_embed is not None:
            embeds = embeds + self.case_embed(case_ids)
        if token_type_ids is not None and getattr(self.encoder.config, "type_vocab_size", 0) < 2:
            token_type_ids = None
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        return self.encoder(inputs_embeds=embeds, attention_mask=attention_mask, **kwargs).last_hidden_state

    def passages(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Passage memory (B, S, d) and its mask (B, S); S is k (one vector each) or k times passage length."""
        valid = batch["passage_valid"]
        if self.passage_proj is not None:
            return self.passage_proj(batch["passage_vectors"]), valid
        ids, mask = batch["passage_input_ids"], batch["passage_attention_mask"]
        b, k, length = ids.shape
        flat_valid = valid.reshape(-1)
        if not flat_valid.any():
            hidden = int(self.encoder.config.hidden_size)
            slots = k if self.spec.passage_memory == "pooled" else k * length
            return ids.new_zeros(b, slots, hidden, dtype=torch.float), ids.new_zeros(b, slots, dtype=torch.bool)
        states = self.encode(
            ids.view(-1, length)[flat_valid],
            mask.view(-1, length)[flat_valid],
            batch["passage_case_ids"].view(-1, length)[flat_valid],
        )
        if self.spec.passage_memory == "pooled":
            memory = states.new_zeros(b * k, states.shape[-1])
            memory[flat_valid] = mean_pool(states, mask.view(-1, length)[flat_valid])
            return memory.view(b, k, -1), valid
        memory = states.new_zeros(b * k, length, states.shape[-1])
        memory[flat_valid] = states
        return memory.view(b, k * length, -1), mask.view(b, k * length).bool()

    def forward(self, batch: dict[str, torch.Tensor]) -> Output:
        mask = batch["attention_mask"]
        states = self.encode(batch["input_ids"], mask, batch["case_ids"], batch["token_type_ids"])
        query = states if self.spec.task == "ner" else mean_pool(states, mask).unsqueeze(1)
        weights = None
        if self.fusion is not None:
            memory, memory_mask = self.passages(batch)
            prior = score_prior(batch["passage_scores"], batch["passage_valid"]).to(query.dtype)
            query, weights = self.fusion(query, memory, memory_mask, prior)
        logits = self.head(self.drop(query))
        if self.spec.task == "classification":
            logits = logits.squeeze(1)
        loss = None
        if "labels" in batch:
            loss = nn.functional.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1), ignore_index=IGNORE
            )
        return Output(logits=logits, loss=loss, passage_weights=weights)
