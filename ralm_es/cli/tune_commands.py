"""``ralm-es tune-retriever``: fine-tune the dense encoder on a task's own queries and relevance judgements."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

import click

from ralm_es.cli.context import CliContext, backend_option, open_backend, pass_context
from ralm_es.cli.options import setting
from ralm_es.retrieve.settings import TuneSettings as T


@click.command("tune-retriever")
@click.option("--queries", required=True, type=click.Path(exists=True), help="Training queries (BEIR JSONL).")
@click.option("--qrels", required=True, type=click.Path(exists=True), help="Their BEIR qrels TSV.")
@click.option("--corpus", required=True, type=click.Path(exists=True), help="The documents the qrels judge.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="New folder for the tuned encoder.")
@click.option("--model", type=click.Path(file_okay=False), help="Encoder folder to start from (default: packaged).")
@click.option("--index", help="Index to mine BM25 hard negatives from (default: an in-memory BM25 of --corpus).")
@backend_option
@setting(
    T,
    "hard_negatives",
    "--no-hard-negatives",
    is_flag=True,
    flag_value=False,
    default=True,
    help="In-batch negatives only.",
)
@setting(T, "epochs", "--epochs", type=click.IntRange(1), help="At most this many epochs.")
@setting(T, "patience", "--patience", type=click.IntRange(1), help="Stop after this many epochs without a dev gain.")
@setting(T, "batch_size", "--batch-size", type=click.IntRange(2), help="Pairs a batch (the in-batch negatives).")
@setting(T, "lr", "--lr", type=click.FloatRange(0, min_open=True), help="AdamW learning rate (linear decay).")
@setting(
    T,
    "warmup",
    "--warmup",
    type=click.FloatRange(0, 1, max_open=True),
    help="Share of the steps with a rising learning rate.",
)
@setting(
    T,
    "dev_fraction",
    "--dev-fraction",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Share of the queries held out as dev.",
)
@setting(T, "seed", "--seed", help="Seed of the split, the negatives and the order.")
@setting(
    T, "negative_depth", "--negative-depth", type=click.IntRange(1), help="Hard negatives come from this BM25 top."
)
@setting(
    T,
    "dev_candidates",
    "--dev-candidates",
    type=click.IntRange(0),
    help="Dev ranks each query's relevant docs plus its BM25 top N (0: the whole corpus).",
)
@setting(
    T,
    "max_length",
    "--max-length",
    type=click.IntRange(1),
    help="Tokens kept of a query or document, in tuning, dev and the written folder (as evaluated).",
)
@setting(
    T,
    "mini_batch",
    "--mini-batch",
    type=click.IntRange(0),
    help="Encode N texts at a time with GradCache: the same loss, memory that does not grow with --batch-size.",
)
@setting(T, "device", "--device", help="auto, cpu, cuda, cuda:1, …")
@click.option("--resume", is_flag=True, help="Continue the unfinished run for --out from OUT.tuning/.")
@click.option(
    "--stop-after",
    type=click.IntRange(min=1),
    help="End after this many training batches, with the state saved for --resume.",
)
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
    resume: bool,
    stop_after: int | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Fine-tune the dense encoder on (query, relevant document) pairs with in-batch and BM25 hard negatives,
    keeping the epoch with the best nDCG@10 on a seeded dev split of the queries. Re-embed an index with it by
    `ingest --reindex --model OUT`. The run keeps its state in OUT.tuning/ until the encoder is written, so an
    interrupted run continues with --resume."""
    from ralm_es.retrieve.tuning import Tuner, load_data, memory_bm25, state_folder

    settings = ctx.settings(T, "tune")
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
        report = tuner.run(data, out, miner, negatives, notice, resume=resume, stop_after=stop_after)
    if report is None:
        state = state_folder(Path(out))
        if as_json:
            click.echo(json.dumps({"status": "paused", "batches": stop_after, "state": str(state)}))
        else:
            click.echo(
                f"paused after {stop_after} batches, state in {state}: continue with the same command and --resume"
            )
        return
    if as_json:
        click.echo(json.dumps(json.loads((report.out / "tuning.json").read_text()) | {"seconds": report.seconds}))
        return
    click.echo(f"tuned encoder in {report.out} (revision {report.revision}, best epoch {report.best_epoch})")
    click.echo(
        f"dev nDCG@10 over {report.dev_queries} queries: {report.before['ndcg@10']:.4f} -> "
        f"{report.after['ndcg@10']:.4f}  ({report.seconds:.0f} s)"
    )
    click.echo(f"re-embed an index with it: ralm-es ingest CORPUS --reindex --model {report.out}")
