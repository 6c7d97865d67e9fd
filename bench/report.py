"""``docs/benchmarks.md`` and its plots, written from the results of one harness run (never edited by hand)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.common import summarize

SECTIONS = (
    "Targets",
    "Machine and load",
    "Ingest (SciFact)",
    "Retrieval quality (SciFact train)",
    "Retrieval quality on the whole SciFact corpus",
    "Latency of one hybrid search",
    "search_many against a loop of search",
    "CoNLL-2003 sentences as queries",
    "Training",
    "Tuning the retriever",
    "The tuned retriever downstream (SciFact claims)",
    "The evidence-tuned retriever downstream (SciFact claims)",
    "The tuned retriever downstream, read token by token (SciFact claims)",
    "The tuned retriever downstream, read with the claim (SciFact claims)",
    "Serving under load",
    "Encoder runtimes (ONNX)",
    "How to rerun",
)
SERVE_LOAD = Path(__file__).resolve().parent / "results" / "serve_load.json"
SCIFACT_EVAL = Path(__file__).resolve().parent / "results" / "scifact_eval.json"
TUNE_RETRIEVER = Path(__file__).resolve().parent / "results" / "tune_retriever.json"
ONNX = Path(__file__).resolve().parent / "results" / "onnx.json"


def fig(summary: dict[str, Any], digits: int = 1, scale: float = 1.0) -> str:
    """``median (min–max, n runs)``."""
    m, lo, hi = (summary[k] * scale for k in ("median", "min", "max"))
    return f"{m:.{digits}f} ({lo:.{digits}f}–{hi:.{digits}f}, {len(summary['runs'])} runs)"


def verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("**met**" if met else "**missed**")


Target = tuple[str, str, str, bool | None]


def ingest_targets(
    ingest: dict[str, Any], name: str, short: str, runtime: str, of_limit: dict[str, Any], over_peer: dict[str, Any]
) -> list[Target]:
    """The share of the encoder-alone limit (of the same ``runtime``) and the ratio over the faster peer (torch)."""
    share = of_limit["median"]
    wanted = ingest["target_of_limit"]
    rows: list[Target] = [(f"{name} vs encoder alone{runtime}", f"≥ {wanted:.0%}", f"{share:.0%}", share >= wanted)]
    if ingest["peers"]:
        peer = ingest["fastest_peer"]
        ratio, wanted = over_peer[peer]["median"], ingest["target_over_peers"]
        torch_peer = ", torch" if runtime else ""
        rows.append(
            (f"{short} vs the faster peer ({peer}{torch_peer})", f"≥ {wanted:.1f}×", f"{ratio:.2f}×", ratio >= wanted)
        )
    return rows


def targets(results: dict[str, Any]) -> list[Target]:
    """(what, target, measured, met) for every target of the issues that this run measured."""
    rows: list[Target] = []
    ingest = results.get("ingest")
    if ingest:
        over_peer = {peer: record["ralm_over_peer"] for peer, record in ingest["peers"].items()}
        rows += ingest_targets(ingest, "ingest with embeddings", "ingest", "", ingest["ralm_of_limit"], over_peer)
        for rt, record in ingest.get("runtimes", {}).items():
            name = f"ingest ({rt})"
            rows += ingest_targets(ingest, name, name, f" ({rt})", record["ralm_of_limit"], record["ralm_over_peer"])
    retrieval = results.get("retrieval")
    if retrieval:
        modes = retrieval["quality"]["modes"]
        best_single = max(modes["bm25"]["ndcg@10"], modes["dense"]["ndcg@10"])
        hybrid = modes["hybrid_rrf"]["ndcg@10"]
        rows.append(
            (
                "hybrid (RRF, defaults) nDCG@10 beats bm25 and dense",
                f"> {best_single:.3f}",
                f"{hybrid:.3f}",
                hybrid > best_single,
            )
        )
        lat = retrieval["latency"]
        rows.append(
            (
                "latency: the rest vs Elasticsearch's took (p50)",
                f"≤ {lat['target_rest_of_took']:.0%}",
                f"{lat['rest_of_took_p50']:.0%}",
                lat["rest_of_took_p50"] <= lat["target_rest_of_took"],
            )
        )
        many = retrieval["many"]
        ratio = many["many_over_loop"]["median"]
        rows.append(
            (
                f"search_many vs a loop of search ({many['queries']} queries)",
                f"≥ {many['target']:.0f}×",
                f"{ratio:.1f}×",
                ratio >= many["target"],
            )
        )
        conll = retrieval["conll"]
        seconds = conll["seconds"]["median"]
        rows.append(
            (
                f"CoNLL train sentences as queries ({conll['sentences']:,})",
                f"< {conll['target_s']:.0f} s for all 14,041",
                f"{seconds:.1f} s",
                seconds < conll["target_s"] if conll["full_train_set"] else None,
            )
        )
    return rows


PEER_COLORS = ("#ff7f0e", "#2ca02c", "#d62728")


def plot_ingest(ingest: dict[str, Any], path: Path) -> None:
    """Systems that embed, against the encoder alone (BM25-only ingest is in the table: it needs no encoder)."""
    names = ["encoder alone (limit)", "ralm-es"]
    stats = [ingest["limit_passages_per_s"], ingest["ralm_passages_per_s"]]
    colors = ["#888", "#1f77b4"]
    for rt, record in ingest.get("runtimes", {}).items():
        names += [f"encoder alone ({rt})", f"ralm-es ({rt})"]
        stats += [record["limit_passages_per_s"], record["ralm_passages_per_s"]]
        colors += ["#bbb", "#6baed6"]
    for i, (peer, record) in enumerate(ingest["peers"].items()):
        names.append(peer)
        stats.append(record["passages_per_s"])
        colors.append(PEER_COLORS[i % len(PEER_COLORS)])
    medians = [s["median"] for s in stats]
    errors = [[s["median"] - s["min"] for s in stats], [s["max"] - s["median"] for s in stats]]
    figure, ax = plt.subplots(figsize=(7, 1.6 + 0.3 * len(names)))
    ax.barh(names, medians, xerr=errors, color=colors)
    ax.axvline(ingest["limit_passages_per_s"]["median"], color="#444", linestyle="--", linewidth=1)
    ax.set_xlabel("passages per second with embeddings (bars: median, whiskers: min–max)")
    ax.invert_yaxis()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_latency(latency: dict[str, Any], path: Path) -> None:
    parts = ["total", "encode", "took", "rest"]
    labels = ["total", "query encoding", "Elasticsearch took", "rest (ralm-es + client)"]
    figure, ax = plt.subplots(figsize=(7, 3.2))
    ax.boxplot(
        [[s * 1000 for s in latency[p]["samples"]] for p in parts],
        orientation="horizontal",
        whis=(1, 99),
        showfliers=True,
    )
    ax.set_yticks(range(1, len(parts) + 1), labels)
    ax.set_xlabel(f"milliseconds per hybrid search ({latency['queries']} queries; whiskers p1–p99)")
    ax.invert_yaxis()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def machine_section(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    return [
        f"- CPU: {m['cpu']}, {m['cores']} cores; memory {m['memory_gib']} GiB; {m['platform']}",
        f"- Python {m['python']}, torch {m['torch']}, transformers {m['transformers']}, "
        f"elasticsearch client {m['elasticsearch_client']}, server {m['elasticsearch_server']} "
        f"(heap {m['es_heap_gib']} GiB), ralm-es {m['ralm_es']}",
        f"- Load average (1, 5, 15 min) at the start: {results['load_start']}, at the end: {results['load_end']}. "
        "The machine and the node were shared with other work while this ran: absolute figures are context, the "
        "ratios (measured in the same repetitions) are the comparison.",
        f"- Started {results['started']}, took {results['seconds'] / 60:.1f} min; "
        f"mode {'quick' if results['config']['quick'] else 'full'}.",
    ]


def ingest_section(ingest: dict[str, Any], img: str) -> list[str]:
    lines = [
        f"Corpus: `{ingest['corpus']}`, {ingest['abstracts']:,} abstracts → {ingest['passages']:,} passages "
        f"(256-token chunks, 32 overlap), encoder batch {ingest['encode_batch']}, {ingest['repeats']} interleaved "
        "repetitions (limit, ralm-es, BM25 only, then each peer, in every repetition). Load average per repetition: "
        f"{ingest['load_average']}.",
        "",
    ]
    rows = [
        ["encoder alone on the same batches (the limit)", fig(ingest["limit_passages_per_s"]), "1.00"],
        ["ralm-es ingest with embeddings", fig(ingest["ralm_passages_per_s"]), fig(ingest["ralm_of_limit"], 2)],
        ["ralm-es BM25 only", fig(ingest["bm25_passages_per_s"]), ""],
    ]
    runtimes = ingest.get("runtimes", {})
    for rt, record in runtimes.items():
        rows.append([f"encoder alone, runtime {rt} (its limit)", fig(record["limit_passages_per_s"]), "1.00"])
        rows.append(
            [f"ralm-es ingest, runtime {rt}", fig(record["ralm_passages_per_s"]), fig(record["ralm_of_limit"], 2)]
        )
    for peer, record in ingest["peers"].items():
        rows.append([f"{peer} (embed + write)", fig(record["passages_per_s"]), ""])
    lines += _table(["system", "passages/s", "share of the limit"], rows)
    rss = f"Peak RSS of the BM25-only ingest process: {fig(ingest['bm25_max_rss_mib'], 0)} MiB"
    if ingest.get("bm25_rss_apart"):
        rss += " (started apart from the benchmark process by `bench/peak_rss.py`)."
    else:
        # Results written before bench/peak_rss.py: the child inherited the harness's high-water RSS.
        rss += (
            ", an upper bound: this run started it straight from the benchmark process, whose own peak Linux "
            "carries into the child's, so the figure is mostly the benchmark's (it holds the encoders)."
        )
    lines += ["", rss, ""]
    if ingest["peers"]:
        lines += _table(
            [
                "ralm-es / peer",
                "ratio (per repetition)",
                *(f"ralm-es {rt} / peer" for rt in runtimes),
                "peer environment",
            ],
            [
                [
                    peer,
                    fig(record["ralm_over_peer"], 2),
                    *(fig(runtimes[rt]["ralm_over_peer"][peer], 2) for rt in runtimes),
                    f"built in {record['venv']['seconds']:.0f} s this run" if record["venv"]["built"] else "reused",
                ]
                for peer, record in ingest["peers"].items()
            ],
        )
        lines += [
            "",
            "Each system writes the same chunked passages into its own fresh index on the same node with the same "
            "model folder and batch size. ralm-es's time covers reading, chunking, embedding, writing and the final "
            "refresh; a peer's covers embedding and writing the pre-chunked passages (model loading excluded for "
            "all), and each index's `_count` is checked afterwards. Each system keeps its default vector index "
            "type: " + ", ".join(f"{k} `{v}`" for k, v in ingest["vector_index_types"].items()) + ".",
        ]
        if runtimes:
            lines += [
                "",
                "The peers embed with sentence-transformers under torch, as they do by default; ralm-es is measured "
                f"under torch and again with the encoder runtime{'s' if len(runtimes) > 1 else ''} "
                + ", ".join(f"`{rt}`" for rt in runtimes)
                + " (`ingest --set runtime=...`; torch-bf16 vectors mix with torch's, int8 ones are close to torch's "
                "but an index filled with them answers only int8 queries, see Encoder runtimes).",
            ]
    else:
        lines.append("Peers were not run in this run.")
    return [*lines, "", f"![ingest throughput]({img})"]


def settings_text(settings: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in settings.items())


def quality_section(quality: dict[str, Any], abstracts: int | None) -> list[str]:
    modes = quality["modes"]
    rows = [
        [name, f"{row['ndcg@10']:.3f}", f"{row['recall@100']:.3f}", f"{row['mrr@10']:.3f}"]
        for name, row in modes.items()
    ]
    best = quality["sweep_best"]
    rows.append(
        [
            f"hybrid, best of the sweep: {settings_text(best['settings'])}",
            f"{best['ndcg@10']:.3f}",
            f"{best['recall@100']:.3f}",
            f"{best['mrr@10']:.3f}",
        ]
    )
    return [
        f"{quality['queries']} judged SciFact **train** queries (`queries.train.jsonl`, `qrels/train.tsv`)"
        + (
            f", those whose relevant abstracts are all among the first {abstracts} indexed here (a slice: the "
            "figures are not comparable with full-corpus results)"
            if abstracts
            else " against the whole corpus"
        )
        + f". Defaults: {settings_text(quality['defaults']['rrf'])}; {settings_text(quality['defaults']['linear'])}. "
        f"The sweep compares {quality['sweep_settings']} fusion settings and is tuned on the train split only, so "
        "its best row is an optimistic figure for that split, not a held-out result.",
        "",
        *_table(["mode", "nDCG@10", "recall@100", "MRR@10"], rows),
    ]


def latency_section(latency: dict[str, Any], img: str) -> list[str]:
    rows = [
        [label, *(f"{latency[part][p] * 1000:.1f}" for p in ("p50", "p95", "p99"))]
        for part, label in (
            ("total", "total `Retriever.search`"),
            ("encode", "query encoding"),
            ("took", "Elasticsearch `took` (bm25 + kNN, then the fetch)"),
            ("rest", "the rest (ralm-es and the client)"),
        )
    ]
    return [
        f"{latency['queries']} single hybrid searches (k=10, no query-vector cache), each split into encoding, "
        "Elasticsearch's `took` (the sum over the two component searches of one `_msearch`, ids and scores only, and "
        "the search that then fetches the texts of the fused top k), and the rest. `_msearch` may run the two "
        "components concurrently, so the summed `took` can overstate Elasticsearch's share and the rest of a single "
        "search can come out slightly negative.",
        "",
        *_table(["part", "p50 ms", "p95 ms", "p99 ms"], rows),
        "",
        f"The rest at p50 is {latency['rest_of_took_p50']:.0%} of `took` at p50. It holds a second tokenization of "
        "the query (its length check), two HTTP round trips with their JSON (the components' `_msearch`, then the "
        "fetch), and fusion; the index's vector dimensions are read once per backend, not per search. It does not "
        "shrink with the node's speed, so its share grows as the node answers faster. Where the summed `took` "
        "overstates Elasticsearch's share (above), this figure understates the rest.",
        "",
        f"![latency]({img})",
    ]


def texts_section(texts: dict[str, Any]) -> list[str]:
    rows = []
    for place, label in (("near", "this node"), ("distant", f"through a proxy adding {texts['delay_ms']:g} ms")):
        fetch, inline = (texts[place][t]["p50"] * 1000 for t in ("fetch", "inline"))
        rows.append([label, f"{fetch:.1f}", f"{inline:.1f}", f"{inline / fetch:.2f}"])
    return [
        "",
        "### Texts after fusion or with the rankings (`retrieval.texts`)",
        "",
        f"{texts['queries']} single hybrid searches without their encoding (vectors computed beforehand), `fetch` "
        "(the default: the two rankings carry ids and scores, then one request reads the fused top k) and `inline` "
        "(the rankings carry every candidate's text; one round trip) alternating query by query; once against the "
        "node, once through a proxy that holds every request before passing it on, as a cluster that far away would.",
        "",
        *_table(["cluster", "fetch p50 ms", "inline p50 ms", "inline / fetch"], rows),
        "",
        "On a near node `fetch` is faster: reading every candidate's `_source` (the vector in it parsed to be left "
        "out) costs the node more than a second request. A round trip of a few milliseconds turns it round.",
    ]


def many_section(many: dict[str, Any], onnx_path: Path) -> list[str]:
    lines = [
        f"{many['queries']} distinct hybrid queries (k=10, no query-vector cache): one `search_many` call against a "
        "loop of `search`, alternating in each repetition.",
        "",
        *_table(
            ["", "queries/s"],
            [
                ["loop of `search`", fig(many["loop_queries_per_s"])],
                ["`search_many`", fig(many["many_queries_per_s"])],
                ["ratio search_many / loop", fig(many["many_over_loop"], 2)],
            ],
        ),
    ]
    if onnx_path.is_file():
        run = json.loads(onnx_path.read_text(encoding="utf-8"))
        alone, batched = (run["speed"]["torch"][batch]["median_ms"] for batch in ("1", "32"))
        lines += [
            "",
            f"For scale: batching gains the encoder itself {alone / batched:.1f}× on this machine (`onnx.json`, "
            f"written {run['written']}: torch encodes a short query in {alone:.1f} ms alone and in {batched:.1f} ms "
            "a query in a batch of 32), and encoding is the largest part of a single search (the latency split "
            "above); the node's searches run on the same cores.",
        ]
    return lines


def conll_section(conll: dict[str, Any]) -> list[str]:
    scope = "all training sentences" if conll["full_train_set"] else "a slice of the training sentences"
    return [
        f"{conll['sentences']:,} CoNLL-2003 sentences ({scope}) ingested with the CoNLL reader "
        f"({conll['index_passages_per_s']:.1f} passages/s), then each used as a hybrid k=8 query against that index "
        f"(excluding itself by id and text), {RETRIEVE_NOTE}.",
        "",
        f"- time for all queries: {fig(conll['seconds'])} s; {conll['answered']:,} queries got passages",
    ]


RETRIEVE_NOTE = "256 inputs per `search_many` call as `ralm-es retrieve` sends them"


def _mode_table(values: dict[str, Any], label: str) -> list[str]:
    return _table(["fusion", label], [[mode, "–" if v is None else f"{v:.4f}"] for mode, v in values.items()])


@dataclass(frozen=True)
class EfficiencyFile:
    """How the report shows one label-efficiency results file: its plot, the efficiency file whose runs of
    ``none``, of variants on the same passages and of the references it borrows, the variants each other one is
    paired against, and whether conll.json's full-data runs are its 100% point."""

    plot: str
    baseline: str | None = None
    references: tuple[str, ...] = ("none",)
    with_conll: bool = False


EFFICIENCY_FILES = {
    "efficiency": EfficiencyFile("label_efficiency.png", with_conll=True),
    "efficiency_tokens": EfficiencyFile("label_efficiency_tokens.png"),
    "efficiency_crossdoc": EfficiencyFile("label_efficiency_crossdoc.png", "efficiency_tokens"),
    "efficiency_regularisers": EfficiencyFile(
        "label_efficiency_regularisers.png", "efficiency_tokens", ("none", "attention-tokens")
    ),
    "efficiency_k16": EfficiencyFile("label_efficiency_k16.png", "efficiency_tokens", ("none", "attention-tokens")),
    "efficiency_mixed": EfficiencyFile("label_efficiency_mixed.png", "efficiency_tokens", ("none", "attention-tokens")),
    "efficiency_mixed_tuned": EfficiencyFile(
        "label_efficiency_mixed_tuned.png", "efficiency_tokens", ("none", "attention-tokens")
    ),
    "efficiency_concat": EfficiencyFile(
        "label_efficiency_concat.png", "efficiency_tokens", ("none", "attention-tokens")
    ),
    "efficiency_case": EfficiencyFile("label_efficiency_case.png", "efficiency_tokens", ("none", "attention-tokens")),
    "efficiency_long": EfficiencyFile("label_efficiency_long.png"),
    "efficiency_long_5pct": EfficiencyFile("label_efficiency_long_5pct.png"),
    "efficiency_fp32": EfficiencyFile("label_efficiency_fp32.png"),
    "efficiency_bf16": EfficiencyFile("label_efficiency_bf16.png"),
    "efficiency_concat_full": EfficiencyFile("label_efficiency_concat_full.png"),
    "efficiency_concat_full_4ep": EfficiencyFile("label_efficiency_concat_full_4ep.png"),
    "efficiency_concat256": EfficiencyFile("label_efficiency_concat256.png", references=("none", "concat")),
    "efficiency_concat_5pct": EfficiencyFile("label_efficiency_concat_5pct.png"),
    "efficiency_tokens_concat": EfficiencyFile(
        "label_efficiency_tokens_concat.png", references=("none", "attention-tokens")
    ),
    "efficiency_tokens_concat_long": EfficiencyFile("label_efficiency_tokens_concat_long.png"),
    "efficiency_tokens_concat_long5": EfficiencyFile("label_efficiency_tokens_concat_long5.png"),
    "efficiency_tokens_concat_seeds": EfficiencyFile("label_efficiency_tokens_concat_seeds.png"),
    "efficiency_tokens_concat_full": EfficiencyFile(
        "label_efficiency_tokens_concat_full.png", "efficiency_concat_full", ("none", "concat")
    ),
}

TRAIN_RESULTS = (
    "conll",
    "scifact",
    "scifact_pair",
    "scifact_tokens",
    "scifact_scores",
    "scifact_scores_k16",
    "scifact_pair_k2",
    "scifact_pair_c128",
    *EFFICIENCY_FILES,
    "throughput",
    "throughput_tokens",
)


def written_at(path: Path) -> str:
    """When a results file was written: its last commit if it is committed unchanged (a checkout resets file
    times), else its modification time."""
    changed = subprocess.run(["git", "status", "--porcelain", "--", path.name], cwd=path.parent, capture_output=True)
    committed = subprocess.run(
        ["git", "log", "-1", "--format=%ct", "--", path.name], cwd=path.parent, capture_output=True, text=True
    )
    stamp = committed.stdout.strip()
    seconds = int(stamp) if changed.returncode == 0 and not changed.stdout and stamp else path.stat().st_mtime
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))


def collect_train(results_dir: Path) -> dict[str, Any]:
    """The training benchmarks' results as ``bench/train_bench.py`` saved them in the results folder.

    Those runs need retrieval caches made beforehand and take hours on CPU, so they are run on their own
    (``python bench/train_bench.py conll --caches ... --out bench/results/conll.json``); the report shows them
    with the time each file was written, and rewriting the report picks up files written since the bench run.
    """
    found: dict[str, Any] = {}
    for name in TRAIN_RESULTS:
        path = results_dir / f"{name}.json"
        if path.is_file():
            found[name] = {
                **json.loads(path.read_text(encoding="utf-8")),
                "file": path.name,
                "written": written_at(path),
            }
    return found


def train_section(train: dict[str, Any] | None, docs_dir: Path) -> list[str]:
    """The results files of ``bench/train_bench.py`` found in the results folder, one subsection each."""
    if not train:
        return [
            "No training results in `bench/results/` (`conll.json`, `scifact.json`, `efficiency.json`, "
            "`throughput.json`): run `python bench/train_bench.py <benchmark> ... "
            "--out bench/results/<benchmark>.json`."
        ]
    lines = [
        "Measured by `bench/train_bench.py` on its own (it needs retrieval caches and long training runs); "
        "each table says which results file it comes from and when that was written."
    ]
    for name, result in train.items():
        source = f"`bench/results/{result['file']}`, written {result['written']}" + (
            ", quick mode" if result.get("quick") else ""
        )
        lines += ["", f"### {name}", "", f"From {source}.", ""]
        if name == "conll":
            lines += _mode_table(result["test_f1"], "CoNLL-2003 test entity F1")
        elif name.startswith("scifact"):
            lines += seeded_section(result)
        elif (shown := EFFICIENCY_FILES.get(name)) is not None:
            conll = train.get("conll") if shown.with_conll else None
            baseline = train.get(shown.baseline) if shown.baseline else None
            lines += efficiency_section(result, conll, docs_dir, shown.plot, baseline, shown.references)
        elif name.startswith("throughput"):
            runs = {run_name.removeprefix("throughput-"): run for run_name, run in result["runs"].items()}
            base = result["examples_per_s"].get("none")
            lines += _table(
                ["variant", "training examples/s", "time per example vs none", "peak memory MB", "run seconds"],
                [
                    [
                        v,
                        f"{eps:.2f}",
                        f"{base / eps:.2f}x" if base and eps else "-",
                        f"{result['peak_memory_mb'][v]}",
                        f"{runs[v]['seconds']:.0f}" if v in runs else "-",
                    ]
                    for v, eps in result["examples_per_s"].items()
                ],
            )
            loads = sorted({x for run in runs.values() for x in run.get("load_average", [])})
            if loads:
                span = f"{loads[0]}–{loads[-1]}"
                cache = next(iter(runs.values()))["config"]["data"]["train_cache"]
                lines += [
                    "",
                    f"{result['steps']} training steps a variant, passages from `{cache}`; 1-minute load {span}.",
                ]
    return lines


def spread(values: list[float]) -> str:
    """Mean ± sample standard deviation (0 for one value)."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def per_seed_differences(values: dict[int, float], base: dict[int, float]) -> dict[int, float]:
    """A variant's figure minus the baseline's on each seed both have (paired: same split and data order)."""
    return {seed: values[seed] - base[seed] for seed in sorted(values) if seed in base}


def seed_figures(runs: dict[int, dict[str, Any]], metric: str) -> dict[int, float]:
    """One test metric of seeded runs, by seed."""
    return {seed: run["test"][metric] for seed, run in runs.items()}


def runs_by_mode(result: dict[str, Any]) -> dict[str, dict[int, dict[str, Any]]]:
    """A ``train_bench.py scifact`` result's runs as {fusion: {seed: run}}."""
    by_mode: dict[str, dict[int, dict[str, Any]]] = {}
    for name, run in result["runs"].items():
        mode, _, seed = name.removeprefix("scifact-").rpartition("-seed")
        by_mode.setdefault(mode, {})[int(seed)] = run
    return by_mode


def seeded_section(result: dict[str, Any]) -> list[str]:
    """A seeded comparison: each variant's test accuracy and macro-F1 as mean ± sd over its seeds, and the per-seed
    differences of both against ``none`` on the same seeds (same split and data order)."""
    by_mode = runs_by_mode(result)
    base = by_mode.get("none", {})

    def against_none(mode: str, runs: dict[int, Any], metric: str) -> str:
        paired = per_seed_differences(seed_figures(runs, metric), seed_figures(base, metric)).values()
        return ", ".join(f"{d:+.4f}" for d in paired) if mode != "none" and paired else "-"

    rows = []
    for mode, runs in by_mode.items():
        seeds = sorted(runs)
        f1 = [runs[s]["test"]["macro_f1"] for s in seeds]
        rows.append(
            [
                mode,
                ", ".join(map(str, seeds)),
                spread([runs[s]["test"]["accuracy"] for s in seeds]),
                spread(f1),
                ", ".join(f"{x:.4f}" for x in f1),
                against_none(mode, runs, "accuracy"),
                against_none(mode, runs, "macro_f1"),
                f"{statistics.median(runs[s]['examples_per_s'] for s in seeds):.2f}",
                f"{max(runs[s]['peak_memory_mb'] for s in seeds)}",
            ]
        )
    lines = _table(
        [
            "fusion",
            "seeds",
            "test accuracy (mean ± sd)",
            "test macro-F1 (mean ± sd)",
            "macro-F1 per seed",
            "accuracy − none, per seed",
            "macro-F1 − none, per seed",
            "examples/s (median)",
            "peak MB",
        ],
        rows,
    )
    config = next(iter(result["runs"].values()))["config"]
    ks = {mode: {run["config"]["model"]["k"] for run in runs.values()} for mode, runs in by_mode.items()}
    every = set().union(*ks.values())
    k = (
        f"k={config['model']['k']}"
        if len(every) == 1
        else "k " + ", ".join(f"{'/'.join(map(str, sorted(values)))} ({mode})" for mode, values in ks.items())
    )
    budget = f"{config['train']['epochs']:g} epochs of batch {config['train']['batch_size']}, {k}"
    if (precision := config["train"].get("precision", "auto")) != "auto":
        budget += f", {precision} training"
    return [
        *lines,
        "",
        f"Split: {result['split']}; {budget}; passages from `{config['data']['train_cache']}`; the best dev "
        "checkpoint of each run on the test part.",
    ]


def mode_of(name: str, run: dict[str, Any], prefix: str = "efficiency-") -> str:
    """The variant of a run from its name (``efficiency-attention-tokens-0.1-seed13``: ``attention-tokens``)."""
    return name.removeprefix(prefix).partition("-seed")[0].removesuffix(f"-{run['config']['data']['train_fraction']:g}")


def efficiency_runs(
    efficiency: dict[str, Any],
    conll: dict[str, Any] | None,
    baseline: dict[str, Any] | None = None,
    references: tuple[str, ...] = (),
) -> dict[float, dict[str, Any]]:
    """Label-efficiency runs by fraction of the training sentences and variant: the subsets of ``efficiency.json``
    and, as the whole set, its own fraction-1 runs or else the full-data runs of ``conll.json`` (the same config
    and budget; not trained twice);
    with ``baseline``, the runs of another efficiency file at this file's fractions for the variants this file
    lacks: those of ``none`` (it reads no passages, so its runs are the same whatever the passages of the others),
    of any variant whose runs read the same passages as this file's, and of the ``references`` whatever their
    passages (a variant compared against on purpose)."""
    found: dict[float, dict[str, list[dict[str, Any]]]] = {}
    fractions = {run["config"]["data"]["train_fraction"] for run in efficiency["runs"].values()}
    own_modes = {mode_of(name, run) for name, run in efficiency["runs"].items()}
    cache = next(iter(efficiency["runs"].values()))["config"]["data"]["train_cache"]
    borrowed = {
        name: run
        for name, run in (baseline or {}).get("runs", {}).items()
        if run["config"]["data"]["train_fraction"] in fractions
        and (mode := mode_of(name, run)) not in own_modes
        and (mode == "none" or mode in references or run["config"]["data"]["train_cache"] == cache)
    }
    # Full-data runs of this file's own take the place of conll.json's.
    full = {} if 1 in fractions else (conll or {}).get("runs", {})
    sources = (("efficiency-", efficiency["runs"]), ("efficiency-", borrowed), ("conll-", full))
    for prefix, runs in sources:
        for name, run in runs.items():
            found.setdefault(run["config"]["data"]["train_fraction"], {}).setdefault(
                mode_of(name, run, prefix), []
            ).append(run)
    return dict(sorted(found.items()))


def _names(modes: list[str]) -> str:
    return " and ".join(f"`{m}`" for m in modes)


def efficiency_section(
    efficiency: dict[str, Any],
    conll: dict[str, Any] | None,
    docs_dir: Path,
    plot: str,
    baseline: dict[str, Any] | None,
    references: tuple[str, ...],
) -> list[str]:
    """Test F1 against the fraction of training sentences, per variant of the efficiency runs (mean ± sd over the
    seeds of a cell, with the per-seed difference of each variant against each of ``references`` listed before
    it; runs of variants this file lacks taken from ``baseline`` when given), as a table and a plot with error
    bars; each row says the budget its runs had."""
    runs = efficiency_runs(efficiency, conll, baseline, references)
    seeded = any(len(rs) > 1 for by_mode in runs.values() for rs in by_mode.values())
    # The variants of this file's own fractions (conll.json's full-data runs hold more variants).
    fractions = {run["config"]["data"]["train_fraction"] for run in efficiency["runs"].values()}
    modes = sorted({mode for fraction, by_mode in runs.items() if fraction in fractions for mode in by_mode})
    f1 = {
        mode: {
            fraction: [run["test"]["f1"] for run in by_mode[mode] if "test" in run]
            for fraction, by_mode in runs.items()
            if any("test" in run for run in by_mode.get(mode, []))
        }
        for mode in modes
    }

    def cell(values: list[float]) -> str:
        if len(values) == 1:
            # Beside cells over seeds, a single run must say it is one.
            return f"{values[0]:.4f} (1 seed)" if seeded else f"{values[0]:.4f}"
        return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f} ({len(values)} seeds)"

    def paired(fraction: float, mode: str, reference: str) -> str:
        def by_seed(variant: str) -> dict[int, float]:
            return {run["config"]["train"]["seed"]: run["test"]["f1"] for run in runs[fraction].get(variant, [])}

        return ", ".join(f"{d:+.4f}" for d in per_seed_differences(by_seed(mode), by_seed(reference)).values())

    pairs = [
        (mode, reference) for i, reference in enumerate(references) for mode in modes if mode not in references[: i + 1]
    ]
    rows = []
    for fraction, by_mode in runs.items():
        budget = {
            f"{r['config']['train']['epochs']:g} epochs, {r['steps']} steps" for rs in by_mode.values() for r in rs
        }
        values = [cell(f1[mode][fraction]) if fraction in f1[mode] else "–" for mode in modes]
        rows.append(
            [f"{fraction:g}", *values, *(paired(fraction, m, r) or "–" for m, r in pairs), " / ".join(sorted(budget))]
        )
    fig, ax = plt.subplots(figsize=(6, 4))
    for mode, points in f1.items():
        if points:
            means = [statistics.mean(v) for v in points.values()]
            errors = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in points.values()]
            ax.errorbar(list(points), means, yerr=errors, fmt="o-", capsize=3, label=mode)
    ax.set_xscale("log")
    ax.set_xlabel("fraction of CoNLL-2003 training sentences")
    ax.set_ylabel("test entity F1")
    ax.legend()
    fig.tight_layout()
    fig.savefig(docs_dir / "img" / plot, dpi=100)
    plt.close(fig)
    own = any(run["config"]["data"]["train_fraction"] == 1 for run in efficiency["runs"].values())
    source = (
        "The row for 1 is this file's own full-data runs."
        if own
        else "The row for 1 is the `conll` benchmark's full-data runs."
        if 1 in runs
        else "No full-data runs yet."
    )
    cache = next(iter(efficiency["runs"].values()))["config"]["data"]["train_cache"]
    borrowed = sorted(set(modes) - {mode_of(name, run) for name, run in efficiency["runs"].items()})
    if baseline and borrowed:
        caches = {mode_of(name, run): run["config"]["data"]["train_cache"] for name, run in baseline["runs"].items()}
        same = [m for m in borrowed if m != "none" and caches[m] == cache]
        other = [m for m in borrowed if m != "none" and caches[m] != cache]
        why = "; ".join(
            [
                *(["`none` reads no passages"] if "none" in borrowed else []),
                *([f"{_names(same)} the same passages as this file's"] if same else []),
                *(f"`{m}` is a reference on its own passages, `{caches[m]}`" for m in other),
            ]
        )
        source += (
            f" The runs of {_names(borrowed)} are those of `{baseline['file']}` (same seeds, subsets and budget; "
            f"{why}, so they were not trained again)."
        )
    table = _table(
        ["fraction of training sentences", *modes, *(f"{m} − {r}, per seed" for m, r in pairs), "budget"], rows
    )
    return [*table, "", f"Passages from `{cache}`. {source}", "", f"![label efficiency](img/{plot})"]


def full_quality_section(path: Path) -> list[str]:
    """Every mode over all judged SciFact train queries on whole indices (one entry per index variant), and the
    fusion tuned on a seeded part of the queries and measured on the held-out rest, from its own results file."""
    if not path.is_file():
        return ["No `bench/results/scifact_eval.json`: run `python -m bench.scifact_eval --index INDEX --label L`."]
    lines = [
        f"From `bench/results/{path.name}`, written by `python -m bench.scifact_eval` (`evaluate_index` per mode "
        "over all 809 judged train queries, then `tune_fusion`). Train split only: no row below was tuned on the "
        "queries it is measured on.",
    ]
    for label, run in json.loads(path.read_text(encoding="utf-8"))["runs"].items():
        lines += ["", f"**{label}** ({run['written']}): {run['index']}; {run['settings']}.", ""]
        rows = [
            [m, *(f"{v[key]:.4f}" for key in ("ndcg@10", "recall@100", "mrr@10", "map")), str(v["queries"])]
            for m, v in run["modes"].items()
        ]
        lines += _table(["mode", "nDCG@10", "recall@100", "MRR@10", "MAP", "queries"], rows)
        if tuned := run.get("tuned"):
            on = tuned["tuned_on"]
            lines += [
                "",
                f"Fusion tuned on {on['tune_queries']} queries (seed {on['seed']}), measured on the "
                f"{on['dev_queries']} held out: `{json.dumps(tuned['settings'])}` gives hybrid dev nDCG@10 "
                f"**{tuned['dev']['ndcg@10']:.4f}** (recall@100 {tuned['dev']['recall@100']:.4f}), against "
                f"{tuned['dev_base']['ndcg@10']:.4f} (recall@100 {tuned['dev_base']['recall@100']:.4f}) for the "
                "defaults on the same dev queries.",
            ]
    return lines


def tune_section(path: Path) -> list[str]:
    """The last ``ralm-es tune-retriever`` run on SciFact, from its own results file: the tuner's own dev figures
    per epoch, then the index built with the tuned encoder against the base one on the same dev queries."""
    if not path.is_file():
        return ["No `bench/results/tune_retriever.json`: run the `ralm-es tune-retriever` command it records."]
    run = json.loads(path.read_text(encoding="utf-8"))
    split, timing = run["split"], run["timing_s"]
    rows = [
        [
            "base encoder" if name == "base" else name.replace("_", " "),
            f"{value:.4f}",
            f"{run['dev_recall@100'][name]:.4f}",
            f"{run['epoch_mean_loss'][name]:.4f}" if name in run["epoch_mean_loss"] else "",
            f"{timing[name if name != 'base' else 'base_evaluation']:,}",
        ]
        for name, value in run["dev_ndcg@10"].items()
    ]
    lines = [
        f"From `bench/results/{path.name}`, written {run['written']} by `{run['command']}`: {run['encoder']}; "
        f"{split['train_queries']} of the {split['queries_judged']} judged SciFact train queries tuned on, the other "
        f"{split['dev_queries']} the dev split, never trained on; {run['negatives']}; the tuner's dev evaluation: "
        f"{run['dev_evaluation']}.",
        "",
        *_table(["encoder", "dev nDCG@10", "dev recall@100", "mean training loss", "seconds"], rows),
        "",
        f"**Status: {run['status']}.** Tuning took {timing['loop_total']:,} s in all ({run['timing_note']}); peak RSS "
        f"{run['peak_rss_mb']:,} MB. On {run['machine']}.",
    ]
    if "index_evaluation" in run:
        found = run["index_evaluation"]
        index_rows = [
            [
                encoder,
                mode,
                f"{m['ndcg@10']:.4f}",
                f"{m['recall@100']:.4f}",
                found["targets"].get(f"{encoder}/{mode}", ""),
            ]
            for encoder, modes in found["results"].items()
            for mode, m in modes.items()
        ]
        lines += [
            "",
            found["what"],
            "",
            *_table(["encoder", "mode", "dev nDCG@10", "dev recall@100", "target"], index_rows),
        ]
    if "memory" in run:
        probe = run["memory"]
        figures = "; ".join(
            f"{'the whole batch at once' if size == '0' else f'--mini-batch {size}'}: peak RSS "
            f"{m['peak_rss_mb']:,} MB, {m['wall_s']} s"
            for size, m in probe["by_mini_batch"].items()
        )
        lines += ["", f"Memory, written {probe['written']} by `{probe['command']}`, {probe['what']}: {figures}."]
    return lines


def claims_retriever_section(folder: Path, variant: str = "") -> list[str]:
    """The claims classifier on the passages of the packaged encoder's index and of an index embedded by an encoder
    tuned without the classifier's test claims: retrieval on those test claims, then the classifier's test
    accuracy and macro-F1 per seed, paired (same split, seeds and settings; only the retrieval cache differs).
    ``variant`` names another tuning's files: ``tune_retriever_claims_{variant}.json`` and
    ``scifact_claims_{variant}_{default,tuned}.json``."""
    stem = f"_{variant}" if variant else ""
    record_path = folder / f"tune_retriever_claims{stem}.json"
    paths = {name: folder / f"scifact_claims{stem}_{name}.json" for name in ("default", "tuned")}
    missing = [p.name for p in (record_path, *paths.values()) if not p.is_file()]
    if missing:
        return [f"Not measured: no {', '.join(f'`bench/results/{name}`' for name in missing)}."]
    record = json.loads(record_path.read_text(encoding="utf-8"))
    results = {name: json.loads(path.read_text(encoding="utf-8")) for name, path in paths.items()}
    tuning = record["tuning"]
    history = ", ".join(f"{h['epoch']}: {h['dev']['ndcg@10']:.4f}" for h in tuning["history"])
    retrieval_rows = [
        [retriever, mode, f"{m['ndcg@10']:.4f}", f"{m['recall@100']:.4f}"]
        for retriever, modes in record["test_claims"].items()
        for mode, m in modes.items()
    ]
    lines = [
        f"From `bench/results/{record_path.name}` (written {record['written']}) and "
        f"`bench/results/{paths['default'].name}` / `{paths['tuned'].name}` (`bench/train_bench.py scifact`). "
        f"{record['what']}",
        "",
        f"Tuning: `{record['command']}`; {tuning['split']['train_queries']} queries trained on, "
        f"{tuning['split']['dev_queries']} its own dev split; tuner's dev nDCG@10 by epoch (0: base) {history}, "
        f"best epoch {tuning['best_epoch']}; {record['seconds']:,.0f} s, peak RSS {record['peak_rss_mb']:,} MB, on "
        f"{record['machine']}.",
        "",
        f"Retrieval on the classifier's {record['test_queries']} test claims, which no retriever was tuned on:",
        "",
        *_table(["retriever", "mode", "nDCG@10", "recall@100"], retrieval_rows),
        "",
    ]
    by_retriever = {name: runs_by_mode(result) for name, result in results.items()}
    rows = []
    verdicts = []
    for mode in by_retriever["tuned"]:
        base = by_retriever["default"].get(mode, {})
        for retriever in ("default", "tuned"):
            runs = by_retriever[retriever].get(mode, {})
            seeds = sorted(runs)
            acc = [runs[s]["test"]["accuracy"] for s in seeds]
            f1 = [runs[s]["test"]["macro_f1"] for s in seeds]
            differences = [
                per_seed_differences(seed_figures(runs, m), seed_figures(base, m)) if retriever == "tuned" else {}
                for m in ("accuracy", "macro_f1")
            ]
            rows.append(
                [
                    retriever,
                    mode,
                    ", ".join(map(str, seeds)),
                    spread(acc),
                    spread(f1),
                    ", ".join(f"{x:.4f}" for x in f1),
                    *(", ".join(f"{d:+.4f}" for d in by_seed.values()) or "-" for by_seed in differences),
                ]
            )
            paired = len(differences[0])
            if paired:
                gains = [statistics.mean(by_seed.values()) for by_seed in differences]
                # Fewer than 3 paired seeds is not a result either way.
                ahead = all(g > 0 for g in gains) if paired >= 3 else None
                verdicts.append(
                    f"{mode}, {paired} paired seeds: accuracy {gains[0] * 100:+.1f}, macro-F1 "
                    f"{gains[1] * 100:+.1f} points (means of the per-seed differences); target 'the classifier on the "
                    f"tuned retriever's passages ahead (mean of 3 seeds)': {verdict(ahead)}."
                )
    lines += [
        *_table(
            [
                "retriever",
                "fusion",
                "seeds",
                "test accuracy (mean ± sd)",
                "test macro-F1 (mean ± sd)",
                "macro-F1 per seed",
                "accuracy − default, per seed",
                "macro-F1 − default, per seed",
            ],
            rows,
        ),
        "",
        *verdicts,
    ]
    return lines


def _serve_key(run: dict[str, Any], index_runtime: str) -> tuple[str, int, int, int, str]:
    # Runs written before servers had runtimes of their own ran the index's.
    return run["queries"], run["clients"], run["batch_size"], run.get("workers", 1), run.get("runtime", index_runtime)


def serve_section(path: Path) -> list[str]:
    """The last ``python -m bench.serve_load`` run, from its own results file: one row per configuration, each
    figure the median over its repetitions."""
    if not path.is_file():
        return ["No `bench/results/serve_load.json`: run `python -m bench.serve_load` (30 s of load a configuration)."]
    load = json.loads(path.read_text(encoding="utf-8"))
    index_runtime = load.get("runtime", "torch")
    configurations: dict[tuple[str, int, int, int, str], list[dict[str, Any]]] = {}
    for run in load["runs"]:
        configurations.setdefault(_serve_key(run, index_runtime), []).append(run)
    rows = []
    for (queries, clients, batch_size, workers, runtime), runs in configurations.items():
        lat = {p: [run["latency_ms"][p] for run in runs] for p in ("p50", "p95", "p99", "max")}
        cores = [run["cpu_cores"] for run in runs if "cpu_cores" in run]
        rows.append(
            [
                queries,
                str(clients),
                "1 (one at a time)" if batch_size == 1 else str(batch_size),
                str(workers),
                runtime,
                str(sum(run["requests"] for run in runs)),
                str(sum(run["errors"] for run in runs)),
                fig(summarize([run["throughput_rps"] for run in runs])),
                fig(summarize(lat["p50"]), 0),
                fig(summarize(lat["p95"]), 0),
                fig(summarize(lat["p99"]), 0),
                fig(summarize(lat["max"]), 0),
                f"{statistics.median(c['load_generator'] for c in cores):.2f} / "
                f"{statistics.median(c['server'] for c in cores):.2f}"
                if cores
                else "-",
                f"{runs[0]['load_start'][0]:.1f} / {runs[-1]['load_end'][0]:.1f}",
            ]
        )
    repeats = load.get("repeats", 1)
    return [
        f"From `bench/results/{path.name}`, written by `{load['command']}` at {load['started']}: "
        f"{repeats} interleaved round{'s' if repeats > 1 else ''} of "
        f"{load['duration_s']:.0f} s of load per configuration (after "
        f"{load['warmup_s']:.0f} s of warm-up, which starts once every worker process of the server has answered "
        f"`/health`) against "
        f"{load['target']}, mode {load['mode']}, k={load['k']}, {load['passages']} passages, model {load['model']} "
        f"(the index filled by runtime {index_runtime}; each server's query encoder under the runtime in its row), "
        "queries: the sample claims in turn (repeated: their vectors soon come from the query cache) or a new "
        "text every request (unique: the encoder runs for each). The configurations alternate on the same "
        f"{load['cpus']}-core machine, which other jobs share (its 1-minute load average at each run's start and "
        "end is in the last column). CPU cores: the CPU seconds the load generator (the client threads, one Python "
        "process) and the server's process tree used per second of load; Elasticsearch, on the same machine, has "
        "what is left. Each figure is the median over the rounds (min–max and their number in brackets); requests and "
        "errors are "
        "summed; the load average is the first round's start and the last round's end.",
        "",
        *_table(
            [
                "queries",
                "clients",
                "batch size",
                "workers",
                "runtime",
                "requests",
                "errors",
                "requests/s",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "max ms",
                "CPU cores: load generator / server",
                "load start / end",
            ],
            rows,
        ),
        "",
        "Batch size 1 answers one request at a time; above it, requests that arrive together are answered by one "
        "encoder batch and one `_msearch` (`serve.batch_size`, `serve.batch_wait_ms`, `serve.queue_size`). "
        "Batching saves the per-request costs (an encoder forward pass, an Elasticsearch round trip); the searches "
        "themselves cost Elasticsearch the same, so where they dominate (repeated queries, whose vectors come "
        "from the cache) the gain is smallest.",
        *_batching_gains(load["runs"], index_runtime),
    ]


def onnx_section(path: Path) -> list[str]:
    """The last ``python -m bench.onnx_bench`` run: query encoding per runtime, vector agreement, dense nDCG@10."""
    if not path.is_file():
        return ["No `bench/results/onnx.json`: run `python -m bench.onnx_bench`."]
    run = json.loads(path.read_text(encoding="utf-8"))
    speed, agreement = run["speed"], run["agreement"]
    torch_ms = {batch: speed["torch"][batch]["median_ms"] for batch in ("1", "32")}
    rows = [
        [
            runtime,
            *(
                f"{speed[runtime][b]['median_ms']:.1f} ({speed[runtime][b]['min_ms']:.1f}–"
                f"{speed[runtime][b]['max_ms']:.1f}), {torch_ms[b] / speed[runtime][b]['median_ms']:.1f}x"
                for b in ("1", "32")
            ),
            f"{agreement[runtime]['mean']:.4f} / {agreement[runtime]['min']:.4f}",
            f"{run['quality'][runtime]['ndcg@10']:.4f}" if runtime in run["quality"] else "refused (int8)",
        ]
        for runtime in speed
    ]
    return [
        f"From `bench/results/{path.name}`, written by `{run['command']}` at {run['written']}: model {run['model']} "
        f"({run['revision']}) on {run['cpus']} CPU cores shared with other jobs (1-minute load average "
        f"{run['load_average']:.1f} at the end), {run['queries_timed']} SciFact train queries (mean "
        f"{run['mean_words']:.1f} words) encoded one at a time and in batches of 32, {run['reps']} interleaved "
        "repetitions. Agreement: cosine to torch's vector over all train queries. nDCG@10: dense search of the "
        f"index {run['index']}, with only the query encoder's runtime changed (an index filled by torch answers "
        "torch-bf16 and fp32 onnx queries and refuses int8 ones).",
        "",
        *_table(
            [
                "runtime",
                "ms/query, batch 1 (min–max), speed-up",
                "ms/query, batch 32 (min–max), speed-up",
                "cosine to torch mean / min",
                "dense nDCG@10",
            ],
            rows,
        ),
    ]


def _batching_gains(runs: list[dict[str, Any]], index_runtime: str) -> list[str]:
    """One line per (queries, clients): each other configuration's requests/s against one at a time in one
    process under the index's runtime, as the median of the ratios within each round, and its median p99 against
    the baseline's."""
    alone = {
        (run.get("repeat", 1), run["queries"], run["clients"]): run
        for run in runs
        if _serve_key(run, index_runtime)[2:] == (1, 1, index_runtime)
    }
    ratios: dict[tuple[str, int, int, int, str], list[float]] = {}
    p99s: dict[tuple[str, int, int, int, str], list[float]] = {}
    for run in runs:
        base = alone.get((run.get("repeat", 1), run["queries"], run["clients"]))
        key = _serve_key(run, index_runtime)
        p99s.setdefault(key, []).append(run["latency_ms"]["p99"])
        if run is not base and base is not None and base["throughput_rps"]:
            ratios.setdefault(key, []).append(run["throughput_rps"] / base["throughput_rps"])
    lines = []
    for (queries, clients, batch_size, workers, runtime), ratio in ratios.items():
        base_p99 = p99s[queries, clients, 1, 1, index_runtime]
        lines.append(
            f"- {queries} queries, {clients} clients, batch size {batch_size}, {workers} workers, runtime {runtime}: "
            f"requests/s {fig(summarize(ratio), 2)} times one at a time in one worker's ({index_runtime}), p99 "
            f"{statistics.median(p99s[queries, clients, batch_size, workers, runtime]):.0f} ms against "
            f"{statistics.median(base_p99):.0f} ms."
        )
    return ["", *lines] if lines else []


def write_report(results: dict[str, Any], docs_dir: Path, results_name: str) -> Path:
    img_dir = docs_dir / "img"
    img_dir.mkdir(parents=True, exist_ok=True)
    body: dict[str, list[str]] = {name: [] for name in SECTIONS}
    body["Targets"] = _table(
        ["target", "wanted", "measured (median)", "met"],
        [[what, want, got, verdict(met)] for what, want, got, met in targets(results)],
    )
    body["Machine and load"] = machine_section(results)
    if ingest := results.get("ingest"):
        plot_ingest(ingest, img_dir / "ingest_throughput.png")
        body["Ingest (SciFact)"] = ingest_section(ingest, "img/ingest_throughput.png")
    if retrieval := results.get("retrieval"):
        plot_latency(retrieval["latency"], img_dir / "latency.png")
        body["Retrieval quality (SciFact train)"] = quality_section(
            retrieval["quality"], results["config"]["abstracts"]
        )
        body["Latency of one hybrid search"] = [
            *latency_section(retrieval["latency"], "img/latency.png"),
            *texts_section(retrieval["texts"]),
        ]
        body["search_many against a loop of search"] = many_section(retrieval["many"], ONNX)
        body["CoNLL-2003 sentences as queries"] = conll_section(retrieval["conll"])
    body["Training"] = train_section(results.get("train"), docs_dir)
    body["Tuning the retriever"] = tune_section(TUNE_RETRIEVER)
    body["The tuned retriever downstream (SciFact claims)"] = claims_retriever_section(TUNE_RETRIEVER.parent)
    body["The evidence-tuned retriever downstream (SciFact claims)"] = claims_retriever_section(
        TUNE_RETRIEVER.parent, "evidence"
    )
    body["The tuned retriever downstream, read token by token (SciFact claims)"] = claims_retriever_section(
        TUNE_RETRIEVER.parent, "tokens"
    )
    body["The tuned retriever downstream, read with the claim (SciFact claims)"] = claims_retriever_section(
        TUNE_RETRIEVER.parent, "pair"
    )
    body["Serving under load"] = serve_section(SERVE_LOAD)
    body["Retrieval quality on the whole SciFact corpus"] = full_quality_section(SCIFACT_EVAL)
    body["Encoder runtimes (ONNX)"] = onnx_section(ONNX)
    body["How to rerun"] = [
        "`make bench` (full) or `make bench QUICK=1`; one part: `python -m bench.run --only ingest` "
        "(`ingest`, `retrieval`, `train`). Peers get their own environments under `~/.cache/ralm-es/bench-venvs/`, "
        "built from `bench/peers/<peer>-requirements.txt` on first use. Every figure here comes from "
        f"`bench/results/{results_name}`, which the same run wrote.",
    ]
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{results['command']}` from `bench/results/{results_name}`; do not edit by hand. "
        "Figures are medians with min–max over repetitions.",
    ]
    for name in SECTIONS:
        lines += ["", f"## {name}", "", *(body[name] or ["Not run in this run."])]
    path = docs_dir / "benchmarks.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main() -> None:
    """``python -m bench.report [RESULTS_JSON]``: rewrite the report from saved results (after changing its layout)."""
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "results" / "full.json"
    results = json.loads(path.read_text(encoding="utf-8"))
    results["train"] = collect_train(path.parent)
    print(write_report(results, Path(results["config"]["docs_dir"]), path.name))


if __name__ == "__main__":
    main()
