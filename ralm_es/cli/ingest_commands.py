"""``ralm-es ingest``: stream a corpus into an index with BM25 and dense-vector fields."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from tqdm import tqdm

from ralm_es.cli.context import CliContext, backend_option, field_option, open_backend, pass_context
from ralm_es.cli.options import choices, setting
from ralm_es.config import set_layer
from ralm_es.ingest import IngestSettings

LINE_FORMATS = {".jsonl": 0, ".ndjson": 0, ".csv": 1, ".tsv": 1}


def estimate_records(inputs: tuple[str, ...]) -> int | None:
    """Records to expect, for an ETA: lines of plain JSONL/CSV/TSV files (and BEIR folders); None otherwise."""
    total = 0
    for name in inputs:
        path = Path(name)
        if path.is_dir() and (path / "corpus.jsonl").is_file():
            path = path / "corpus.jsonl"
        if not path.is_file() or path.suffix not in LINE_FORMATS:
            return None
        with path.open("rb") as fh:
            total += (
                sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b"")) - LINE_FORMATS[path.suffix]
            )
    return total


S = IngestSettings


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--index", default="passages", show_default=True, help="Alias (Elasticsearch) or folder/name (local).")
@backend_option
@field_option
@setting(S, "read.format", "--format", type=choices(S, "read.format"))
@setting(
    S, "read.id_field", "--id-field", help="Id field (default: _id, else id; records without one get a content hash)."
)
@setting(S, "read.text_field", "--text-field")
@setting(S, "read.title_field", "--title-field")
@setting(
    S,
    "read.metadata_fields",
    "--metadata-field",
    multiple=True,
    convert=lambda names: list(names) or None,
    help="Keep this field as metadata (repeatable).",
)
@setting(
    S, "read.unit", "--unit", type=choices(S, "read.unit"), help="Plain text: a passage per paragraph or per file."
)
@setting(
    S, "model", "--model", type=click.Path(file_okay=False), help="Local encoder folder (default: all-MiniLM-L6-v2)."
)
@setting(
    S,
    "embed",
    "--no-embed",
    is_flag=True,
    flag_value=False,
    default=True,
    help="BM25 only: no vectors, no encoder run.",
)
@setting(S, "device", "--device", help="auto, cpu, cuda, cuda:1 …")
@setting(S, "chunking.max_tokens", "--max-tokens", help="Passage length budget in encoder tokens.")
@setting(S, "chunking.overlap", "--overlap", help="Tokens shared by consecutive chunks.")
@setting(S, "index.index_type", "--index-type", type=choices(S, "index.index_type"))
@setting(S, "index.shards", "--shards")
@setting(S, "index.replicas", "--replicas")
@setting(
    S, "reindex", "--reindex", is_flag=True, help="Build a fresh index and swap the alias to it atomically at the end."
)
@setting(
    S, "keep_old", "--keep-old", is_flag=True, help="With --reindex: keep the previous index instead of deleting it."
)
@setting(
    S,
    "resume",
    "--no-resume",
    is_flag=True,
    flag_value=False,
    default=True,
    help="Ignore a checkpoint left by an interrupted run.",
)
@click.option(
    "--on-error",
    type=click.Choice(["fail", "skip"]),
    default="fail",
    show_default=True,
    help="fail: exit 1 when any document failed (all valid ones are still indexed).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    help="Any ingest setting as key=value (e.g. bulk.docs=1000, read.max_chars=5000).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_context
def ingest(
    ctx: CliContext,
    inputs: tuple[str, ...],
    index: str,
    backend: str,
    fields: tuple[str, ...],
    on_error: str,
    overrides: tuple[str, ...],
    quiet: bool,
    as_json: bool,
) -> None:
    """Read INPUTS (JSONL, BEIR, CSV/TSV, text, CoNLL, or gzip of these), chunk, embed and index them. Settings
    come from the config file's 'ingest' section, then the flags, then --set."""
    # Imported here so that `ralm-es --help` and `ralm-es es ...` do not pay for torch.
    from ralm_es.ingest import Ingest

    settings = ctx.settings(S, "ingest", set_layer(overrides))
    store = open_backend(ctx, backend, index, fields)

    bar = tqdm(
        desc="ingest", unit="rec", total=estimate_records(inputs), disable=quiet, file=sys.stderr, dynamic_ncols=True
    )

    def report(source: str, reason: str) -> None:
        tqdm.write(f"ralm-es: {source}: {reason}", file=sys.stderr)

    def progress(records: int, passages: int) -> None:
        bar.n = records
        rate = passages / bar.format_dict["elapsed"] if bar.format_dict["elapsed"] else 0.0
        bar.set_postfix(passages=passages, per_s=f"{rate:.0f}")

    summary = Ingest(store, settings, on_error=report, on_progress=progress).run(inputs)
    bar.close()
    if summary.restarted:
        click.echo(f"not resuming: {summary.restarted}; starting over, skipping passages already stored", err=True)
    elif summary.resumed_from:
        earlier = summary.failed_before_resume
        failures = f"; {earlier} of their documents failed then (counted as failed below)" if earlier else ""
        click.echo(f"resumed after {summary.resumed_from} records from an interrupted run{failures}", err=True)
    if as_json:
        click.echo(json.dumps(summary.public()))
    else:
        click.echo(
            f"{summary.indexed} passages indexed into {summary.index} ({summary.read} records read, "
            f"{summary.unreadable} unreadable; {summary.passages} passages, {summary.skipped} already present, "
            f"{summary.failed - summary.unreadable} not written; {summary.failed} failed) in {summary.seconds:.1f}s",
            err=quiet,
        )
    if summary.failed and on_error == "fail":
        sys.exit(1)
