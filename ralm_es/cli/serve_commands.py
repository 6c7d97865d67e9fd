"""``ralm-es serve``: the query layer (and optionally a trained run) as a REST API."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from ralm_es.cli.context import CliContext, pass_context
from ralm_es.cli.options import setting
from ralm_es.cli.search_commands import R, build_retriever, retrieval_options
from ralm_es.serve.settings import TOKEN_ENV, ServeSettings

S = ServeSettings


@click.command("serve")
@retrieval_options("--query-model")
@click.option("--model", "run_dir", type=click.Path(file_okay=False, exists=True), help="A run folder for /predict.")
@click.option("--device", default="auto", show_default=True, help="Device of the --model run.")
@setting(S, "host", "--host", help="Address to listen on.")
@setting(S, "port", "--port", type=click.IntRange(1, 65535))
@setting(R, "k", "-k", "--k", type=click.IntRange(1), help="Passages a query gets when the request gives no k.")
@setting(S, "max_k", "--max-k", type=click.IntRange(1), help="Most passages per query.")
@setting(S, "max_batch", "--max-batch", type=click.IntRange(1), help="Most inputs per request.")
@setting(S, "max_text_chars", "--max-text-chars", type=click.IntRange(1), help="Longest input text.")
@setting(S, "max_body_bytes", "--max-body-bytes", type=click.IntRange(1), help="Largest request body in bytes.")
@setting(
    S,
    "cors_origins",
    "--cors-origin",
    multiple=True,
    convert=list,
    help="Allow this browser origin (repeatable; off if none).",
)
@setting(
    S,
    "open_docs",
    "--open-docs",
    is_flag=True,
    help="Serve /docs, /redoc and /openapi.json without the bearer token (with RALM_ES_API_TOKEN set).",
)
@setting(
    S,
    "graceful_timeout",
    "--graceful-timeout",
    type=click.FloatRange(min=0),
    help="Seconds open requests get on shutdown.",
)
@setting(
    S,
    "batch_size",
    "--batch-size",
    type=click.IntRange(1),
    help="Most queries answered together in one encoder batch and one _msearch (1: one at a time).",
)
@setting(
    S,
    "batch_wait_ms",
    "--batch-wait-ms",
    type=click.FloatRange(0),
    help="Milliseconds a batch waits for more requests while they overlap.",
)
@setting(
    S,
    "queue_size",
    "--queue-size",
    type=click.IntRange(1),
    help="Requests that may wait; more get 503 with Retry-After.",
)
@setting(
    S,
    "workers",
    "--workers",
    type=click.IntRange(1),
    help="Processes answering on the one port, each with its own encoder and batch queue.",
)
@pass_context
def serve(ctx: CliContext, run_dir: str | None, device: str, **options: Any) -> None:
    """Serve /search, /retrieve, /predict, /health and /indices (OpenAPI at /docs). Set RALM_ES_API_TOKEN to
    require a bearer token on all but /health (the OpenAPI pages too, unless --open-docs)."""
    from ralm_es.serve.workers import READY_FD_ENV, listen, report_ready, run_workers

    if (
        run_dir is None
        and click.get_current_context().get_parameter_source("device") != click.core.ParameterSource.DEFAULT
    ):
        raise click.UsageError("--device is where the --model run predicts; give --model too")
    settings = ctx.settings(S, "serve", env={TOKEN_ENV: "token"})
    ready_fd = os.environ.get(READY_FD_ENV)
    if settings.open_docs and settings.token is None and ready_fd is None:
        click.echo(f"ralm-es: warning: --open-docs (serve.open_docs) does nothing without {TOKEN_ENV}", err=True)
    if settings.workers > 1 and ready_fd is None:
        # Each worker is this command line again; this process only supervises and loads no model.
        notice = lambda message: click.echo(f"ralm-es: notice: {message}", err=True)  # noqa: E731
        sys.exit(run_workers(settings, sys.argv[1:], notice))
    # Imported here so that `ralm-es --help` does not pay for FastAPI, torch and the models.
    import torch
    import uvicorn

    from ralm_es.serve.app import create_app
    from ralm_es.serve.predictor import Predictor

    # Before any encoder or model loads: all of them, ONNX sessions too, run on this count.
    torch.set_num_threads(settings.worker_threads)
    retriever = build_retriever(ctx, options)
    retriever.check_mode()
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
    server = {"access_log": False, "log_level": "info", "timeout_graceful_shutdown": settings.graceful_timeout}
    if ready_fd is None:
        click.echo(f"ralm-es: serving on http://{settings.host}:{settings.port} ({auth})", err=True)
        uvicorn.run(app, host=settings.host, port=settings.port, **server)
    else:
        # A worker of --workers: it listens only now that its models are loaded, so no connection waits for them.
        sock = listen(settings)
        report_ready(int(ready_fd))
        uvicorn.Server(uvicorn.Config(app, **server)).run(sockets=[sock])
