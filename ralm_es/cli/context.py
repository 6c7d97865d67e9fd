"""What every command that connects shares: the connection flags and config file, before or after its name."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click
from elasticsearch import Elasticsearch

from ralm_es.cli.options import given_layer
from ralm_es.config import (
    ConfigError,
    ConnectionSettings,
    Layer,
    cache_home,
    compose,
    env_layer,
    file_layer,
    from_dict,
    load_yaml,
    resolve_connection,
)
from ralm_es.es.client import connect
from ralm_es.store.base import Backend

T = TypeVar("T")


@dataclass
class CliContext:
    config_file: str | None = None
    connection_flags: dict[str, Any] = field(default_factory=dict)
    _settings: ConnectionSettings | None = field(default=None, init=False, repr=False)

    def merged(self, config_file: str | None, flags: dict[str, Any]) -> CliContext:
        """This context with flags given after the subcommand taking precedence over those before it."""
        given = {k: v for k, v in flags.items() if v is not None and v != ()}
        return CliContext(config_file or self.config_file, {**self.connection_flags, **given})

    def connection(self) -> ConnectionSettings:
        """The resolved, checked settings (resolved once, so a warning about them shows once)."""
        if self._settings is None:
            self._settings = resolve_connection(self.connection_flags, config_file=self.config_file)
        return self._settings

    def layers(self, cls: type, section: str, env: Mapping[str, str] | None = None) -> list[Layer]:
        """Where a command's settings come from, in the order every command keeps: the config file's
        ``section``, the environment variables ``env`` names (variable -> setting), then the command's flags."""
        layers = [file_layer(self.config_file, section)] if self.config_file else []
        if env:
            layers.append(env_layer(env, os.environ, section))
        return [*layers, given_layer(cls, section)]

    def settings(
        self,
        cls: type[T],
        section: str,
        *later: Layer,
        env: Mapping[str, str] | None = None,
    ) -> T:
        """A command's settings ``cls``, composed once: defaults, the ``layers``, then ``later`` (``--set``)."""
        return compose(cls, *self.layers(cls, section, env), *later)

    def client(self) -> Elasticsearch:
        return connect(self.connection())

    def field_map(self, flags: tuple[str, ...] = ()) -> Any:
        """The index's field map: the config file's ``fields:`` section, then ``--field name=field`` flags."""
        from ralm_es.store.elastic import FieldMap

        section = load_yaml(self.config_file).get("fields", {}) if self.config_file else {}
        if not isinstance(section, dict):
            raise ConfigError(f"{self.config_file}: 'fields' must be a mapping")
        if section:
            # Checked alone first, so that a bad key is blamed on the file and a bad flag on --field.
            from_dict(FieldMap, section, where=f"{self.config_file}: fields")
        merged = dict(section)
        from_flags = {}
        for flag in flags:
            name, sep, value = flag.partition("=")
            if not sep or not value.strip():
                raise ConfigError(f"--field: expected name=field (e.g. text=body), got {flag!r}")
            name = name.strip()
            # extra is a list: repeating --field extra=... adds to it.
            from_flags[name] = [*from_flags.get(name, []), value.strip()] if name == "extra" else value.strip()
        from_dict(FieldMap, from_flags, where="--field")
        if "extra" in from_flags:
            from_flags["extra"] = [*merged.get("extra", []), *from_flags["extra"]]
        merged.update(from_flags)
        return from_dict(FieldMap, merged, where="--field")


CONNECTION_OPTIONS = [
    click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML config file (see configs/)."),
    click.option(
        "--es-url", "hosts", multiple=True, help="Elasticsearch URL (repeat for several nodes). [env RALM_ES_URL]"
    ),
    click.option("--es-username", "username", help="Basic-auth user. [env RALM_ES_USERNAME]"),
    click.option(
        "--es-ca-certs", "ca_certs", type=click.Path(dir_okay=False), help="CA bundle for TLS. [env RALM_ES_CA_CERTS]"
    ),
    click.option(
        "--es-verify-certs/--es-no-verify-certs",
        "verify_certs",
        default=None,
        help="Verify TLS certificates (on by default).",
    ),
    click.option(
        "--es-timeout",
        "request_timeout",
        type=float,
        help=f"Request timeout in seconds (default {ConnectionSettings.request_timeout:g}).",
    ),
    click.option(
        "--es-retries",
        "max_retries",
        type=int,
        help=f"Retries on timeouts, 429, 502, 503 and 504 (default {ConnectionSettings.max_retries}).",
    ),
]
CONNECTION_PARAMS = ("hosts", "username", "ca_certs", "verify_certs", "request_timeout", "max_retries")


def connection_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--config`` and the ``--es-*`` flags to a click command or group, listed after its own options."""
    own = list(getattr(func, "__click_params__", []))
    func.__click_params__ = []  # type: ignore[attr-defined]
    for option in reversed(CONNECTION_OPTIONS):
        func = option(func)
    # click lists parameters in reverse order of this list: the connection flags go last in --help.
    func.__click_params__ = [*func.__click_params__, *own]  # type: ignore[attr-defined]
    return func


def pass_context(func: Callable[..., Any]) -> Callable[..., Any]:
    """For commands that connect: take the connection flags after the subcommand too, merge them over those
    given before it, check the resulting settings before any work, and pass the ``CliContext`` first."""

    @functools.wraps(func)
    def run(*args: Any, config_file: str | None, **kwargs: Any) -> Any:
        click_ctx = click.get_current_context()
        flags = {name: kwargs.pop(name) for name in CONNECTION_PARAMS}
        ctx = click_ctx.ensure_object(CliContext).merged(config_file, flags)
        click_ctx.obj = ctx
        # A folder on disk needs no cluster, so its connection settings are not needed either.
        if kwargs.get("backend") != "local":
            ctx.connection()
        return func(ctx, *args, **kwargs)

    return connection_options(run)


def local_index_path(index: str) -> Path:
    """A local index is a folder: a path as given (with a ``/`` or a leading ``.``), or a bare name under
    ``~/.cache/ralm-es/local``. A bare name has no ``/`` and no leading dot, so it cannot leave that folder."""
    if "/" in index or index.startswith("."):
        path = Path(index)
        # "..", "." or "a/.." would make a folder that holds other things (the current one, its parent) the index.
        if path.name in ("", ".", ".."):
            raise ConfigError(f"--index {index!r}: a local index is a folder of its own; name it, e.g. ./my-index")
        return path
    if not index.strip():
        raise ConfigError("--index: a local index needs a name")
    return cache_home() / "local" / index


def open_backend(ctx: CliContext, backend: str, index: str, fields: tuple[str, ...] = ()) -> Backend:
    from ralm_es.store.elastic import ElasticsearchBackend, FieldMap

    field_map = ctx.field_map(fields)
    if backend == "local":
        from ralm_es.store.local import LocalBackend

        if field_map != FieldMap():
            raise ConfigError(
                "--field and a config file's fields: name the fields of an Elasticsearch index; a local index has "
                "its own layout: leave them out with --backend local"
            )
        return LocalBackend(local_index_path(index))
    return ElasticsearchBackend(ctx.client(), index, fields=field_map)


field_option = click.option(
    "--field",
    "fields",
    multiple=True,
    metavar="NAME=FIELD",
    help="Field map for an index made elsewhere: id, doc_id, text, title, vector, metadata, extra "
    "(repeatable; e.g. text=body). Config file: fields: section.",
)

backend_option = click.option(
    "--backend",
    type=click.Choice(["elasticsearch", "local"]),
    default="elasticsearch",
    show_default=True,
    help="Where passages live: an Elasticsearch index, or a folder on disk (no cluster needed).",
)
