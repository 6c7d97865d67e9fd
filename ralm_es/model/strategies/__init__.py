"""The fusion modes, one strategy object each, keyed by the config's ``model.fusion``.

A new mode is a module here with a :class:`FusionStrategy` subclass, its entry in ``STRATEGIES``, and its name in
``ralm_es.model.spec.Fusion`` (what the config accepts; a test holds the two equal). Nothing else branches on it.
"""

from __future__ import annotations

from ralm_es.errors import RalmError
from ralm_es.model.strategies.attention import AttentionFusion
from ralm_es.model.strategies.base import FusionStrategy
from ralm_es.model.strategies.concat import ConcatFusion
from ralm_es.model.strategies.none import NoFusion
from ralm_es.model.strategies.pair import PairFusion
from ralm_es.model.strategies.scores import ScoreFusion

STRATEGIES: dict[str, FusionStrategy] = {
    s.name: s for s in (NoFusion(), ConcatFusion(), AttentionFusion(), PairFusion(), ScoreFusion())
}


class FusionError(RalmError, ValueError):
    """A fusion mode this version does not have (a run folder from another version, a hand-made spec)."""


def fusion_strategy(name: str) -> FusionStrategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise FusionError(
            f"unknown fusion mode {name!r} (model.fusion); expected one of {', '.join(STRATEGIES)}"
        ) from None


__all__ = ["STRATEGIES", "FusionError", "FusionStrategy", "fusion_strategy"]
