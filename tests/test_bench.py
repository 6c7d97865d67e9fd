"""The benchmark harness in quick mode on tiny slices against the test node (peers and training skipped), and the
arithmetic and file handling it relies on."""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from bench.common import BenchConfig, head_conll, percentiles, ratios, summarize
from bench.ingest_bench import PEAK_RSS
from bench.peers.venv import link_shared
from bench.report import SECTIONS, claims_retriever_section, collect_train, seeded_section, targets, train_section
from bench.run import parse_args, run_all, save
from bench.train_bench import REPO, throughput_jobs
from ralm_es.train.config import load_config

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_quick_run_writes_every_section_with_figures(
    tmp_path: Path, es_url: str, es_client: Elasticsearch, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RALM_ES_HOME", str(tmp_path / "home"))  # where the ONNX export goes
    config = BenchConfig.quick_defaults(
        es_url=es_url,
        model=str(tiny_model_dir),
        abstracts=20,
        queries=10,
        latency_queries=8,
        many_queries=8,
        conll_sentences=30,
        peers=False,
        train=False,
        ingest_runtimes=["onnx"],
        docs_dir=tmp_path / "docs",
        results_dir=tmp_path / "results",
    )
    results = run_all(config)
    report = save(results, config)

    text = report.read_text()
    for section in SECTIONS:
        assert f"\n## {section}\n" in text
    assert "Not run in this run." not in text
    assert json.loads((tmp_path / "results" / "quick.json").read_text()) == results
    for image in ("ingest_throughput.png", "latency.png"):
        assert (tmp_path / "docs" / "img" / image).read_bytes().startswith(PNG_MAGIC)

    ingest = results["ingest"]
    assert ingest["abstracts"] == 20
    assert ingest["passages"] >= 20
    assert f"20 abstracts → {ingest['passages']:,} passages" in text
    for key in ("limit_passages_per_s", "ralm_passages_per_s", "bm25_passages_per_s", "bm25_max_rss_mib"):
        assert ingest[key]["min"] > 0 and len(ingest[key]["runs"]) == config.repeats
    assert ingest["peers"] == {}
    assert "MiB (started apart from the benchmark process by `bench/peak_rss.py`)." in text
    onnx = ingest["runtimes"]["onnx"]
    for key in ("limit_passages_per_s", "ralm_passages_per_s", "ralm_of_limit"):
        assert onnx[key]["min"] > 0 and len(onnx[key]["runs"]) == config.repeats
    assert "| ralm-es ingest, runtime onnx |" in text and "| ingest (onnx) vs encoder alone (onnx) | ≥ 90% |" in text

    retrieval = results["retrieval"]
    for row in retrieval["quality"]["modes"].values():
        assert 0.0 <= row["ndcg@10"] <= 1.0 and 0.0 <= row["recall@100"] <= 1.0
    # rrf: 4 rrf_k x 3 dense weights; linear: 2 norms x 3 dense weights.
    assert retrieval["quality"]["sweep_settings"] == 18
    latency = retrieval["latency"]
    assert latency["queries"] == 8 and len(latency["total"]["samples"]) == 8
    # The encoder's time is measured inside the wall time of each search; took is Elasticsearch's own figure.
    for total, encode, took in zip(*(latency[p]["samples"] for p in ("total", "encode", "took")), strict=True):
        assert 0 < encode < total and took >= 0
    texts = retrieval["texts"]
    for place in ("near", "distant"):
        assert all(len(texts[place][t]["samples"]) == 8 for t in ("fetch", "inline"))
    # Every request through the proxy waits its delay: both ways of reading texts pay it at least once a search.
    assert min(min(texts["distant"][t]["samples"]) for t in ("fetch", "inline")) >= texts["delay_ms"] / 1000
    assert "### Texts after fusion or with the rankings (`retrieval.texts`)" in text
    assert retrieval["many"]["queries"] == 8
    conll = retrieval["conll"]
    assert conll["sentences"] == 30 and conll["answered"] == 30 and not conll["full_train_set"]
    assert "| search_many vs a loop of search (8 queries) | ≥ 5× |" in text

    # Every scratch index of the run is gone from the shared node.
    assert es_client.indices.get(index=f"{results['scratch_prefix']}*", expand_wildcards="all").body == {}


def test_summaries_and_ratios() -> None:
    assert summarize([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "runs": [3.0, 1.0, 2.0]}
    assert ratios([10.0, 30.0], [5.0, 10.0])["runs"] == [2.0, 3.0]
    assert percentiles(list(range(101))) == {"p50": 50.0, "p95": 95.0, "p99": 99.0}


def test_targets_are_judged_only_where_the_run_can_judge_them() -> None:
    one = summarize([1.0])
    results = {
        "ingest": {
            "ralm_of_limit": summarize([0.95]),
            "target_of_limit": 0.9,
            "target_over_peers": 1.5,
            "peers": {"haystack": {"ralm_over_peer": summarize([0.8])}},
            "fastest_peer": "haystack",
            "runtimes": {
                "onnx-int8": {"ralm_of_limit": summarize([0.85]), "ralm_over_peer": {"haystack": summarize([1.6])}}
            },
        },
        "retrieval": {
            "quality": {
                "modes": {m: {"ndcg@10": v} for m, v in (("bm25", 0.6), ("dense", 0.62), ("hybrid_rrf", 0.61))}
            },
            "latency": {"rest_of_took_p50": 0.5, "target_rest_of_took": 0.2},
            "many": {"queries": 1000, "many_over_loop": summarize([6.0]), "target": 5.0},
            "conll": {"sentences": 500, "seconds": one, "target_s": 120.0, "full_train_set": False},
        },
    }
    judged = [(what, met) for what, _, _, met in targets(results)]
    assert judged[:4] == [
        ("ingest with embeddings vs encoder alone", True),
        ("ingest vs the faster peer (haystack)", False),
        ("ingest (onnx-int8) vs encoder alone (onnx-int8)", False),
        ("ingest (onnx-int8) vs the faster peer (haystack, torch)", True),
    ]
    assert [met for _, met in judged[4:]] == [False, False, True, None]


def test_head_conll_keeps_whole_sentences(tmp_path: Path) -> None:
    source = tmp_path / "train.txt"
    source.write_text("-DOCSTART- -X- -X- O\n\nA x x O\nB x x O\n\nC x x B-PER\n\nD x x O\n")
    cut = head_conll(source, 2, tmp_path / "cut.txt")
    assert cut.read_text() == "-DOCSTART- -X- -X- O\n\nA x x O\nB x x O\n\nC x x B-PER\n\n"
    assert head_conll(source, None, tmp_path / "unused.txt") == source


def test_quick_flag_and_overrides() -> None:
    quick = parse_args(["--quick", "--only", "ingest", "--abstracts", "7"])
    assert quick.quick and quick.only == ["ingest"] and quick.abstracts == 7 and quick.repeats == 1
    full = parse_args(["--no-peers"])
    assert not full.quick and full.abstracts is None and not full.peers and full.wants("retrieval")


def test_throughput_runs_never_evaluate_whatever_the_overrides_say() -> None:
    args = argparse.Namespace(
        caches="caches/conll-doc-{split}.jsonl",
        set=["data.dev=../shared/data/conll2003/dev.txt", "data.test=x.txt", "train.eval_every=5", "train.lr=1e-4"],
        limit=300,
        steps=7,
        variants=["none", "attention-tokens"],
    )
    jobs = throughput_jobs(args)
    assert set(jobs) == {"throughput-none", "throughput-attention-tokens"}
    for overrides in jobs.values():
        cfg = load_config(REPO / "configs" / "conll_ner.yaml", overrides)
        assert cfg.data.dev is None and cfg.data.test is None
        assert (cfg.train.max_steps, cfg.train.eval_every, cfg.data.limit) == (7, 7, 300)
        assert cfg.train.lr == 1e-4 and cfg.data.train_cache == "caches/conll-doc-train.jsonl"


def test_peer_environments_share_our_torch(tmp_path: Path) -> None:
    import torch

    link_shared(tmp_path / "shared")
    assert (tmp_path / "shared" / "torch").resolve() == Path(torch.__file__).parent.resolve()
    assert any(p.name.startswith("torch-") and p.name.endswith(".dist-info") for p in (tmp_path / "shared").iterdir())


def test_training_results_files_are_reported(tmp_path: Path) -> None:
    results_dir, docs_dir = tmp_path / "results", tmp_path / "docs"
    results_dir.mkdir()
    (docs_dir / "img").mkdir(parents=True)
    (results_dir / "conll.json").write_text(
        json.dumps({"quick": True, "test_f1": {"none": 0.9012, "attention": 0.9123}})
    )
    config = BenchConfig(results_dir=results_dir, docs_dir=docs_dir)
    found = collect_train(config.results_dir)
    assert list(found) == ["conll"] and found["conll"]["file"] == "conll.json"
    text = "\n".join(train_section(found, docs_dir))
    assert "| attention | 0.9123 |" in text and "quick mode" in text and "bench/results/conll.json" in text


def _run(
    fraction: float, epochs: float, steps: int, f1: float, seed: int = 13, cache: str = "caches/conll-train.jsonl"
) -> dict[str, object]:
    return {
        "config": {
            "data": {"train_fraction": fraction, "train_cache": cache},
            "train": {"epochs": epochs, "seed": seed},
        },
        "steps": steps,
        "test": {"f1": f1},
    }


def test_label_efficiency_takes_its_full_data_point_from_the_conll_runs(tmp_path: Path) -> None:
    results_dir, docs_dir = tmp_path / "results", tmp_path / "docs"
    results_dir.mkdir()
    (docs_dir / "img").mkdir(parents=True)
    efficiency = {
        "test_f1": {"0.05": {"none": 0.61, "attention-frozen": 0.69}},
        "runs": {
            "efficiency-none-0.05": _run(0.05, 3, 132, 0.61),
            "efficiency-attention-frozen-0.05": _run(0.05, 3, 132, 0.69),
        },
    }
    conll = {
        "test_f1": {"none": 0.86, "attention-frozen": 0.87, "concat": 0.85},
        "runs": {
            "conll-none": _run(1.0, 3, 2634, 0.86),
            "conll-attention-frozen": _run(1.0, 3, 2634, 0.87),
            "conll-concat": _run(1.0, 3, 2634, 0.85),
        },
    }
    (results_dir / "efficiency.json").write_text(json.dumps(efficiency))
    (results_dir / "conll.json").write_text(json.dumps(conll))
    text = "\n".join(train_section(collect_train(results_dir), docs_dir))
    assert "| 0.05 | 0.6900 | 0.6100 | +0.0800 | 3 epochs, 132 steps |" in text
    # The efficiency variants only: concat is in the conll table, not in this one.
    assert "| 1 | 0.8700 | 0.8600 | +0.0100 | 3 epochs, 2634 steps |" in text
    assert "The row for 1 is the `conll` benchmark's full-data runs." in text
    assert (docs_dir / "img" / "label_efficiency.png").read_bytes().startswith(PNG_MAGIC)

    # Full-data runs of the efficiency file's own take the place of conll.json's, not a place beside them.
    efficiency["runs"] |= {
        "efficiency-none-1": _run(1.0, 3, 2634, 0.88),
        "efficiency-attention-frozen-1": _run(1.0, 3, 2634, 0.90),
    }
    (results_dir / "efficiency.json").write_text(json.dumps(efficiency))
    text = "\n".join(train_section(collect_train(results_dir), docs_dir)).partition("### efficiency")[2]
    assert "| 1 | 0.9000 | 0.8800 | +0.0200 | 3 epochs, 2634 steps |" in text
    assert "0.8700" not in text and "The row for 1 is this file's own full-data runs." in text


def test_seeded_label_efficiency_reports_mean_sd_and_paired_differences(tmp_path: Path) -> None:
    results_dir, docs_dir = tmp_path / "results", tmp_path / "docs"
    results_dir.mkdir()
    (docs_dir / "img").mkdir(parents=True)
    scores = {"none": {13: 0.60, 14: 0.64, 15: 0.62}, "attention-tokens": {13: 0.70, 14: 0.71, 15: 0.66}}
    runs = {
        f"efficiency-{mode}-0.05-seed{seed}": _run(0.05, 3, 132, f1, seed)
        for mode, by_seed in scores.items()
        for seed, f1 in by_seed.items()
    }
    efficiency = {"test_f1": {"0.05": {"none": 0.62, "attention-tokens": 0.69}}, "runs": runs}
    (results_dir / "efficiency_tokens.json").write_text(json.dumps(efficiency))
    text = "\n".join(train_section(collect_train(results_dir), docs_dir))
    assert (
        "| 0.05 | 0.6900 ± 0.0265 (3 seeds) | 0.6200 ± 0.0200 (3 seeds) | +0.1000, +0.0700, +0.0400 "
        "| 3 epochs, 132 steps |" in text
    )
    assert (docs_dir / "img" / "label_efficiency_tokens.png").read_bytes().startswith(PNG_MAGIC)

    # Other passages for attention-tokens only: paired against the none runs above, at this file's fractions only.
    runs["efficiency-none-0.1-seed13"] = _run(0.1, 3, 264, 0.79, 13)
    (results_dir / "efficiency_tokens.json").write_text(json.dumps({**efficiency, "runs": runs}))
    other = {
        f"efficiency-attention-tokens-0.05-seed{seed}": _run(0.05, 3, 132, 0.6 + seed / 200, seed)
        for seed in scores["none"]
    }
    tokens = "\n".join(train_section(collect_train(results_dir), docs_dir)).partition("### efficiency_tokens")[2]
    # A cell of one run, beside cells over seeds, says so.
    assert "| 0.1 | – | 0.7900 (1 seed) | – | 3 epochs, 264 steps |" in tokens
    crossdoc = {"test_f1": {"0.05": {"attention-tokens": 0.67}}, "runs": other}
    (results_dir / "efficiency_crossdoc.json").write_text(json.dumps(crossdoc))
    text = "\n".join(train_section(collect_train(results_dir), docs_dir)).partition("### efficiency_crossdoc")[2]
    assert (
        "| 0.05 | 0.6700 ± 0.0050 (3 seeds) | 0.6200 ± 0.0200 (3 seeds) | +0.0650, +0.0300, +0.0550 "
        "| 3 epochs, 132 steps |" in text
    )
    assert "| 0.1 |" not in text
    assert (
        "The runs of `none` are those of `efficiency_tokens.json` (same seeds, subsets and budget; `none` reads no "
        "passages, so they were not trained again)." in text
    )


# Test F1 of seeds 13, 14 and 15 at 10% for the variants of an efficiency_tokens.json.
TOKENS_SCORES = {"none": (0.80, 0.79, 0.81), "attention-tokens": (0.82, 0.80, 0.84), "attention-frozen": (0.9,) * 3}


def _seeded_runs(scores: dict[str, tuple[float, ...]], caches: dict[str, str]) -> dict[str, dict[str, object]]:
    """Runs at 10% of the sentences (3 epochs, 264 steps) of each variant on seeds 13, 14, 15, on its passages."""
    return {
        f"efficiency-{mode}-0.1-seed{seed}": _run(0.1, 3, 264, f1, seed, caches[mode])
        for mode, by_seed in scores.items()
        for seed, f1 in zip((13, 14, 15), by_seed, strict=True)
    }


def test_regularised_runs_are_paired_against_none_and_the_unregularised_runs_on_the_same_passages(
    tmp_path: Path,
) -> None:
    results_dir, docs_dir = tmp_path / "results", tmp_path / "docs"
    results_dir.mkdir()
    (docs_dir / "img").mkdir(parents=True)
    doc = "caches/conll-doc-train.jsonl"
    tokens = _seeded_runs(TOKENS_SCORES, {"none": doc, "attention-tokens": doc, "attention-frozen": "x"})
    kl = _seeded_runs({"attention-tokens-kl": (0.83, 0.83, 0.83)}, {"attention-tokens-kl": doc})
    (results_dir / "efficiency_tokens.json").write_text(json.dumps({"test_f1": {}, "runs": tokens}))
    (results_dir / "efficiency_regularisers.json").write_text(json.dumps({"test_f1": {}, "runs": kl}))
    text = "\n".join(train_section(collect_train(results_dir), docs_dir)).partition("### efficiency_regularisers")[2]
    assert (
        "| fraction of training sentences | attention-tokens | attention-tokens-kl | none "
        "| attention-tokens − none, per seed | attention-tokens-kl − none, per seed "
        "| attention-tokens-kl − attention-tokens, per seed | budget |" in text
    )
    assert (
        "| 0.1 | 0.8200 ± 0.0200 (3 seeds) | 0.8300 ± 0.0000 (3 seeds) | 0.8000 ± 0.0100 (3 seeds) "
        "| +0.0200, +0.0100, +0.0300 | +0.0300, +0.0400, +0.0200 | +0.0100, +0.0300, -0.0100 | 3 epochs, 264 steps |"
        in text
    )
    # attention-frozen read other passages: not borrowed.
    assert "attention-frozen" not in text
    assert "The runs of `attention-tokens` and `none` are those of `efficiency_tokens.json`" in text
    assert (docs_dir / "img" / "label_efficiency_regularisers.png").read_bytes().startswith(PNG_MAGIC)


def test_a_reference_variant_is_borrowed_even_on_other_passages_and_the_note_names_them(tmp_path: Path) -> None:
    results_dir, docs_dir = tmp_path / "results", tmp_path / "docs"
    results_dir.mkdir()
    (docs_dir / "img").mkdir(parents=True)
    doc8, doc16 = "caches/conll-doc-train.jsonl", "caches/conll-doc16-train.jsonl"
    tokens = _seeded_runs(TOKENS_SCORES, dict.fromkeys(TOKENS_SCORES, doc8))
    k16 = _seeded_runs({"attention-tokens-k16": (0.83, 0.79, 0.84)}, {"attention-tokens-k16": doc16})
    (results_dir / "efficiency_tokens.json").write_text(json.dumps({"test_f1": {}, "runs": tokens}))
    (results_dir / "efficiency_k16.json").write_text(json.dumps({"test_f1": {}, "runs": k16}))
    text = "\n".join(train_section(collect_train(results_dir), docs_dir)).partition("### efficiency_k16")[2]
    assert (
        "| 0.1 | 0.8200 ± 0.0200 (3 seeds) | 0.8200 ± 0.0265 (3 seeds) | 0.8000 ± 0.0100 (3 seeds) "
        "| +0.0200, +0.0100, +0.0300 | +0.0300, +0.0000, +0.0300 | +0.0100, -0.0100, +0.0000 | 3 epochs, 264 steps |"
        in text
    )
    # attention-frozen is neither a reference nor on this file's passages.
    assert "attention-frozen" not in text
    assert (
        "The runs of `attention-tokens` and `none` are those of `efficiency_tokens.json` (same seeds, subsets and "
        "budget; `none` reads no passages; `attention-tokens` is a reference on its own passages, "
        "`caches/conll-doc-train.jsonl`, so they were not trained again)." in text
    )


def test_seeded_claims_runs_are_paired_against_none_on_accuracy_and_macro_f1() -> None:
    def run(seed: int, acc: float, f1: float) -> dict[str, object]:
        config = {
            "train": {"epochs": 10, "batch_size": 16, "precision": "bf16"},
            "model": {"k": 8},
            "data": {"train_cache": "caches/claims.jsonl"},
        }
        return {
            "config": config,
            "test": {"accuracy": acc, "macro_f1": f1},
            "examples_per_s": 20.0 + seed,
            "peak_memory_mb": 1600,
        }

    scores = {"none": {13: (0.50, 0.45), 14: (0.52, 0.49)}, "scores": {13: (0.56, 0.50), 14: (0.55, 0.53)}}
    result = {
        "split": "60/20/20 of claims.train, seed 13",
        "runs": {f"scifact-{m}-seed{s}": run(s, *v) for m, by_seed in scores.items() for s, v in by_seed.items()},
    }
    lines = seeded_section(result)
    assert lines[0].startswith(
        "| fusion | seeds | test accuracy (mean ± sd) | test macro-F1 (mean ± sd) | macro-F1 per seed "
        "| accuracy − none, per seed | macro-F1 − none, per seed |"
    )
    assert "| none | 13, 14 | 0.5100 ± 0.0141 | 0.4700 ± 0.0283 | 0.4500, 0.4900 | - | - | 33.50 | 1600 |" in lines
    assert (
        "| scores | 13, 14 | 0.5550 ± 0.0071 | 0.5150 ± 0.0212 | 0.5000, 0.5300 | +0.0600, +0.0300 | +0.0500, +0.0400 "
        "| 33.50 | 1600 |" in lines
    )
    assert lines[-1] == (
        "Split: 60/20/20 of claims.train, seed 13; 10 epochs of batch 16, k=8, bf16 training; passages from "
        "`caches/claims.jsonl`; the best dev checkpoint of each run on the test part."
    )


def test_the_tuned_retrievers_claims_runs_are_paired_by_seed_against_the_default_retrievers(tmp_path: Path) -> None:
    def result(scores: dict[int, tuple[float, float]]) -> dict[str, object]:
        runs = {
            f"scifact-attention-frozen-seed{seed}": {"test": {"accuracy": acc, "macro_f1": f1}}
            for seed, (acc, f1) in scores.items()
        }
        return {"benchmark": "scifact", "runs": runs}

    assert claims_retriever_section(tmp_path) == [
        "Not measured: no `bench/results/tune_retriever_claims.json`, `bench/results/scifact_claims_default.json`, "
        "`bench/results/scifact_claims_tuned.json`."
    ]
    record = {
        "written": "2026-12-02 07:00 UTC",
        "what": "Tuned on the train and dev claims.",
        "command": "ralm-es tune-retriever ...",
        "tuning": {
            "split": {"train_queries": 518, "dev_queries": 129},
            "history": [{"epoch": 0, "dev": {"ndcg@10": 0.65}}, {"epoch": 1, "dev": {"ndcg@10": 0.7}}],
            "best_epoch": 1,
        },
        "seconds": 3000.4,
        "peak_rss_mb": 9000,
        "machine": "2 cores",
        "test_queries": 162,
        "test_claims": {"default": {"hybrid": {"ndcg@10": 0.71, "recall@100": 0.95}}},
    }
    (tmp_path / "tune_retriever_claims.json").write_text(json.dumps(record))
    (tmp_path / "scifact_claims_default.json").write_text(
        json.dumps(result({13: (0.50, 0.45), 14: (0.52, 0.47), 15: (0.54, 0.49)}))
    )
    (tmp_path / "scifact_claims_tuned.json").write_text(
        json.dumps(result({13: (0.55, 0.50), 14: (0.51, 0.46), 15: (0.60, 0.54)}))
    )
    text = "\n".join(claims_retriever_section(tmp_path))
    assert "| default | hybrid | 0.7100 | 0.9500 |" in text
    assert "(0: base) 0: 0.6500, 1: 0.7000, best epoch 1; 3,000 s, peak RSS 9,000 MB, on 2 cores." in text
    assert (
        "| default | attention-frozen | 13, 14, 15 | 0.5200 ± 0.0200 | 0.4700 ± 0.0200 | 0.4500, 0.4700, 0.4900 "
        "| - | - |" in text
    )
    assert "| +0.0500, -0.0100, +0.0600 | +0.0500, -0.0100, +0.0500 |" in text
    # Means of the per-seed differences: accuracy (5 - 1 + 6) / 3, macro-F1 (5 - 1 + 5) / 3 points.
    assert "3 paired seeds: accuracy +3.3, macro-F1 +3.0 points" in text and text.endswith("**met**.")

    (tmp_path / "scifact_claims_tuned.json").write_text(json.dumps(result({13: (0.55, 0.50), 14: (0.40, 0.30)})))
    text = "\n".join(claims_retriever_section(tmp_path))
    assert "2 paired seeds" in text and text.endswith("n/a.")

    # Another tuning's files are named by its variant, and only they are read for it.
    assert claims_retriever_section(tmp_path, "evidence") == [
        "Not measured: no `bench/results/tune_retriever_claims_evidence.json`, "
        "`bench/results/scifact_claims_evidence_default.json`, `bench/results/scifact_claims_evidence_tuned.json`."
    ]


def test_peak_rss_is_the_commands_own_not_its_starters(tmp_path: Path) -> None:
    # This process has torch loaded: a child started from it directly would report this process's peak as its own.
    import torch  # noqa: F401

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = tmp_path / "rss"
    script = "b = bytearray(64 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096])"
    done = subprocess.run([sys.executable, str(PEAK_RSS), str(out), sys.executable, "-c", script])
    assert done.returncode == 0
    peak = int(out.read_text())
    assert 64 * 1024 <= peak < min(own, 160 * 1024), (peak, own)
    failed = subprocess.run([sys.executable, str(PEAK_RSS), str(out), sys.executable, "-c", "raise SystemExit(3)"])
    assert failed.returncode == 3
