"""The fusion modes, one strategy object each, keyed by the config's ``model.fusion``.

A new mode is a module here with a :class:`FusionStrategy` subclass, its entry in ``STRATEGIES``, and its name in
``ralm_es.model.spec.Fusion`` (what the config accepts; a test holds the two equal). Nothing else branches on it.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from ralm_es.config import ConfigError
from ralm_es.errors import RalmError
from ralm_es.model.spec import ModelSettings
from ralm_es.model.strategies.attention import AttentionFusion
from ralm_es.model.strategies.base import MODE_SETTINGS, FusionStrategy
from ralm_es.model.strategies.concat import ConcatFusion, WithContext
from ralm_es.model.strategies.none import NoFusion
from ralm_es.model.strategies.pair import PairFusion
from ralm_es.model.strategies.scores import ScoreFusion, WithSignals

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


def strategy_of(settings: ModelSettings) -> FusionStrategy:
    """The strategy of ``settings.fusion``, with the hits' retrieval signals added after its fusion step when
    ``settings.score_signals`` (a mode with passage slots other than ``scores``, which is those signals alone), and
    with the passages also appended to the input when ``settings.concat_passages`` (a mode that reads the input
    alone in the encoder)."""
    strategy = fusion_strategy(settings.fusion)
    if settings.score_signals:
        if not strategy.slotted or isinstance(strategy, ScoreFusion):
            slotted = ", ".join(n for n, s in STRATEGIES.items() if s.slotted and not isinstance(s, ScoreFusion))
            raise FusionError(
                f"model.score_signals needs a fusion mode with separate passages ({slotted}), not '{settings.fusion}'"
            )
        strategy = WithSignals(strategy)
    if settings.concat_passages:
        if not strategy.takes_context:
            takers = ", ".join(n for n, s in STRATEGIES.items() if s.takes_context)
            raise FusionError(
                f"model.concat_passages needs a fusion mode that reads the passages apart from the input ({takers}), "
                f"not '{settings.fusion}'"
            )
        strategy = WithContext(strategy)
    return strategy


def check_encoder_fits(settings: ModelSettings, hidden: int, positions: int, folder: Path) -> None:
    """Refuse, before any data is read, settings that the encoder in ``folder`` (``hidden`` wide, ``positions``
    long) cannot run: the fusion's heads must divide its width, the longest sequence must fit its positions."""
    strategy = strategy_of(settings)
    if "heads" in strategy.reads and hidden % settings.heads:
        raise ConfigError(
            f"model.heads is {settings.heads}, which does not divide the hidden size {hidden} of the encoder in "
            f"{folder}"
        )
    length, made_by = strategy.encoder_length(settings)
    if length > positions:
        raise ConfigError(f"{made_by} is {length}, over the {positions} positions of the encoder in {folder}")


def ignored_settings(settings: ModelSettings) -> str | None:
    """One line naming the ``MODE_SETTINGS`` set away from their defaults that ``settings.fusion`` does not read
    (a config written for one mode, trained with ``--set model.fusion=`` another), and the modes that read each;
    None when every one of them is read or at its default."""
    strategy = fusion_strategy(settings.fusion)
    defaults = {f.name: f.default for f in fields(ModelSettings)}
    unread = [
        name for name in MODE_SETTINGS if name not in strategy.reads and getattr(settings, name) != defaults[name]
    ]
    if not unread:
        return None
    readers = {name: ", ".join(n for n, s in STRATEGIES.items() if name in s.reads) for name in unread}
    parts = [f"model.{name}={getattr(settings, name)} (read by {readers[name]})" for name in unread]
    return f"fusion {settings.fusion} does not read {'; '.join(parts)}: ignored"


__all__ = [
    "STRATEGIES",
    "FusionError",
    "FusionStrategy",
    "check_encoder_fits",
    "fusion_strategy",
    "ignored_settings",
    "strategy_of",
]
