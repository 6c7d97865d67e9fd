"""How the query layer answers (the retrieval mode, hybrid fusion, depths and caches) and how its encoder is
tuned. Torch-free, so that the command line can show these defaults without loading an encoder."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from ralm_es.config import ConfigError, check_bounds, check_choices
from ralm_es.errors import RalmError
from ralm_es.retrieve import fusion

Mode = Literal["bm25", "dense", "hybrid"]
# The rankings a store computes; a mode asks for one or more of them.
Component = Literal["bm25", "dense"]
# The hybrid fusions the settings accept; each has its RankFusion in RANK_FUSIONS (a test holds the two equal).
FusionName = Literal["rrf", "linear"]
Exclude = Literal["none", "doc", "content", "doc+content"]
# Where fused search reads its passages' texts (the ranking is the same either way).
Texts = Literal["fetch", "inline"]


@dataclass
class RetrievalSettings:
    mode: Mode = "hybrid"
    k: int = 10
    num_candidates: int = 100
    depth: int = 50
    title_boost: float = 1.0
    fusion: FusionName = "rrf"
    rrf_k: float = 60.0
    dense_weight: float = 0.5
    norm: Literal["minmax", "zscore"] = "minmax"
    query_batch: int = 64
    query_cache_size: int = 4096
    # How an input is kept from retrieving itself: by document id (the input's id), by identical text, or both.
    exclude: Exclude = "none"
    # fetch: the component searches return ids and scores, and one more request reads the fused top k (the least
    # work for the node; the fastest where it is near). inline: they return every candidate's text, in one round
    # trip (the fastest where each round trip costs a few milliseconds or more, as to a cloud deployment).
    texts: Texts = "fetch"

    def fusion_header(self) -> dict[str, Any]:
        """The settings besides the mode that decide its ranking, in a fixed order: caches, saved sweeps and trained
        runs record it (a cache resumed, or a run's scores read, under other ones would mix two rankings)."""
        mode = RETRIEVAL_MODES[self.mode]
        if not mode.fused:
            return {key: getattr(self, key) for component in mode.components for key in COMPONENT_SETTINGS[component]}
        keys = ["fusion", "depth", "num_candidates", "title_boost", *RANK_FUSIONS[self.fusion].header]
        return {key: getattr(self, key) for key in keys}

    def __post_init__(self) -> None:
        check_bounds("retrieval", self, ("k", "num_candidates", "depth", "query_batch"), 1)
        check_bounds("retrieval", self, ("title_boost", "rrf_k", "query_cache_size"), 0)
        # Tests hold RETRIEVAL_MODES and RANK_FUSIONS equal to the Literals checked here.
        check_choices("retrieval", self, ("mode", "fusion", "norm", "exclude", "texts"))
        if not 0 <= self.dense_weight <= 1:
            raise ConfigError(f"retrieval.dense_weight must be between 0 and 1, got {self.dense_weight}")


@dataclass(frozen=True)
class RetrievalMode:
    """One retrieval mode: the component rankings it asks the store for. More than one are searched deeper
    (``depth``, ids and scores only) and fused by the settings' ``RankFusion``; one is the answer itself."""

    components: tuple[Component, ...]

    @property
    def fused(self) -> bool:
        return len(self.components) > 1

    @property
    def encodes(self) -> bool:
        """Whether a query needs a vector (and so an encoder)."""
        return "dense" in self.components


# The settings that shape each component ranking: BM25's title weight, the kNN search's candidates per shard.
COMPONENT_SETTINGS: dict[str, tuple[str, ...]] = {"bm25": ("title_boost",), "dense": ("num_candidates",)}

# Every mode the settings accept (a test holds this equal to ``Mode``).
RETRIEVAL_MODES: dict[str, RetrievalMode] = {
    "bm25": RetrievalMode(("bm25",)),
    "dense": RetrievalMode(("dense",)),
    "hybrid": RetrievalMode(("bm25", "dense")),
}


def recorded_ranking(mode: str, recorded: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ranking settings a cache header or a run recorded. A single mode's header written before single modes
    recorded theirs is empty: it reads as the defaults, as the version that wrote it compared it."""
    if not recorded and mode in RETRIEVAL_MODES and not RETRIEVAL_MODES[mode].fused:
        return RetrievalSettings(mode=cast(Mode, mode)).fusion_header()
    return dict(recorded or {})


@dataclass(frozen=True)
class RankFusion:
    """One way to fuse hybrid search's bm25 and dense rankings: the settings it reads (in ``fusion_header``'s
    order), the values of its own ones that ``evaluate --sweep`` tries, and the fusion itself."""

    header: tuple[str, ...]
    sweep: Mapping[str, tuple[Any, ...]]
    fuse: Callable[[Mapping[str, fusion.Ranking], Mapping[str, float], RetrievalSettings], list[fusion.Fused]]


RANK_FUSIONS: dict[str, RankFusion] = {
    "rrf": RankFusion(
        ("rrf_k", "dense_weight"),
        {"rrf_k": (10.0, 30.0, 60.0, 100.0)},
        lambda rankings, weights, s: fusion.rrf(rankings, k=s.rrf_k, weights=weights),
    ),
    "linear": RankFusion(
        ("dense_weight", "norm"),
        {"norm": ("minmax", "zscore")},
        lambda rankings, weights, s: fusion.linear(rankings, weights=weights, norm=s.norm),
    ),
}


class TuningError(RalmError):
    """Tuning input or settings that cannot be used; the message names the file, line or option."""


@dataclass(frozen=True)
class TuneSettings:
    """How the encoder is tuned. ``hard_negatives=False`` trains on in-batch negatives only."""

    epochs: int = 3
    batch_size: int = 32
    lr: float = 2e-5
    warmup: float = 0.1
    dev_fraction: float = 0.2
    seed: int = 13
    patience: int = 1
    hard_negatives: bool = True
    negative_depth: int = 20
    dev_candidates: int = 100
    max_length: int = 256
    # 0: the whole batch's texts through the encoder at once. N: GradCache, N texts at a time (the same loss in
    # memory that does not grow with the batch, for about one more forward pass).
    mini_batch: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        # Named by setting (tune.epochs), as every settings class is: a value may come from the config file's
        # tune: section; the flags check their own ranges first.
        check_bounds("tune", self, ("epochs", "negative_depth", "max_length", "patience"), 1)
        check_bounds("tune", self, ("mini_batch", "dev_candidates"), 0)
        if self.batch_size < 2:
            raise ConfigError(f"tune.batch_size must be at least 2 (in-batch negatives), got {self.batch_size}")
        if not 0 < self.dev_fraction < 1:
            raise ConfigError(f"tune.dev_fraction must be between 0 and 1 (exclusive), got {self.dev_fraction}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ConfigError(f"tune.lr must be a positive number, got {self.lr}")
        if not 0 <= self.warmup < 1:
            raise ConfigError(f"tune.warmup must be in [0, 1), got {self.warmup}")
