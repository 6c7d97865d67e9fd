"""Cross-attention from the input's states to retrieved passages, with the retrieval scores as a prior, a learned
gate and a residual. Pure tensor code: the weights each passage got are returned for ``--explain``."""

from __future__ import annotations

import math

import torch
from torch import nn


def score_prior(scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Retrieval scores standardised over each example's passages, so BM25, cosine and RRF scales all work."""
    count = valid.sum(-1, keepdim=True).clamp(min=1)
    mean = (scores * valid).sum(-1, keepdim=True) / count
    var = (((scores - mean) * valid) ** 2).sum(-1, keepdim=True) / count
    return torch.where(valid, (scores - mean) / (var.sqrt() + 1e-6), torch.zeros_like(scores))


class PassageAttention(nn.Module):
    """Multi-head attention of ``query`` (B, T, d) over ``memory`` (B, S, d), where memory slot ``s`` belongs to
    passage ``s // (S // k)``. The per-passage prior (B, k) is added to the logits of that passage's slots, scaled by
    a learned weight per head. Output: ``LayerNorm(query + gate * attended)`` and the head-averaged weights per
    passage (B, T, k)."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"fusion heads ({heads}) must divide the encoder's hidden size ({hidden})")
        self.heads = heads
        self.q = nn.Linear(hidden, hidden)
        self.k = nn.Linear(hidden, hidden)
        self.v = nn.Linear(hidden, hidden)
        self.o = nn.Linear(hidden, hidden)
        self.prior_scale = nn.Parameter(torch.ones(heads))
        self.gate = nn.Linear(2 * hidden, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.drop = nn.Dropout(dropout)

    def forward(
        self, query: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor, prior: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, d = query.shape
        s, k = memory.shape[1], prior.shape[1]
        dh = d // self.heads
        q = self.q(query).view(b, t, self.heads, dh).transpose(1, 2)
        key = self.k(memory).view(b, s, self.heads, dh).transpose(1, 2)
        value = self.v(memory).view(b, s, self.heads, dh).transpose(1, 2)
        logits = (q @ key.transpose(-1, -2)).float() / math.sqrt(dh)
        slot_prior = prior.repeat_interleave(s // k, dim=1)
        logits = logits + self.prior_scale.view(1, -1, 1, 1) * slot_prior.view(b, 1, 1, s)
        has_memory = memory_mask.any(-1)
        # An example without passages attends nowhere: its attended vector is zeroed below, not NaN.
        mask = memory_mask | ~has_memory.unsqueeze(-1)
        logits = logits.masked_fill(~mask.view(b, 1, 1, s), float("-inf"))
        weights = logits.softmax(-1)
        attended = (self.drop(weights).to(value.dtype) @ value).transpose(1, 2).reshape(b, t, d)
        attended = self.o(attended) * has_memory.view(b, 1, 1).to(attended.dtype)
        gate = torch.sigmoid(self.gate(torch.cat([query, attended], dim=-1)))
        fused = self.norm(query + self.drop(gate * attended))
        per_passage = weights.mean(1).view(b, t, k, s // k).sum(-1) * has_memory.view(b, 1, 1)
        return fused, per_passage
