"""``ralm-es serve``: the query layer (and optionally a trained run) as a REST API."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from ralm_es.cli.context import CliContext, pass_context
from ralm_es.cli.search_commands import build_retriever, retrieval_options

# Flag -> ServeSettings field; flags given on the command line override the config file's ``serve:`` section.
FLAGS = (
    "host",
    "port",
    "max_k",
    "max_batch",
    "max_text_chars",
    "max_body_bytes",
    "cors_origins",
    "open_docs",
    "graceful_timeout",
    "batch_size",
    "batch_wait_ms",
    "queue_size",
)


@click.command("serve")
@retrieval_options("--query-model")
@click.option("--model", "run_dir", type=click.Path(file_okay=False, exists=True), help="A run folder for /predict.")
@click.option("--device", default="auto", show_default=True, help="Device of the --model run.")
@click.option("--host", help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default 8000).")
@click.option("--max-k", type=click.IntRange(1), help="Most passages per query (default 100).")
@click.option("--max-batch", type=click.IntRange(1), help="Most inputs per request (default 64).")
@click.option("--max-text-chars", type=click.IntRange(1), help="Longest input text (default 4000).")
@click.option("--max-body-bytes", type=click.IntRange(1), help="Largest request body (default 1 MiB).")
@click.option(
    "--cors-origin", "cors_origins", multiple=True, help="Allow this browser origin (repeatable; off if none)."
)
@click.option(
    "--open-docs",
    is_flag=True,
    default=None,
    help="Serve /docs, /redoc and /openapi.json without the bearer token (with RALM_ES_API_TOKEN set).",
)
@click.option(
    "--graceful-timeout", type=click.FloatRange(min=0), help="Seconds open requests get on shutdown (default 10)."
)
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    help="Most queries answered together in one encoder batch and one _msearch (default 64; 1: one at a time).",
)
@click.option(
    "--batch-wait-ms",
    type=click.FloatRange(0),
    help="Milliseconds a batch waits for more requests while they overlap (default 5).",
)
@click.option(
    "--queue-size", type=click.IntRange(1), help="Requests that may wait; more get 503 with Retry-After (default 256)."
)
@pass_context
def serve(ctx: CliContext, run_dir: str | None, device: str, **options: Any) -> None:
    """Serve /search, /retrieve, /predict, /health and /indices (OpenAPI at /docs). Set RALM_ES_API_TOKEN to
    require a bearer token on all but /health (the OpenAPI pages too, unless --open-docs)."""
    # Imported here so that `ralm-es --help` does not pay for FastAPI, torch and the models.
    import uvicorn

    from ralm_es.config import Secret, from_dict, load_yaml
    from ralm_es.serve.app import create_app
    from ralm_es.serve.predictor import Predictor
    from ralm_es.serve.settings import TOKEN_ENV, ServeSettings

    section = load_yaml(ctx.config_file).get("serve", {}) if ctx.config_file else {}
    given = {key: options.pop(key) for key in FLAGS}
    merged = {**section, **{k: list(v) if isinstance(v, tuple) else v for k, v in given.items() if v not in (None, ())}}
    settings = from_dict(ServeSettings, merged, where=f"{ctx.config_file}: serve" if section else "serve")
    if os.environ.get(TOKEN_ENV):
        settings.token = Secret(os.environ[TOKEN_ENV])
    retriever = build_retriever(ctx, options)
    predictor = Predictor.open(run_dir, retriever, device) if run_dir else None
    app = create_app(settings, retriever, predictor)

    access = logging.getLogger("ralm_es.serve.access")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False
    if settings.token is None:
        auth = "no auth (set RALM_ES_API_TOKEN to require a token); OpenAPI at /docs"
    elif settings.open_docs:
        auth = "bearer token required; OpenAPI at /docs without it"
    else:
        auth = "bearer token required, at /docs too (--open-docs opens it)"
    click.echo(f"ralm-es: serving on http://{settings.host}:{settings.port} ({auth})", err=True)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        access_log=False,
        log_level="info",
        timeout_graceful_shutdown=settings.graceful_timeout,
    )
