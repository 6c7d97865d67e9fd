"""The retrieval-augmented encoder: a Hugging Face encoder with word-case embeddings, the modules and fusion step
of the spec's fusion strategy (``ralm_es.model.strategies``), and a token- or sequence-level classification head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel

from ralm_es.model.labelling import IGNORE, LABELLINGS
from ralm_es.model.spec import ModelSpec
from ralm_es.model.strategies import strategy_of
from ralm_es.model.strategies.base import VALID
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
        self.strategy = strategy_of(spec)
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
        self.labelling = LABELLINGS[spec.task]

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

    def forward(self, batch: dict[str, torch.Tensor], consistency: float = 0.0) -> Output:
        """``consistency`` > 0 (``train.consistency_weight``, a mode with passage slots, labelled batch) adds CL-KL
        (Wang et al. 2021) to the loss: KL from the prediction with passages, held fixed as the target, to the
        prediction on the input alone (every slot cleared), so the input-alone view learns from the passages."""
        mask = batch["attention_mask"]
        states = self.encode(batch["input_ids"], mask, batch["case_ids"], batch["token_type_ids"])
        query = self.labelling.query(states, mask)
        fused, weights = self.strategy.fuse(self, query, batch)
        logits = self._logits(fused)
        loss = None
        if "labels" in batch:
            labels = batch["labels"].reshape(-1)
            flat = logits.float().reshape(-1, logits.shape[-1])
            loss = nn.functional.cross_entropy(flat, labels, ignore_index=IGNORE)
            if consistency > 0:
                alone, _ = self.strategy.fuse(self, query, {**batch, VALID: torch.zeros_like(batch[VALID])})
                alone_log = self._logits(alone).float().reshape(-1, logits.shape[-1]).log_softmax(-1)
                kl = nn.functional.kl_div(alone_log, flat.detach().log_softmax(-1), log_target=True, reduction="none")
                counted = labels != IGNORE
                loss = loss + consistency * kl.sum(-1)[counted].mean()
        return Output(logits=logits, loss=loss, passage_weights=weights)

    def _logits(self, fused: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.drop(fused))
        return self.labelling.logits(logits)
