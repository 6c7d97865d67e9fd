"""``ralm-es es start|stop|status|env|useradd``: the local Elasticsearch cluster."""

from __future__ import annotations

import inspect
import json
import re
import shlex
from collections.abc import Callable
from typing import Any

import click

from ralm_es.node.cluster import LocalCluster, NodeError, check_cluster_name

HEAP = re.compile(r"[1-9][0-9]*[kKmMgG]")


def _name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return check_cluster_name(value)
    except NodeError as exc:
        raise click.BadParameter(str(exc)) from None


def _port(ctx: click.Context, param: click.Parameter, value: str) -> int | None:
    if value == "auto":
        return None
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise click.BadParameter(f"expected a port number (1-65535) or 'auto', got {value!r}")
    return int(value)


def _heap(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not HEAP.fullmatch(value):
        raise click.BadParameter(f"expected a size with a unit, like 512m or 2g, got {value!r}")
    return value


def defaults(function: Callable[..., Any]) -> dict[str, Any]:
    """The keyword defaults of ``function``: the flags show the defaults of the code they call, not copies."""
    return {name: p.default for name, p in inspect.signature(function).parameters.items() if p.default is not p.empty}


START = defaults(LocalCluster.start)
name_option = click.option(
    "--name",
    default="default",
    show_default=True,
    callback=_name,
    help="Cluster name (letters, digits, '_', '-'); several can run side by side.",
)
seconds = click.FloatRange(min=0, min_open=True)


@click.group()
def es() -> None:
    """Manage a local Elasticsearch cluster (downloaded from Maven Central, cached under ~/.cache/ralm-es)."""


@es.command()
@name_option
@click.option(
    "--port",
    default=str(START["port"]),
    show_default=True,
    callback=_port,
    help="HTTP port of the first node, or 'auto'.",
)
@click.option("--heap", default=START["heap"], show_default=True, callback=_heap, help="JVM heap per node.")
@click.option("--nodes", default=START["nodes"], show_default=True, type=click.IntRange(1, 9), help="Number of nodes.")
@click.option("--security", is_flag=True, help="Enable x-pack security with a generated password for 'elastic'.")
@click.option("--tls", is_flag=True, help="Serve HTTPS with a CA generated for this cluster (implies --security).")
@click.option(
    "--timeout", default=START["timeout"], show_default=True, type=seconds, help="Seconds to wait for yellow health."
)
@click.option("--quiet", is_flag=True, help="No download progress bar.")
def start(
    name: str, port: int | None, heap: str, nodes: int, security: bool, tls: bool, timeout: float, quiet: bool
) -> None:
    """Start (or reuse) a local cluster on 127.0.0.1 and print its URL."""
    if port is not None and port + nodes - 1 > 65535:
        raise click.BadParameter(f"{nodes} nodes from port {port} run past 65535", param_hint="'--port'")
    cluster = LocalCluster(name)
    was_running = cluster.running() is not None
    state = cluster.start(port=port, heap=heap, nodes=nodes, security=security, tls=tls, timeout=timeout, quiet=quiet)
    verb = "already running" if was_running else "started"
    click.echo(f"Elasticsearch {state.version} {verb}: {' '.join(state.urls)}", err=True)
    if state.security:
        click.echo(
            f"security on: user 'elastic'; `eval $(ralm-es es env --name {name})` sets the credentials", err=True
        )
    click.echo(state.url)


@es.command("env")
@name_option
def env(name: str) -> None:
    """Print `export RALM_ES_...` lines for the cluster (URL, and credentials and CA when secured)."""
    state = LocalCluster(name).running()
    if state is None:
        raise click.ClickException(f"cluster '{name}' is not running; start it with `ralm-es es start --name {name}`")
    for key, value in state.env().items():
        click.echo(f"export {key}={shlex.quote(value)}")


@es.command()
@name_option
@click.option(
    "--timeout",
    default=defaults(LocalCluster.stop)["timeout"],
    show_default=True,
    type=seconds,
    help="Seconds to wait before SIGKILL.",
)
@click.option("--remove", is_flag=True, help="Also delete the cluster's data, logs and certificates.")
def stop(name: str, timeout: float, remove: bool) -> None:
    """Stop the local cluster gracefully (SIGTERM, wait, then SIGKILL)."""
    cluster = LocalCluster(name)
    stopped = cluster.remove(timeout=timeout) if remove else cluster.stop(timeout=timeout)
    click.echo(("stopped" if stopped else "not running") + (" and removed" if remove else ""), err=True)


@es.command()
@name_option
@click.option("--json", "as_json", is_flag=True, help='Print {"url", "version", "health", "nodes"}.')
def status(name: str, as_json: bool) -> None:
    """Show whether the local cluster runs, its URL, version and health."""
    info = LocalCluster(name).status()
    if as_json:
        click.echo(json.dumps(info))
    else:
        click.echo(f"url: {info['url']}\nversion: {info['version']}\nhealth: {info['health']}\nnodes: {info['nodes']}")


@es.command("useradd")
@click.argument("username")
@name_option
@click.option(
    "--role", "roles", multiple=True, default=["viewer"], show_default=True, help="Built-in role (repeatable)."
)
@click.password_option(envvar="RALM_ES_NEW_PASSWORD", help="The new user's password [env RALM_ES_NEW_PASSWORD].")
def useradd(username: str, name: str, roles: tuple[str, ...], password: str) -> None:
    """Add a file-realm user with built-in roles (e.g. viewer for read-only) to a secured local cluster."""
    LocalCluster(name).add_user(username, password, list(roles))
    click.echo(f"user '{username}' added with roles {', '.join(roles)}", err=True)
