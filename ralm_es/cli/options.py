"""Flags that set a field of a settings dataclass: their ``--help`` default is the dataclass's, and what the
command line gave becomes one ``config.Layer`` over the config file and the environment."""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any

import click

from ralm_es.config import Layer, flag_layer

GIVEN = "ralm_es.settings_flags"


def default_of(cls: type, key: str) -> Any:
    """The default of the dotted setting ``key`` of dataclass ``cls``."""
    value: Any = cls()
    for part in key.split("."):
        value = getattr(value, part)
    return value


class SettingOption(click.Option):
    """A flag for the setting ``key``. The command does not receive its value: ``given_layer`` collects what the
    command line gave, so the value meets the config file's in one place (``config.compose``)."""

    def __init__(
        self,
        param_decls: list[str],
        *,
        owner: type,
        key: str,
        convert: Callable[[Any], Any] | None = None,
        **attrs: Any,
    ) -> None:
        super().__init__(param_decls, expose_value=False, **attrs)
        self.owner = owner
        self.key = key
        self.convert = convert

    def handle_parse_result(self, ctx: click.Context, opts: Any, args: list[str]) -> tuple[Any, list[str]]:
        value, args = super().handle_parse_result(ctx, opts, args)
        if ctx.get_parameter_source(self.name or "") not in (click.core.ParameterSource.DEFAULT, None):
            given = ctx.meta.setdefault(GIVEN, {}).setdefault(self.owner, {})
            given[self.key] = (self.convert(value) if self.convert else value, self.opts[0])
        return value, args


def setting(cls: type, key: str, *decls: str, **attrs: Any) -> Callable[[Any], Any]:
    """``click.option`` for the setting ``key`` of ``cls``, its default shown from the dataclass. A flag that
    switches a setting off (``--no-embed``) passes ``flag_value=False``."""
    if not attrs.get("is_flag") and not attrs.get("multiple"):
        attrs.setdefault("default", default_of(cls, key))
        attrs.setdefault("show_default", True)
    return click.option(*decls, cls=SettingOption, owner=cls, key=key, **attrs)


def given_layer(cls: type, section: str) -> Layer:
    """The settings of ``cls`` the current command's flags gave (and only those), naming each flag in errors."""
    given: dict[str, tuple[Any, str]] = click.get_current_context().meta.get(GIVEN, {}).get(cls, {})
    return flag_layer({k: v for k, (v, _) in given.items()}, {k: flag for k, (_, flag) in given.items()}, section)


def choices(cls: type, key: str) -> click.Choice:
    """The values the ``Literal`` setting ``key`` of ``cls`` allows, for a flag."""
    *sections, name = key.split(".")
    for section in sections:
        cls = typing.get_type_hints(cls)[section]
    return click.Choice(list(typing.get_args(typing.get_type_hints(cls)[name])))
