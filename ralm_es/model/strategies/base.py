"""What a fusion mode decides, in one object: which passages an example keeps, how they are tokenized or embedded,
what they add to an example's features and to a batch, which modules the model gets, and how they meet the input's
states. The defaults are those of a mode that reads passages and adds nothing; each mode overrides its part."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from ralm_es.model.tokens import PassageTable, tokenize_words
from ralm_es.retrieve.cache import CacheHit

if TYPE_CHECKING:
    from ralm_es.model.inputs import Features, FeatureSet
    from ralm_es.model.ralm import RalmModel
    from ralm_es.model.spec import ModelSettings, ModelSpec


class Embed(Protocol):
    """The frozen passage encoder (``ralm_es.inference.passages.FrozenPassages``): called on texts, one vector
    each; ``token_states`` gives each passage's token states (from the token store) by passage id."""

    def __call__(self, texts: list[str]) -> np.ndarray: ...

    def token_states(self, ids: list[str], texts: list[str]) -> list[np.ndarray]: ...


# The ``model:`` settings that only some modes read (the others, such as ``max_length`` and ``dropout``, every mode
# reads).
MODE_SETTINGS = ("k", "passage_max_length", "passage_encoder", "passage_memory", "heads")

# The batch key of a mode with passage slots: (B, k), True where slot j holds a passage.
VALID = "passage_valid"


class FusionStrategy:
    """One ``model.fusion`` mode. Stateless: the spec, features and model it works on are passed in."""

    name: ClassVar[str]
    # False: the mode never reads passages, so it needs no retrieval cache and no retriever.
    uses_passages: ClassVar[bool] = True
    # The ``task.type`` values the mode works for.
    tasks: ClassVar[tuple[str, ...]] = ("ner", "classification")
    # True: the passages reach the model as k slots flagged in ``batch[VALID]``, apart from the input's own
    # tokens, so training can drop slots (``train.passage_dropout``) and clear them all to predict on the input
    # alone (``train.consistency_weight``).
    slotted: ClassVar[bool] = False
    # True: the model reads the retrieval scores on their own scale, so a run records the retrieval that made them
    # (``ModelSpec.score_scale``) and refuses hits of another.
    reads_scores: ClassVar[bool] = False
    # The settings of ``MODE_SETTINGS`` the mode reads; any other of them set away from its default does nothing.
    reads: ClassVar[frozenset[str]] = frozenset({"k", "passage_max_length"})
    # True: the encoder reads the input alone and the passages reach the model apart from it, so they can also be
    # appended to the input, as ``concat`` appends them (``model.concat_passages``).
    takes_context: ClassVar[bool] = False

    def frozen_passages(self, settings: ModelSettings) -> bool:
        """Whether passages are embedded once by a fixed encoder (whose vector size the spec then records)."""
        return False

    def stored_tokens(self, settings: ModelSettings) -> bool:
        """Whether the frozen encoder's token states of each passage are kept in a token store."""
        return False

    def encoder_length(self, settings: ModelSettings) -> tuple[int, str]:
        """The longest sequence the trainable encoder reads, in tokens, and the settings that make it."""
        return settings.max_length, "model.max_length"

    def passages_of(self, spec: ModelSpec, hits: Sequence[CacheHit]) -> list[CacheHit]:
        """The hits an example keeps: its top ``k``."""
        return list(hits[: spec.k])

    def fill_table(
        self, spec: ModelSpec, table: PassageTable, tokenizer: PreTrainedTokenizerBase, embed: Embed | None
    ) -> None:
        """Each distinct passage's subwords, cut to ``passage_max_length`` with room for [CLS] and [SEP]."""
        table.tokens = tokenize_words(tokenizer, [t.split() for t in table.texts])
        for tok in table.tokens:
            del tok.ids[spec.passage_max_length - 2 :], tok.cases[spec.passage_max_length - 2 :]

    def add_passages(self, fs: FeatureSet, feature: Features, rows: list[int], hits: list[CacheHit]) -> None:
        """Put an example's passages (``rows`` of ``fs.table``, in rank order) into its features."""

    def batch(self, fs: FeatureSet, feats: list[Features]) -> dict[str, torch.Tensor]:
        """The passage tensors of a batch, beside the input's own."""
        return {}

    def modules(self, spec: ModelSpec, hidden: int) -> dict[str, nn.Module]:
        """The mode's trainable parts, registered on the model under these names (the state-dict keys of runs)."""
        return {}

    def fuse(
        self, model: RalmModel, query: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The input's states (B, T, d) after the passages, and the weight each passage got (B, T, k) if any."""
        return query, None


def passage_slots(feats: list[Features], k: int) -> dict[str, torch.Tensor]:
    """``VALID`` and the retrieval score of each of the k slots, for features whose strategy kept ``passages``
    and ``scores``."""
    valid = torch.zeros(len(feats), k, dtype=torch.bool)
    scores = torch.zeros(len(feats), k)
    for b, f in enumerate(feats):
        valid[b, : len(f.passages)] = True
        scores[b, : len(f.scores)] = torch.tensor(f.scores)
    return {VALID: valid, "passage_scores": scores}


def drop_passages(batch: dict[str, torch.Tensor], p: float, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """``batch`` with each passage slot dropped with probability ``p``. An example that loses all its passages is
    left without any, as when retrieval returns nothing: the mode's no-passage path."""
    keep = torch.rand(batch[VALID].shape, generator=generator) >= p
    return {**batch, VALID: batch[VALID] & keep}


class Wrapped(FusionStrategy):
    """A mode with something added (``model.score_signals``, ``model.concat_passages``): everything not
    overridden is the inner mode's."""

    def __init__(self, inner: FusionStrategy) -> None:
        self.inner = inner
        self.name = inner.name
        self.uses_passages = inner.uses_passages
        self.tasks = inner.tasks
        self.slotted = inner.slotted
        self.reads_scores = inner.reads_scores
        self.reads = inner.reads
        self.takes_context = inner.takes_context

    def frozen_passages(self, settings: ModelSettings) -> bool:
        return self.inner.frozen_passages(settings)

    def stored_tokens(self, settings: ModelSettings) -> bool:
        return self.inner.stored_tokens(settings)

    def encoder_length(self, settings: ModelSettings) -> tuple[int, str]:
        return self.inner.encoder_length(settings)

    def passages_of(self, spec: ModelSpec, hits: Sequence[CacheHit]) -> list[CacheHit]:
        return self.inner.passages_of(spec, hits)

    def fill_table(
        self, spec: ModelSpec, table: PassageTable, tokenizer: PreTrainedTokenizerBase, embed: Embed | None
    ) -> None:
        self.inner.fill_table(spec, table, tokenizer, embed)

    def add_passages(self, fs: FeatureSet, feature: Features, rows: list[int], hits: list[CacheHit]) -> None:
        self.inner.add_passages(fs, feature, rows, hits)

    def batch(self, fs: FeatureSet, feats: list[Features]) -> dict[str, torch.Tensor]:
        return self.inner.batch(fs, feats)

    def modules(self, spec: ModelSpec, hidden: int) -> dict[str, nn.Module]:
        return self.inner.modules(spec, hidden)

    def fuse(
        self, model: RalmModel, query: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.inner.fuse(model, query, batch)
