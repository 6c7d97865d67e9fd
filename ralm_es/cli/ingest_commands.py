"""``ralm-es ingest``: stream a corpus into an index with BM25 and dense-vector fields."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from tqdm import tqdm

from ralm_es.cli.context import CliContext, backend_option, open_backend, pass_context
from ralm_es.config import apply_overrides, from_dict, load_yaml

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


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--index", default="passages", show_default=True, help="Alias (Elasticsearch) or folder/name (local).")
@backend_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "jsonl", "beir", "csv", "tsv", "text", "conll"]),
    default="auto",
    show_default=True,
)
@click.option("--id-field", help="Id field (default: _id, else id; records without one get a content hash).")
@click.option("--text-field", default="text", show_default=True)
@click.option("--title-field", default="title", show_default=True)
@click.option("--metadata-field", "metadata_fields", multiple=True, help="Keep this field as metadata (repeatable).")
@click.option(
    "--unit",
    type=click.Choice(["paragraph", "file"]),
    default="paragraph",
    show_default=True,
    help="Plain text: a passage per paragraph or per file.",
)
@click.option("--model", type=click.Path(file_okay=False), help="Local encoder folder (default: all-MiniLM-L6-v2).")
@click.option("--no-embed", is_flag=True, help="BM25 only: no vectors, no encoder run.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 …")
@click.option("--max-tokens", default=256, show_default=True, help="Passage length budget in encoder tokens.")
@click.option("--overlap", default=32, show_default=True, help="Tokens shared by consecutive chunks.")
@click.option(
    "--index-type",
    type=click.Choice(["hnsw", "int8_hnsw", "int4_hnsw", "bbq_hnsw", "flat"]),
    default="hnsw",
    show_default=True,
)
@click.option("--shards", default=1, show_default=True)
@click.option("--replicas", default=0, show_default=True)
@click.option("--reindex", is_flag=True, help="Build a fresh index and swap the alias to it atomically at the end.")
@click.option("--keep-old", is_flag=True, help="With --reindex: keep the previous index instead of deleting it.")
@click.option("--no-resume", is_flag=True, help="Ignore a checkpoint left by an interrupted run.")
@click.option(
    "--on-error",
    type=click.Choice(["fail", "skip"]),
    default="fail",
    show_default=True,
    help="fail: exit 1 when any document failed (all valid ones are still indexed).",
)
@click.option("--set", "overrides", multiple=True, help="Any ingest setting as key=value (e.g. bulk_docs=1000).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_context
def ingest(
    ctx: CliContext,
    inputs: tuple[str, ...],
    index: str,
    backend: str,
    fmt: str,
    metadata_fields: tuple[str, ...],
    model: str | None,
    no_embed: bool,
    no_resume: bool,
    on_error: str,
    overrides: tuple[str, ...],
    quiet: bool,
    as_json: bool,
    **options: object,
) -> None:
    """Read INPUTS (JSONL, BEIR, CSV/TSV, text, CoNLL, or gzip of these), chunk, embed and index them."""
    # Imported here so that `ralm-es --help` and `ralm-es es ...` do not pay for torch.
    from ralm_es.ingest import Ingest, IngestSettings

    file_settings = load_yaml(ctx.config_file).get("ingest", {}) if ctx.config_file else {}
    settings = from_dict(IngestSettings, file_settings, where=f"{ctx.config_file}: ingest")
    # Flags override the config file only where given on the command line.
    click_ctx = click.get_current_context()
    given = {
        name
        for name in click_ctx.params
        if click_ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
    }
    values = {
        **options,
        "format": fmt,
        "embed": not no_embed,
        "resume": not no_resume,
        "metadata_fields": list(metadata_fields) or None,
        "model": model,
    }
    param_of = {"format": "fmt", "embed": "no_embed", "resume": "no_resume"}
    settings = apply_overrides(
        settings,
        [f"{key}={json.dumps(value)}" for key, value in values.items() if param_of.get(key, key) in given],
        where="option",
    )
    settings = apply_overrides(settings, overrides)
    store = open_backend(ctx, backend, index, bulk=settings.bulk())

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
        click.echo(f"resumed after {summary.resumed_from} records from an interrupted run", err=True)
    if as_json:
        click.echo(json.dumps(summary.public()))
    else:
        click.echo(
            f"{summary.indexed} passages indexed into {summary.index} ({summary.read} records read, "
            f"{summary.passages} passages, {summary.skipped} already present, {summary.failed} failed) "
            f"in {summary.seconds:.1f}s",
            err=quiet,
        )
    if summary.failed and on_error == "fail":
        sys.exit(1)
