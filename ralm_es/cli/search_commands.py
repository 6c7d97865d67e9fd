"""``ralm-es search``, ``retrieve`` and ``evaluate``: the query layer from the command line."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from ralm_es.cli.context import CliContext, backend_option, field_option, open_backend, pass_context
from ralm_es.cli.options import choices, setting
from ralm_es.config import Layer, build, mapping_layer, merge_layers, set_layer
from ralm_es.corpus.readers import FORMATS
from ralm_es.onnx_runtime import RUNTIMES
from ralm_es.retrieve.settings import RETRIEVAL_MODES
from ralm_es.retrieve.settings import RetrievalSettings as R
from ralm_es.store.base import Backend, Filter

FILTER = re.compile(r"^(?P<field>[\w.\-]+)\s*(?P<op>>=|<=|>|<|=)\s*(?P<value>.+)$")
RANGE_OPS = {">=": "gte", "<=": "lte", ">": "gt", "<": "lt"}


def parse_filter(text: str) -> Filter:
    """``topic=medicine``, ``topic=a,b`` (any of), ``year>=2005`` (range)."""
    match = FILTER.match(text.strip())
    if not match:
        raise click.BadParameter(f"expected field=value, field=a,b or field>=n; got {text!r}")
    name, op, raw = match["field"], match["op"], match["value"].strip()
    if op in RANGE_OPS:
        return Filter(name, "range", {RANGE_OPS[op]: _scalar(raw)})
    values = [_scalar(v.strip()) for v in raw.split(",")]
    return Filter(name, "terms", values) if len(values) > 1 else Filter(name, "term", values[0])


def _scalar(raw: str) -> Any:
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


def retrieval_options(encoder_flag: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Options shared by every command that runs queries; the query encoder folder is ``encoder_flag``."""
    return lambda func: _with_retrieval_options(func, encoder_flag)


def _with_retrieval_options(func: Callable[..., Any], encoder_flag: str) -> Callable[..., Any]:
    options = [
        click.option("--index", default="passages", show_default=True, help="Alias/index, or local index name."),
        backend_option,
        field_option,
        setting(R, "mode", "--mode", type=choices(R, "mode")),
        click.option(
            encoder_flag,
            "model",
            type=click.Path(file_okay=False),
            help="Query encoder folder (default: the index's).",
        ),
        click.option(
            "--runtime",
            type=click.Choice(RUNTIMES),
            default="torch",
            show_default=True,
            help="Query encoder runtime (torch-bf16: bf16 weights on a CPU with AVX512-BF16 or AMX; onnx: an fp32 ONNX "
            "Runtime export; both answer torch-filled indices too).",
        ),
        setting(R, "fusion", "--fusion", type=choices(R, "fusion")),
        setting(R, "rrf_k", "--rrf-k", type=click.FloatRange(min=0), help="RRF rank constant."),
        setting(R, "dense_weight", "--dense-weight", type=click.FloatRange(0, 1), help="Weight of the dense list."),
        setting(R, "norm", "--norm", type=choices(R, "norm"), help="Score normalisation of linear fusion."),
        setting(R, "title_boost", "--title-boost", type=click.FloatRange(min=0)),
        setting(R, "num_candidates", "--num-candidates", type=click.IntRange(1), help="kNN candidates per shard."),
        setting(R, "depth", "--depth", type=click.IntRange(1), help="Hits per component list before fusion."),
        setting(
            R,
            "texts",
            "--texts",
            type=choices(R, "texts"),
            help="Hybrid: read the fused top k's texts in a second request (fetch), or have both lists carry every "
            "candidate's text, one round trip (inline: faster to a distant cluster).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


query_options = retrieval_options("--model")


def build_retriever(ctx: CliContext, options: dict[str, Any], *fixed: Layer) -> Any:
    """The command's retriever. Its settings: defaults, those recorded with the index by ``evaluate --sweep
    --save``, the config file's ``retrieval:`` section, the flags, then ``fixed`` (what the command decides)."""
    from ralm_es.retrieve.retriever import Retriever

    backend: Backend = open_backend(ctx, options.pop("backend"), options.pop("index"), options.pop("fields"))
    model = options.pop("model")
    runtime = options.pop("runtime")
    recorded = backend.tuned_settings().get("settings", {})
    tuned = mapping_layer(recorded, f"settings tuned for index {backend.index}")
    layers = [tuned, *ctx.layers(R, "retrieval"), *fixed]
    merged = merge_layers(R, layers)
    settings = build(R, merged)
    # The recorded settings that no later source replaced.
    taken = {name: value for name, value in recorded.items() if merged[name][1] == tuned.name(name)}
    if taken and RETRIEVAL_MODES[settings.mode].fused:
        click.echo(f"ralm-es: notice: fusion settings tuned for this index: {json.dumps(taken)}", err=True)
    encoder = None
    if RETRIEVAL_MODES[settings.mode].encodes:
        # Imported here: BM25 alone needs neither torch nor transformers.
        from ralm_es.embed import Encoder

        if model is None:
            filled_by = backend.info().model
            model = filled_by.path if filled_by and filled_by.path and Path(filled_by.path).is_dir() else None
        encoder = Encoder(model, runtime=runtime)
    notice = lambda message: click.echo(f"ralm-es: notice: {message}", err=True)  # noqa: E731
    return Retriever(backend, encoder, settings, notice=notice)


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


@click.command()
@click.argument("query")
@query_options
@setting(R, "k", "-k", "--k", type=click.IntRange(1), help="Number of passages.")
@click.option("--filter", "filters", multiple=True, help="Metadata filter: f=v, f=a,b or f>=n (repeatable).")
@click.option("--exclude-id", "exclude_ids", multiple=True, help="Never return this passage id (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the hits as a JSON list.")
@click.option("--explain-dsl", is_flag=True, help="Print the exact request bodies sent (for Kibana Dev Tools).")
@pass_context
def search(
    ctx: CliContext,
    query: str,
    filters: tuple[str, ...],
    exclude_ids: tuple[str, ...],
    as_json: bool,
    explain_dsl: bool,
    **options: Any,
) -> None:
    """Search the index for QUERY and print the top-k passages."""
    parsed = [parse_filter(f) for f in filters]
    index = options["index"]
    retriever = build_retriever(ctx, options)
    if explain_dsl:
        for body in retriever.explain(query, filters=parsed, exclude_ids=exclude_ids):
            click.echo(f"POST {index}/_search\n{json.dumps(body, indent=2)}\n")
        return
    hits = retriever.search(query, filters=parsed, exclude_ids=exclude_ids)
    if as_json:
        click.echo(json.dumps([h.to_json() for h in hits], ensure_ascii=False, indent=2))
        return
    if not hits:
        click.echo("no passages found")
        return
    click.echo(f"{'#':>3}  {'score':>7}  {'bm25':>7}  {'dense':>6}  {'doc_id':<14}  text")
    for h in hits:
        line = f"{h.rank:>3}  {h.score:>7.4f}  {_fmt(h.scores.get('bm25')):>7}  {_fmt(h.scores.get('dense')):>6}  "
        head = f"[{h.title}] " if h.title else ""
        click.echo(line + f"{_short(h.doc_id, 14):<14}  {_short(head + h.text, 80)}")


def guess_text_field(path: str) -> str:
    """``claim`` for claims files (SciFact style), else ``text``."""
    from ralm_es.corpus.lines import head_bytes

    head = head_bytes(Path(path)).decode("utf-8", "replace").removeprefix("\ufeff")  # the readers drop a BOM too
    first = next((line for line in head.splitlines() if line.strip()), "")
    try:
        record = json.loads(first)
    except json.JSONDecodeError:
        return "text"
    return "claim" if isinstance(record, dict) and "text" not in record and "claim" in record else "text"


@click.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, dir_okay=False))
@query_options
@setting(R, "k", "-k", "--k", type=click.IntRange(1), help="Passages per input.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Cache file (JSONL) to write or resume.")
@click.option("--text-field", default="auto", show_default=True, help="Input text field (auto: text, else claim).")
@click.option("--format", "fmt", default="auto", show_default=True, type=click.Choice(FORMATS), help="Input format.")
@setting(
    R,
    "exclude",
    "--exclude",
    type=choices(R, "exclude"),
    help="Keep an input from retrieving itself: by its id as doc_id, by identical text, or both.",
)
@click.option("--batch", default=256, show_default=True, type=click.IntRange(1), help="Inputs per search_many call.")
@click.option("--quiet", is_flag=True)
@pass_context
def retrieve(
    ctx: CliContext,
    input_path: str,
    out: str,
    text_field: str,
    fmt: str,
    batch: int,
    quiet: bool,
    **options: Any,
) -> None:
    """Top-k passages for every input of a data set (JSONL/BEIR queries, CoNLL sentences, claims) into a cache."""
    from ralm_es.corpus.readers import ReadOptions, read_corpus
    from ralm_es.corpus.types import ReadError
    from ralm_es.retrieve.cache import CacheHeader, CacheWriter

    index = options["index"]
    backend_name = options["backend"]
    retriever = build_retriever(ctx, options)
    s = retriever.settings
    header = CacheHeader(
        index=index,
        mode=s.mode,
        k=s.k,
        fusion=s.fusion_header(),
        encoder=retriever.query_encoder.info() if retriever.query_encoder else None,
        backend=backend_name,
        exclude=s.exclude,
    )
    field = guess_text_field(input_path) if text_field == "auto" else text_field
    failed = here = 0
    with CacheWriter(out, header) as writer:
        if writer.done:
            click.echo(f"resuming {out}: {len(writer.done)} inputs already retrieved", err=True)
        bar = tqdm(desc="retrieve", unit="input", disable=quiet, file=sys.stderr, dynamic_ncols=True)
        pending: list[tuple[str, str]] = []

        def flush() -> None:
            nonlocal here
            results = retriever.search_many([t for _, t in pending], input_ids=[i for i, _ in pending])
            for (input_id, text), hits in zip(pending, results, strict=True):
                writer.write(input_id, text, hits)
            here += len(pending)
            writer.flush()
            bar.update(len(pending))
            pending.clear()

        for item in read_corpus(input_path, ReadOptions(format=fmt, text_field=field)):
            if isinstance(item, ReadError):
                failed += 1
                tqdm.write(f"ralm-es: {item.source}: {item.reason}", file=sys.stderr)
                continue
            if writer.cached(item.id, item.text, item.source):
                here += 1
                continue
            pending.append((item.id, item.text))
            if len(pending) >= batch:
                flush()
        if pending:
            flush()
        bar.close()
    # This input's entries; those of other inputs the cache was resumed with are counted apart.
    others = len(writer.done) - here
    click.echo(
        f"{here} inputs in {out}"
        + (f" (and {others} of other inputs)" if others else "")
        + (f"; {failed} unreadable" if failed else ""),
        err=True,
    )
    if failed:
        sys.exit(1)


@click.command()
@query_options
@click.option("--queries", required=True, type=click.Path(exists=True), help="Queries (JSONL/BEIR: _id, text).")
@click.option("--qrels", required=True, type=click.Path(exists=True), help="BEIR qrels TSV.")
@click.option(
    "--sweep",
    is_flag=True,
    help="Choose hybrid fusion settings on a seeded tuning part of the queries and measure them on the rest (dev).",
)
@click.option(
    "--dev-fraction",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.2,
    show_default=True,
    help="With --sweep: the share of the judged queries kept out of the choice, to measure it on.",
)
@click.option("--seed", default=13, show_default=True, help="With --sweep: the seed of the tuning/dev split.")
@click.option(
    "--save",
    is_flag=True,
    help="With --sweep: record the chosen settings with the index; search, retrieve and evaluate then use them.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print {"ndcg@10", "recall@100", "mrr@10", "map", "queries"}; with --sweep, the chosen settings, their dev '
    "scores and every setting's row.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Refuse unless every query has a relevant judgement and every judged query is given.",
)
@pass_context
def evaluate(
    ctx: CliContext,
    queries: str,
    qrels: str,
    sweep: bool,
    dev_fraction: float,
    seed: int,
    save: bool,
    as_json: bool,
    strict: bool,
    **options: Any,
) -> None:
    """nDCG@10, recall@100, MRR@10 and MAP of a retrieval mode over the given queries that have a relevant
    judgement (ranx). A mismatch between the queries and the qrels is a warning (with --strict, an error)."""
    from ralm_es.corpus.readers import ReadOptions, read_corpus
    from ralm_es.corpus.types import ReadError
    from ralm_es.retrieve import evaluate as ev
    from ralm_es.retrieve.metrics import load_qrels

    if save and not sweep:
        raise click.UsageError("--save records the choice of --sweep; give both")
    current = click.get_current_context()
    split = [
        f"--{name.replace('_', '-')}"
        for name in ("dev_fraction", "seed")
        if current.get_parameter_source(name) not in (click.core.ParameterSource.DEFAULT, None)
    ]
    if split and not sweep:
        raise click.UsageError(f"{' and '.join(split)} set the split of --sweep; give --sweep too, or leave them out")
    texts: dict[str, str] = {}
    for item in read_corpus(queries, ReadOptions(text_field=guess_text_field(queries))):
        if isinstance(item, ReadError):
            raise click.ClickException(f"{item.source}: {item.reason}")
        texts[item.id] = item.text
    judgements = load_qrels(qrels)
    match = ev.match_queries(texts, judgements)
    if not match.scored:
        raise click.ClickException(f"none of the {len(texts)} queries in {queries} has a relevant judgement in {qrels}")
    if not match.exact:
        if strict:
            raise click.ClickException(f"{match.describe(queries, qrels)} (--strict)")
        click.echo(f"ralm-es: warning: {match.describe(queries, qrels)}", err=True)
    # A sweep tunes hybrid fusion, whatever --mode says.
    retriever = build_retriever(ctx, options, *([set_layer(["mode=hybrid"], where="--sweep")] if sweep else []))
    mode = retriever.settings.mode
    if sweep:
        tuned = ev.tune_fusion(retriever, texts, judgements, dev_fraction=dev_fraction, seed=seed)
        if save:
            retriever.backend.record_tuned_settings(tuned.record())
        if as_json:
            click.echo(json.dumps({**tuned.record(), "dev": tuned.dev, "dev_base": tuned.dev_base, "rows": tuned.rows}))
        else:
            click.echo(
                f"{len(tuned.rows)} hybrid fusion settings over {tuned.tune_queries} tuning queries (seed {seed})"
            )
            for row in tuned.rows:
                click.echo(
                    f"ndcg@10 {row['ndcg@10']:.4f}  recall@100 {row['recall@100']:.4f}  {json.dumps(row['settings'])}"
                )
            click.echo(
                f"chosen {json.dumps(tuned.chosen.fusion_header())}: dev nDCG@10 {tuned.dev['ndcg@10']:.4f} over "
                f"{tuned.dev['queries']} held-out queries (the starting settings: {tuned.dev_base['ndcg@10']:.4f})"
            )
        if save:
            click.echo(f"recorded with index {retriever.backend.index}: search and retrieve now use it", err=True)
        return
    metrics = ev.evaluate_index(retriever, texts, judgements, mode)
    if as_json:
        click.echo(json.dumps(metrics))
    else:
        click.echo(f"mode {mode} over {metrics['queries']} queries")
        for name in ("ndcg@10", "recall@100", "mrr@10", "map"):
            click.echo(f"  {name:<11} {metrics[name]:.4f}")
