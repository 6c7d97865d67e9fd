"""The ``ralm-es`` command: a thin click front end over the library."""

from __future__ import annotations

import logging
import sys

import click
from elasticsearch import ApiError, TransportError

from ralm_es.cli.context import CliContext, connection_options
from ralm_es.cli.doc_context_commands import doc_context
from ralm_es.cli.es_commands import es
from ralm_es.cli.ingest_commands import ingest
from ralm_es.cli.search_commands import evaluate, retrieve, search
from ralm_es.cli.serve_commands import serve
from ralm_es.cli.train_commands import evaluate_model, predict, train
from ralm_es.cli.tune_commands import tune_retriever
from ralm_es.errors import RalmError
from ralm_es.es.client import describe_api_error
from ralm_es.version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="ralm-es")
@connection_options
@click.pass_context
def cli(ctx: click.Context, config_file: str | None, **connection: object) -> None:
    """ralm-es: retrieval-augmented language models on Elasticsearch.

    The connection options work before the command or after it (after wins). Secrets (RALM_ES_API_KEY,
    RALM_ES_PASSWORD) are read from the environment or the config file only.
    """
    ctx.obj = CliContext(config_file=config_file, connection_flags=connection)


cli.add_command(es)
cli.add_command(ingest)
for command in (search, retrieve, evaluate):
    cli.add_command(command)
for command in (train, predict, evaluate_model):
    cli.add_command(command)
cli.add_command(serve)
cli.add_command(doc_context)
cli.add_command(tune_retriever)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="ralm-es: %(levelname)s: %(message)s")
    # The transport logs every retried request with a traceback; the final error is reported once, below.
    logging.getLogger("elastic_transport").setLevel(logging.ERROR)
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("ralm-es: aborted", err=True)
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        # One line, like every other error: the usage block would push the reason off a narrow terminal.
        where = f"; see '{exc.ctx.command_path} --help'" if exc.ctx else ""
        click.echo(f"ralm-es: error: {exc.format_message().rstrip('.')}{where}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"ralm-es: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except RalmError as exc:
        click.echo(f"ralm-es: error: {exc}", err=True)
        sys.exit(1)
    except ApiError as exc:
        click.echo(f"ralm-es: error: Elasticsearch refused the request: {describe_api_error(exc)}", err=True)
        sys.exit(1)
    except TransportError as exc:
        click.echo(
            f"ralm-es: error: lost the connection to Elasticsearch ({type(exc).__name__}: {exc.message})", err=True
        )
        sys.exit(1)
    except OSError as exc:
        # A file or folder the user named that cannot be read or written (missing folder, permissions, full disk).
        name = f"{exc.filename}: " if exc.filename else ""
        click.echo(f"ralm-es: error: {name}{exc.strerror or exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("ralm-es: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
