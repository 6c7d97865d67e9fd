"""Fine-tuning benchmarks of the issue, from retrieval caches made beforehand (``ralm-es retrieve``):

  conll        CoNLL-2003 test entity F1 for fusion none, concat and attention (same backbone and budget)
  scifact      SciFact claims: accuracy and macro-F1 of none vs attention on a seeded split of the training claims,
               averaged over training seeds (``--seeds``)
  efficiency   CoNLL with 5%, 10% and 25% of the training sentences (``--fractions``), none vs attention (JSON,
               dev-F1 PNG); the 100% point is the conll benchmark's runs (same config and budget), joined in by
               bench/report.py, or runs at fraction 1 here (``--fraction-set 1:train.eval_every=300`` gives one
               fraction's runs their own overrides, such as a sparser dev evaluation)
  throughput   training examples/s and peak memory per fusion mode for a fixed number of steps

Each writes JSON to --out, rewritten after every finished run (a cut-short benchmark keeps what it measured), and
a run cut short resumes from its last saved state (every ``train.eval_every`` steps) when the benchmark is run
again with the same --work folder and settings.
``--quick`` shrinks every run to a slice and a few steps, to check the plumbing. ``--set key=value`` overrides apply
to every run (e.g. ``train.device=cuda``, ``train.batch_size=32``). ``--modes`` / ``--variants`` name fusion
variants: none, concat, concat-256 (that within 256 tokens, not 128), concat-k3 (that over 3 passages), attention
(passages through the shared trainable encoder), attention-frozen (a frozen copy of the encoder embeds each passage
once, to one vector), attention-tokens (the frozen copy's token states of each passage, computed once into the token
store), attention-tokens-kl and attention-tokens-pdrop (that with the consistency term or passage dropout),
attention-tokens-k16 (that over 16 passages an input), attention-tokens-case (that with each stored passage token's
word-case class), attention-tokens-concat (that with the passages also appended to the input, as concat has
them), pair (classification: the encoder reads each input-passage pair), pair-k2 and pair-k2-scores (that
over the 2 best hits, without and with their scores), scores (classification: the hits' retrieval scores, no text),
scores-k16 (that over 16 hits), attention-tokens-scores (attention-tokens with those scores added). Every run
trains in its own fresh process, so its peak memory is its own; ``--jobs 2`` runs two at a time.

  python bench/train_bench.py conll --caches caches/conll-{split}.jsonl --out bench/results/conll.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from ralm_es import resumable
from ralm_es.config import to_dict
from ralm_es.train.config import TrainConfig, load_config
from ralm_es.train.loop import RunResult, changed_settings, train

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
QUICK = ["data.limit=200", "train.max_steps=30", "train.eval_every=15", "train.eval_batch_size=32"]
TOKENS = ["model.fusion=attention", "model.passage_encoder=frozen", "model.passage_memory=tokens"]
VARIANTS = {
    "none": ["model.fusion=none"],
    "concat": ["model.fusion=concat"],
    # Twice the sequence: nearly every passage of a k=8 document-context cache fits (7.4 whole on average, not 5.3).
    "concat-256": ["model.fusion=concat", "model.max_length=256"],
    # The other way: the 3 best passages only (with a document-context cache, the 3 nearest sentences).
    "concat-k3": ["model.fusion=concat", "model.k=3"],
    "attention": ["model.fusion=attention", "model.passage_encoder=shared"],
    "attention-frozen": ["model.fusion=attention", "model.passage_encoder=frozen", "model.passage_memory=pooled"],
    "attention-tokens": TOKENS,
    # The regularisers of docs/training.md on attention-tokens, at untuned values: CL-KL's equal weighting, and a
    # fifth of each example's passages dropped.
    "attention-tokens-kl": [*TOKENS, "train.consistency_weight=1.0"],
    "attention-tokens-pdrop": [*TOKENS, "train.passage_dropout=0.2"],
    # Twice the passages: with a k=16 document-context cache, nearly every sentence of a CoNLL story; with a merged
    # cache (doc-context --with --context 8), the nearest half of the story and 8 cross-document hits.
    "attention-tokens-k16": [*TOKENS, "model.k=16"],
    # The stored passage tokens with their word-case class, as the input's (the frozen encoder is uncased).
    "attention-tokens-case": [*TOKENS, "model.passage_case_features=true"],
    # Both ways at once: the story's nearest sentences in the encoder's input, as concat has them, and
    # cross-attention over the stored token states of all k.
    "attention-tokens-concat": [*TOKENS, "model.concat_passages=true"],
    "pair": ["model.fusion=pair"],
    # The claim read with each of its two best hits (the cited abstract is first for about half the claims), and
    # that with the scores mode's signals over those two hits.
    "pair-k2": ["model.fusion=pair", "model.k=2"],
    "pair-k2-scores": ["model.fusion=pair", "model.k=2", "model.score_signals=true"],
    "scores": ["model.fusion=scores"],
    "scores-k16": ["model.fusion=scores", "model.k=16"],
    # Reading the evidence and how well it matched: attention-tokens with the scores mode's signals added.
    "attention-tokens-scores": [*TOKENS, "model.score_signals=true"],
}


def resumable_step(out: Path, cfg: TrainConfig) -> int | None:
    """The step of the saved state in ``out`` when it is a run of this same configuration (a finished one that
    was never recorded resumes straight into its test evaluation)."""
    loop = resumable.saved_loop(out)
    # The training loop's own test of what a resume may change.
    if loop is None or not (out / "config.yaml").is_file() or changed_settings(out, cfg):
        return None
    return int(loop["step"])


def run_one(base: Path, name: str, work: Path, overrides: list[str]) -> dict[str, Any]:
    """Train one configuration into ``work/name`` and summarise it. An unfinished run of the same configuration
    there (a benchmark cut short) is resumed from its last saved state; anything else there is replaced."""
    out = work / name
    settings = [*overrides, f"run.out={out}", "run.progress=false"]
    cfg: TrainConfig = load_config(base, settings)
    resumed_at = resumable_step(out, cfg)
    if resumed_at is None:
        shutil.rmtree(out, ignore_errors=True)
    else:
        cfg = load_config(base, [*settings, "run.resume=true"])
        print(f"{name}: resuming at step {resumed_at}", file=sys.stderr)
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    result: RunResult = train(cfg)
    metric = "f1" if cfg.task.type == "ner" else "macro_f1"
    summary: dict[str, Any] = {
        "overrides": overrides,
        "fusion": cfg.model.fusion,
        "passage_encoder": cfg.model.passage_encoder if cfg.model.fusion == "attention" else None,
        "steps": result.steps,
        "best_step": result.best_step,
        f"dev_{metric}": result.best_metric,
        "examples_per_s": round(result.examples_per_s, 2),
        "peak_memory_mb": round(result.peak_memory_mb),
        # Wall time of this process: a resumed run's earlier part is not in it.
        "seconds": round(time.perf_counter() - started, 1),
        "resumed_at_step": resumed_at,
        # The machine is shared: the 1-minute load average when the run started and ended.
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "truncated": result.truncated,
        "config": to_dict(cfg),
    }
    if result.test is not None:
        summary["test"] = {k: v for k, v in result.test.items() if k != "report"}
    print(f"{name}: {json.dumps({k: v for k, v in summary.items() if k not in ('config', 'test')})}", file=sys.stderr)
    return summary


def run_all(
    base: Path,
    jobs: dict[str, list[str]],
    args: argparse.Namespace,
    assemble: Callable[[dict[str, dict[str, Any]]], dict[str, Any]],
) -> dict[str, Any]:
    """Train every named job, each in a fresh process (``args.jobs`` at a time), rewriting ``args.out`` with
    ``assemble(finished runs)`` as each one ends. With ``args.keep``, a run already in ``args.out`` under the same
    name and with the same overrides is kept instead of trained again."""
    runs: dict[str, dict[str, Any]] = {}
    if args.keep and args.out.is_file():
        saved = json.loads(args.out.read_text(encoding="utf-8")).get("runs", {})
        runs = {name: saved[name] for name in jobs if saved.get(name, {}).get("overrides") == jobs[name]}
        print(f"kept from {args.out}: {', '.join(runs) or 'nothing'}", file=sys.stderr)
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=spawn, max_tasks_per_child=1) as pool:
        todo = {name: overrides for name, overrides in jobs.items() if name not in runs}
        futures = {pool.submit(run_one, base, name, args.work, overrides): name for name, overrides in todo.items()}
        for future in as_completed(futures):
            runs[futures[future]] = future.result()
            write_results(args.out, assemble({name: runs[name] for name in jobs if name in runs}))
    return assemble({name: runs[name] for name in jobs})


def write_results(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def conll_caches(pattern: str) -> list[str]:
    return [f"data.{split}_cache={pattern.format(split=split)}" for split in ("train", "dev", "test")]


def bench_conll(args: argparse.Namespace) -> dict[str, Any]:
    base = REPO / "configs" / "conll_ner.yaml"
    common = [*conll_caches(args.caches), *(QUICK if args.quick else []), *args.set]
    jobs = {f"conll-{mode}": [*common, *VARIANTS[mode]] for mode in args.modes}

    def assemble(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        test_f1 = {name.removeprefix("conll-"): run["test"]["f1"] for name, run in runs.items() if "test" in run}
        return {"benchmark": "conll", "quick": args.quick, "test_f1": test_f1, "runs": runs}

    return run_all(base, jobs, args, assemble)


def split_claims(source: Path, folder: Path, seed: int) -> dict[str, Path]:
    """A seeded 60/20/20 train/dev/test split of the training claims, as JSONL files in ``folder``."""
    lines = [line for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    random.Random(seed).shuffle(lines)
    cut1, cut2 = int(len(lines) * 0.6), int(len(lines) * 0.8)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, part in (("train", lines[:cut1]), ("dev", lines[cut1:cut2]), ("test", lines[cut2:])):
        paths[name] = folder / f"claims.{name}.jsonl"
        paths[name].write_text("\n".join(part) + "\n", encoding="utf-8")
    return paths


def bench_scifact(args: argparse.Namespace) -> dict[str, Any]:
    base = REPO / "configs" / "scifact_claims.yaml"
    splits = split_claims(SHARED / "scifact" / "claims.train.jsonl", args.work / "scifact-split", seed=13)
    common = [f"data.{name}={path}" for name, path in splits.items()]
    common += [f"data.{name}_cache={args.cache}" for name in ("train", "dev", "test")]
    common += ["data.holdout=0", *(QUICK if args.quick else []), *args.set]
    # A test split of 162 claims is noisy: every variant trains once per seed, on the same split.
    jobs = {
        f"scifact-{mode}-seed{seed}": [*common, *VARIANTS[mode], f"train.seed={seed}"]
        for mode in args.modes
        for seed in args.seeds
    }

    def assemble(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        test: dict[str, dict[str, Any]] = {}
        for mode in args.modes:
            scores = [
                runs[f"scifact-{mode}-seed{seed}"]["test"]
                for seed in args.seeds
                if f"scifact-{mode}-seed{seed}" in runs
            ]
            if scores:
                test[mode] = {
                    metric: statistics.mean(s[metric] for s in scores) for metric in ("accuracy", "macro_f1")
                } | {"seeds": len(scores), "macro_f1_per_seed": [s["macro_f1"] for s in scores]}
        split = "60/20/20 of claims.train, seed 13"
        return {"benchmark": "scifact", "quick": args.quick, "split": split, "test": test, "runs": runs}

    return run_all(base, jobs, args, assemble)


def fraction_override(text: str) -> tuple[float, str]:
    """``FRACTION:KEY=VALUE`` of ``--fraction-set``."""
    fraction, sep, override = text.partition(":")
    try:
        if not sep or "=" not in override:
            raise ValueError
        return float(fraction), override
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not FRACTION:KEY=VALUE") from None


def bench_efficiency(args: argparse.Namespace) -> dict[str, Any]:
    base = REPO / "configs" / "conll_ner.yaml"
    common = [*conll_caches(args.caches), *(QUICK if args.quick else []), *args.set]
    # Without --seeds, one run a cell with the config's seed; with them, one a seed (the same seeds, so the same
    # subset and data order, for every variant).
    seeds = [(f"-seed{seed}", [f"train.seed={seed}"]) for seed in args.seeds] if args.seeds else [("", [])]
    unknown = sorted({f for f, _ in args.fraction_set} - set(args.fractions))
    if unknown:
        raise SystemExit(f"--fraction-set names {', '.join(f'{f:g}' for f in unknown)}, not one of --fractions")
    only = {fraction: [o for f, o in args.fraction_set if f == fraction] for fraction in args.fractions}
    jobs = {
        f"efficiency-{mode}-{fraction:g}{tag}": [
            *common,
            *only[fraction],
            *VARIANTS[mode],
            f"data.train_fraction={fraction}",
            *seed,
        ]
        # Seed-major, so that the runs of a seed finish together: a benchmark cut short holds whole pairs.
        for fraction in args.fractions
        for tag, seed in seeds
        for mode in args.modes
    }

    def assemble(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        table: dict[str, dict[str, float | None]] = {}
        for fraction in args.fractions:
            for mode in args.modes:
                done = [runs[name] for tag, _ in seeds if (name := f"efficiency-{mode}-{fraction:g}{tag}") in runs]
                scores = [run["test"]["f1"] for run in done if "test" in run]
                if scores:
                    table.setdefault(f"{fraction:g}", {})[mode] = statistics.mean(scores)
        plot_dev_curves(list(runs), args.work, args.out.with_name(args.out.stem + "-dev.png"))
        return {"benchmark": "label-efficiency", "quick": args.quick, "test_f1": table, "runs": runs}

    return run_all(base, jobs, args, assemble)


def plot_dev_curves(names: list[str], work: Path, path: Path) -> None:
    """Dev entity F1 against optimizer steps for each run, from its ``metrics.jsonl``: the variants compared at
    equal steps, also for a run cut short."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in names:
        metrics = work / name / "metrics.jsonl"
        if not metrics.is_file():
            continue
        records = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines() if line.strip()]
        points = [(r["step"], r["dev"]["f1"]) for r in records if "dev" in r]
        if points:
            ax.plot(*zip(*points, strict=True), "o-", label=name.removeprefix("efficiency-"))
    ax.set_xlabel("optimizer steps (batch 16)")
    ax.set_ylabel("dev entity F1")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def throughput_jobs(args: argparse.Namespace) -> dict[str, list[str]]:
    """The overrides of each throughput run. No dev or test evaluation, whatever ``--set`` says (a script may share
    its settings with an evaluating benchmark): the clock measures training only."""
    training_only = ["data.dev=null", "data.test=null", f"data.limit={args.limit}"]
    training_only += [f"train.max_steps={args.steps}", f"train.eval_every={args.steps}"]
    common = [f"data.train_cache={args.caches.format(split='train')}", *args.set, *training_only]
    return {f"throughput-{name}": [*common, *VARIANTS[name]] for name in args.variants}


def bench_throughput(args: argparse.Namespace) -> dict[str, Any]:
    base = REPO / "configs" / "conll_ner.yaml"
    jobs = throughput_jobs(args)

    def assemble(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        named = {name.removeprefix("throughput-"): run for name, run in runs.items()}
        return {
            "benchmark": "throughput",
            "steps": args.steps,
            "examples_per_s": {name: run["examples_per_s"] for name, run in named.items()},
            "peak_memory_mb": {name: run["peak_memory_mb"] for name, run in named.items()},
            "runs": runs,
        }

    return run_all(base, jobs, args, assemble)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="bench", required=True)
    for name in ("conll", "scifact", "efficiency", "throughput"):
        p = sub.add_parser(name)
        p.add_argument("--out", type=Path, required=True, help="JSON results file")
        p.add_argument("--work", type=Path, default=Path("runs/bench"), help="folder for the run folders")
        p.add_argument("--quick", action="store_true", help="tiny slices and few steps")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
        p.add_argument("--jobs", type=int, default=1, help="runs at a time, each in its own process")
        p.add_argument("--keep", action="store_true", help="reuse runs already in --out with the same settings")
        if name == "scifact":
            p.add_argument("--cache", required=True, help="retrieval cache of claims.train.jsonl")
            p.add_argument("--modes", nargs="+", default=["none", "attention"], choices=VARIANTS)
            p.add_argument("--seeds", nargs="+", type=int, default=[13, 14, 15], help="training seeds per variant")
        else:
            p.add_argument("--caches", required=True, help="cache path with {split}, e.g. caches/conll-{split}.jsonl")
        if name == "conll":
            p.add_argument("--modes", nargs="+", default=["none", "concat", "attention"], choices=VARIANTS)
        if name == "efficiency":
            p.add_argument("--modes", nargs="+", default=["none", "attention"], choices=VARIANTS)
            p.add_argument("--fractions", nargs="+", type=float, default=[0.05, 0.1, 0.25])
            p.add_argument("--seeds", nargs="+", type=int, help="training seeds a cell (default: the config's one)")
            p.add_argument(
                "--fraction-set",
                action="append",
                default=[],
                type=fraction_override,
                metavar="FRACTION:KEY=VALUE",
                help="an override for one fraction's runs only, e.g. 1:train.eval_every=300",
            )
        if name == "throughput":
            p.add_argument("--steps", type=int, default=100)
            p.add_argument("--limit", type=int, default=2000, help="training sentences to draw batches from")
            p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    args = parser.parse_args()
    run = {"conll": bench_conll, "scifact": bench_scifact, "efficiency": bench_efficiency}
    run["throughput"] = bench_throughput
    write_results(args.out, run[args.bench](args))
    print(f"results: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
