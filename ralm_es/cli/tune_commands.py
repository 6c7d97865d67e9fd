"""``ralm-es tune-retriever``: fine-tune the dense encoder on a task's own queries and relevance judgements."""

from __future__ import annotations

import json
from contextlib import nullcontext
from typing import Any

import click

from ralm_es.cli.context import CliContext, backend_option, open_backend, pass_context


@click.command("tune-retriever")
@click.option("--queries", required=True, type=click.Path(exists=True), help="Training queries (BEIR JSONL).")
@click.option("--qrels", required=True, type=click.Path(exists=True), help="Their BEIR qrels TSV.")
@click.option("--corpus", required=True, type=click.Path(exists=True), help="The documents the qrels judge.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="New folder for the tuned encoder.")
@click.option("--model", type=click.Path(file_okay=False), help="Encoder folder to start from (default: packaged).")
@click.option("--index", help="Index to mine BM25 hard negatives from (default: an in-memory BM25 of --corpus).")
@backend_option
@click.option("--no-hard-negatives", is_flag=True, help="In-batch negatives only (no BM25 mining).")
@click.option("--epochs", default=3, show_default=True, help="At most this many epochs.")
@click.option("--patience", default=1, show_default=True, help="Stop after this many epochs without a dev gain.")
@click.option("--batch-size", default=32, show_default=True, help="Pairs a batch (the in-batch negatives).")
@click.option("--lr", default=2e-5, show_default=True, help="AdamW learning rate (linear decay).")
@click.option("--warmup", default=0.1, show_default=True, help="Share of the steps with a rising learning rate.")
@click.option("--dev-fraction", default=0.2, show_default=True, help="Share of the queries held out as dev.")
@click.option("--seed", default=13, show_default=True, help="Seed of the split, the negatives and the order.")
@click.option("--negative-depth", default=20, show_default=True, help="Hard negatives come from this BM25 top.")
@click.option(
    "--dev-candidates",
    default=100,
    show_default=True,
    help="Dev ranks each query's relevant docs plus its BM25 top N (0: the whole corpus).",
)
@click.option("--max-length", default=256, show_default=True, help="Tokens kept of a query or document.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, …")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@pass_context
def tune_retriever(
    ctx: CliContext,
    queries: str,
    qrels: str,
    corpus: str,
    out: str,
    model: str | None,
    index: str | None,
    backend: str,
    no_hard_negatives: bool,
    as_json: bool,
    quiet: bool,
    **options: Any,
) -> None:
    """Fine-tune the dense encoder on (query, relevant document) pairs with in-batch and BM25 hard negatives,
    keeping the epoch with the best nDCG@10 on a seeded dev split of the queries. Re-embed an index with it by
    `ingest --reindex --model OUT`."""
    from ralm_es.retrieve.tuning import Tuner, TuneSettings, load_data, memory_bm25

    settings = TuneSettings(hard_negatives=not no_hard_negatives, **options)
    data = load_data(queries, qrels, corpus)
    tuner = Tuner(model, settings, progress=not quiet)
    notice = lambda message: click.echo(f"ralm-es: notice: {message}", err=True)  # noqa: E731
    if index is not None:
        source = nullcontext(open_backend(ctx, backend, index))
        negatives = f"BM25 of index {index}"
    else:
        notice(f"no --index: BM25 for hard negatives and dev candidates runs in memory over {corpus}")
        source = memory_bm25(data.docs)
        negatives = f"in-memory BM25 of {corpus}"
    with source as miner:
        report = tuner.run(data, out, miner, negatives, notice)
    if as_json:
        click.echo(json.dumps(json.loads((report.out / "tuning.json").read_text()) | {"seconds": report.seconds}))
        return
    click.echo(f"tuned encoder in {report.out} (revision {report.revision}, best epoch {report.best_epoch})")
    click.echo(
        f"dev nDCG@10 over {report.dev_queries} queries: {report.before['ndcg@10']:.4f} -> "
        f"{report.after['ndcg@10']:.4f}  ({report.seconds:.0f} s)"
    )
    click.echo(f"re-embed an index with it: ralm-es ingest CORPUS --reindex --model {report.out}")
