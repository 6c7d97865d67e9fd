"""What every command shares: the connection flags and config file given to the top-level group."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from elasticsearch import Elasticsearch

from ralm_es.config import ConfigError, ConnectionSettings, from_dict, load_yaml, resolve_connection
from ralm_es.es.client import connect
from ralm_es.es.distribution import cache_home
from ralm_es.store.base import Backend, BulkSettings


@dataclass
class CliContext:
    config_file: str | None = None
    connection_flags: dict[str, Any] = field(default_factory=dict)

    def connection(self) -> ConnectionSettings:
        return resolve_connection(self.connection_flags, config_file=self.config_file)

    def client(self) -> Elasticsearch:
        return connect(self.connection())

    def field_map(self, flags: tuple[str, ...] = ()) -> Any:
        """The index's field map: the config file's ``fields:`` section, then ``--field name=field`` flags."""
        from ralm_es.store.elastic import FieldMap

        section = load_yaml(self.config_file).get("fields", {}) if self.config_file else {}
        if not isinstance(section, dict):
            raise ConfigError(f"{self.config_file}: 'fields' must be a mapping")
        merged = dict(section)
        for flag in flags:
            name, sep, value = flag.partition("=")
            if not sep or not value.strip():
                raise ConfigError(f"--field: expected name=field (e.g. text=body), got {flag!r}")
            name = name.strip()
            # extra is a list: repeating --field extra=... adds to it.
            merged[name] = [*merged.get(name, []), value.strip()] if name == "extra" else value.strip()
        return from_dict(FieldMap, merged, where=f"{self.config_file}: fields" if section else "--field")


pass_context = click.make_pass_decorator(CliContext, ensure=True)


def local_index_path(index: str) -> Path:
    """A local index is a folder: a path as given, or a name under ``~/.cache/ralm-es/local``."""
    if "/" in index or index.startswith("."):
        return Path(index)
    return cache_home() / "local" / index


def open_backend(
    ctx: CliContext, backend: str, index: str, fields: tuple[str, ...] = (), bulk: BulkSettings | None = None
) -> Backend:
    if backend == "local":
        from ralm_es.store.local import LocalBackend

        return LocalBackend(local_index_path(index))
    from ralm_es.store.elastic import ElasticsearchBackend

    return ElasticsearchBackend(ctx.client(), index, fields=ctx.field_map(fields), bulk=bulk)


backend_option = click.option(
    "--backend",
    type=click.Choice(["elasticsearch", "local"]),
    default="elasticsearch",
    show_default=True,
    help="Where passages live: an Elasticsearch index, or a folder on disk (no cluster needed).",
)
