"""What every command shares: the connection flags and config file given to the top-level group."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import click
from elasticsearch import Elasticsearch

from ralm_es.config import ConnectionSettings, resolve_connection
from ralm_es.es.client import connect


@dataclass
class CliContext:
    config_file: str | None = None
    connection_flags: dict[str, Any] = field(default_factory=dict)

    def connection(self) -> ConnectionSettings:
        return resolve_connection(self.connection_flags, config_file=self.config_file)

    def client(self) -> Elasticsearch:
        return connect(self.connection())


pass_context = click.make_pass_decorator(CliContext, ensure=True)
