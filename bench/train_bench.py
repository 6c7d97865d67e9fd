"""Fine-tuning benchmarks of the issue, from retrieval caches made beforehand (``ralm-es retrieve``):

  conll        CoNLL-2003 test entity F1 for fusion none, concat and attention (same backbone and budget)
  scifact      SciFact claims: accuracy and macro-F1 of none vs attention on a seeded split of the training claims
  efficiency   CoNLL with 5%, 10%, 25%, 100% of the training sentences, none vs attention (JSON, table, PNG)
  throughput   training examples/s and peak memory per fusion mode for a fixed number of steps

Each writes JSON to --out. ``--quick`` shrinks every run to a slice and a few steps, to check the plumbing.
``--set key=value`` overrides apply to every run (e.g. ``train.device=cuda``, ``train.batch_size=32``).

  python bench/train_bench.py conll --caches caches/conll-{split}.jsonl --out bench/results/conll.json
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from ralm_es.config import to_dict
from ralm_es.train.config import TrainConfig, load_config
from ralm_es.train.loop import RunResult, train

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
QUICK = ["data.limit=200", "train.max_steps=30", "train.eval_every=15", "train.eval_batch_size=32"]


def run_one(base: Path, name: str, work: Path, overrides: list[str]) -> dict[str, Any]:
    """Train one configuration into ``work/name`` (replacing an older run there) and summarise it."""
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    cfg: TrainConfig = load_config(base, [*overrides, f"run.out={out}", "run.progress=false"])
    started = time.perf_counter()
    result: RunResult = train(cfg)
    metric = "f1" if cfg.task.type == "ner" else "macro_f1"
    summary: dict[str, Any] = {
        "fusion": cfg.model.fusion,
        "steps": result.steps,
        "best_step": result.best_step,
        f"dev_{metric}": result.best_metric,
        "examples_per_s": round(result.examples_per_s, 2),
        "peak_memory_mb": round(result.peak_memory_mb),
        "seconds": round(time.perf_counter() - started, 1),
        "truncated": result.truncated,
        "config": to_dict(cfg),
    }
    if result.test is not None:
        summary["test"] = {k: v for k, v in result.test.items() if k != "report"}
    print(f"{name}: {json.dumps({k: v for k, v in summary.items() if k not in ('config', 'test')})}", file=sys.stderr)
    return summary


def conll_caches(pattern: str) -> list[str]:
    return [f"data.{split}_cache={pattern.format(split=split)}" for split in ("train", "dev", "test")]


def bench_conll(args: argparse.Namespace) -> dict[str, Any]:
    base = REPO / "configs" / "conll_ner.yaml"
    common = [*conll_caches(args.caches), *(QUICK if args.quick else []), *args.set]
    runs = {mode: run_one(base, f"conll-{mode}", args.work, [*common, f"model.fusion={mode}"]) for mode in args.modes}
    test_f1 = {mode: run["test"]["f1"] for mode, run in runs.items() if "test" in run}
    return {"benchmark": "conll", "quick": args.quick, "test_f1": test_f1, "runs": runs}


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
    runs = {mode: run_one(base, f"scifact-{mode}", args.work, [*common, f"model.fusion={mode}"]) for mode in args.modes}
    test = {mode: {k: run["test"][k] for k in ("accuracy", "macro_f1")} for mode, run in runs.items() if "test" in run}
    return {
        "benchmark": "scifact",
        "quick": args.quick,
        "split": "60/20/20 of claims.train, seed 13",
        "test": test,
        "runs": runs,
    }


def bench_efficiency(args: argparse.Namespace) -> dict[str, Any]:
    base = REPO / "configs" / "conll_ner.yaml"
    common = [*conll_caches(args.caches), *(QUICK if args.quick else []), *args.set]
    table: dict[str, dict[str, float]] = {}
    runs = {}
    for fraction in args.fractions:
        for mode in args.modes:
            name = f"efficiency-{mode}-{fraction:g}"
            runs[name] = run_one(
                base, name, args.work, [*common, f"model.fusion={mode}", f"data.train_fraction={fraction}"]
            )
            table.setdefault(f"{fraction:g}", {})[mode] = runs[name].get("test", {}).get("f1")
    plot = args.out.with_suffix(".png")
    fig, ax = plt.subplots(figsize=(6, 4))
    for mode in args.modes:
        points = [(float(f), v[mode]) for f, v in table.items() if v.get(mode) is not None]
        if points:
            ax.plot(*zip(*points, strict=True), "o-", label=mode)
    ax.set_xscale("log")
    ax.set_xlabel("fraction of CoNLL-2003 training sentences")
    ax.set_ylabel("test entity F1")
    ax.legend()
    fig.tight_layout()
    fig.savefig(plot, dpi=100)
    plt.close(fig)
    return {"benchmark": "label-efficiency", "quick": args.quick, "test_f1": table, "plot": str(plot), "runs": runs}


def bench_throughput(args: argparse.Namespace) -> dict[str, Any]:
    base = REPO / "configs" / "conll_ner.yaml"
    # No dev or test evaluation: the clock measures training only.
    common = [f"data.train_cache={args.caches.format(split='train')}", "data.dev=null", "data.test=null"]
    common += [f"data.limit={args.limit}", f"train.max_steps={args.steps}", f"train.eval_every={args.steps}"]
    common += args.set
    variants = {
        "none": ["model.fusion=none"],
        "concat": ["model.fusion=concat"],
        "attention": ["model.fusion=attention"],
        "attention-frozen": ["model.fusion=attention", "model.passage_encoder=frozen"],
    }
    runs = {name: run_one(base, f"throughput-{name}", args.work, [*common, *variants[name]]) for name in args.variants}
    return {
        "benchmark": "throughput",
        "steps": args.steps,
        "examples_per_s": {name: run["examples_per_s"] for name, run in runs.items()},
        "peak_memory_mb": {name: run["peak_memory_mb"] for name, run in runs.items()},
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="bench", required=True)
    for name in ("conll", "scifact", "efficiency", "throughput"):
        p = sub.add_parser(name)
        p.add_argument("--out", type=Path, required=True, help="JSON results file")
        p.add_argument("--work", type=Path, default=Path("runs/bench"), help="folder for the run folders")
        p.add_argument("--quick", action="store_true", help="tiny slices and few steps")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
        if name == "scifact":
            p.add_argument("--cache", required=True, help="retrieval cache of claims.train.jsonl")
            p.add_argument("--modes", nargs="+", default=["none", "attention"])
        else:
            p.add_argument("--caches", required=True, help="cache path with {split}, e.g. caches/conll-{split}.jsonl")
        if name == "conll":
            p.add_argument("--modes", nargs="+", default=["none", "concat", "attention"])
        if name == "efficiency":
            p.add_argument("--modes", nargs="+", default=["none", "attention"])
            p.add_argument("--fractions", nargs="+", type=float, default=[0.05, 0.1, 0.25, 1.0])
        if name == "throughput":
            p.add_argument("--steps", type=int, default=100)
            p.add_argument("--limit", type=int, default=2000, help="training sentences to draw batches from")
            p.add_argument("--variants", nargs="+", default=["none", "concat", "attention", "attention-frozen"])
    args = parser.parse_args()
    run = {"conll": bench_conll, "scifact": bench_scifact, "efficiency": bench_efficiency}
    run["throughput"] = bench_throughput
    results = run[args.bench](args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"results: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
