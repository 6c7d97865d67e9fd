"""The retrieval-augmented encoder: a Hugging Face encoder with word-case embeddings, the modules and fusion step
of the spec's fusion strategy (``ralm_es.model.strategies``), and a token- or sequence-level classification head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel

from ralm_es.embed import mean_pool
from ralm_es.model.inputs import IGNORE
from ralm_es.model.spec import ModelSpec
from ralm_es.model.strategies import fusion_strategy
from ralm_es.model.tokens import N_CASES


@dataclass
class Output:
    logits: torch.Tensor
    loss: torch.Tensor | None
    # (B, T, k) for NER, (B, 1, k) for classification; None for a fusion mode that weighs no passages.
    passage_weights: torch.Tensor | None


class RalmModel(nn.Module):
    def __init__(self, spec: ModelSpec, encoder: PreTrainedModel) -> None:
        super().__init__()
        self.spec = spec
        self.strategy = fusion_strategy(spec.fusion)
        # The pooler is unused (we mean-pool) and would leave DDP with parameters that never get gradients.
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None
        self.encoder = encoder
        hidden = int(encoder.config.hidden_size)
        self.case_embed = nn.Embedding(N_CASES, hidden) if spec.case_features else None
        if self.case_embed is not None:
            # Zero start: the pretrained encoder sees its usual inputs until case proves useful.
            nn.init.zeros_(self.case_embed.weight)
        # Registered here, between the case embedding and the head, so parameter order and initialisation are
        # those of the runs saved before the strategies existed.
        for name, module in self.strategy.modules(spec, hidden).items():
            self.add_module(name, module)
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

    def forward(self, batch: dict[str, torch.Tensor]) -> Output:
        mask = batch["attention_mask"]
        states = self.encode(batch["input_ids"], mask, batch["case_ids"], batch["token_type_ids"])
        query = states if self.spec.task == "ner" else mean_pool(states, mask).unsqueeze(1)
        query, weights = self.strategy.fuse(self, query, batch)
        logits = self.head(self.drop(query))
        if self.spec.task == "classification":
            logits = logits.squeeze(1)
        loss = None
        if "labels" in batch:
            loss = nn.functional.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1), ignore_index=IGNORE
            )
        return Output(logits=logits, loss=loss, passage_weights=weights)
