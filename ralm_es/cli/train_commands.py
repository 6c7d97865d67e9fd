"""``ralm-es train``, ``predict`` and ``evaluate-model``: fine-tuning with retrieved passages and its use."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

# Torch and the model code load inside the commands, so `ralm-es --help` and `ralm-es es ...` stay quick.
if TYPE_CHECKING:
    from ralm_es.inference.records import PredictionRecord
    from ralm_es.inference.runs import LoadedRun

SCALARS = ("f1", "precision", "recall", "accuracy", "macro_f1")


@click.command("train")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="Training YAML.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a setting, e.g. train.lr=3e-5.")
@click.option("--stop-after", type=click.IntRange(1), help="Pause after this many steps (resume with run.resume).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
def train(config_path: str, overrides: tuple[str, ...], stop_after: int | None, as_json: bool) -> None:
    """Fine-tune an encoder with retrieved passages; writes a run folder (run.out)."""
    from ralm_es.train.config import load_config
    from ralm_es.train.loop import train as run_training

    cfg = load_config(config_path, overrides)
    result = run_training(cfg, stop_after=stop_after)
    summary = {
        "out": str(result.out),
        "steps": result.steps,
        "best_step": result.best_step,
        "best_metric": result.best_metric,
        "stopped_early": result.stopped_early,
        "finished": result.finished,
        "examples_per_s": round(result.examples_per_s, 2),
        "truncated": result.truncated,
    }
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(f"run folder: {result.out} (report.md, metrics.jsonl, training.png)")
        click.echo(f"steps {result.steps}/{result.total_steps}, best dev metric {result.best_metric}")


def _explain_lines(record: PredictionRecord, top: int, fusion: str) -> list[str]:
    # The model's fusion strategy gave no weights (``Prediction.weights``): only the modes that weigh passages do.
    if record.weights is None:
        return [f"  (fusion '{fusion}' does not weigh passages)"]
    if not record.passages:
        return ["  (no passages: retrieval found none for this input)"]
    lines = [f"  [{j + 1}] {p['id']}: {(p['text'] or '')[:90]}" for j, p in enumerate(record.passages or [])]
    if record.tags is not None:
        triples = zip(record.words or [], record.tags, record.weights, strict=True)
        rows = [(f"{w}/{t}", weights) for w, t, weights in triples if t != "O"]
    else:
        rows = [(str(record.label), record.weights[0])]
    for name, weights in rows:
        ranked = sorted(enumerate(weights), key=lambda jw: -jw[1])[:top]
        lines.append(f"  {name}: " + "  ".join(f"[{j + 1}] {w:.3f}" for j, w in ranked))
    return lines


@click.command("predict")
@click.option("--model", "run_dir", required=True, type=click.Path(file_okay=False), help="A run folder.")
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False))
@click.option("--cache", type=click.Path(dir_okay=False), help="Retrieval cache for INPUT (ralm-es retrieve).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per input.")
@click.option("--explain", is_flag=True, help="Show the passages and the attention weight each got.")
@click.option(
    "--top",
    default=3,
    show_default=True,
    type=click.IntRange(1),
    help="With --explain, the N passages of most weight named for each label (each tagged word for NER); text "
    "output, --json gives every weight.",
)
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1))
@click.option("--device", default="auto", show_default=True)
def predict(
    run_dir: str,
    input_path: str,
    cache: str | None,
    as_json: bool,
    explain: bool,
    top: int,
    batch_size: int,
    device: str,
) -> None:
    """Label INPUT (CoNLL for NER, JSONL for classification) with a trained run."""
    from ralm_es.inference.records import prediction_record
    from ralm_es.inference.runs import open_run, predict_file

    run = open_run(run_dir, device)
    _refuse_an_unread_cache(run, cache)
    fs, preds = predict_file(run, input_path, cache, batch_size)
    for ex, hits, pred in zip(fs.examples, fs.hits, preds, strict=True):
        record = prediction_record(ex, hits, pred, explain)
        if as_json:
            click.echo(json.dumps(record.to_json(), ensure_ascii=False))
            continue
        if record.tags is not None:
            tagged = zip(record.words or [], record.tags, strict=True)
            click.echo(f"{record.id}\t" + " ".join(f"{w}/{t}" for w, t in tagged))
        else:
            click.echo(f"{record.id}\t{record.label}\t{record.probability:.3f}")
        if explain:
            click.echo("\n".join(_explain_lines(record, top, run.model.spec.fusion)))


def _refuse_an_unread_cache(run: LoadedRun, cache: str | None) -> None:
    if cache is not None and not run.model.strategy.uses_passages:
        raise click.UsageError(
            f"the model in {run.folder} uses fusion '{run.model.spec.fusion}', which reads no passages: leave --cache "
            "out"
        )


@click.command("evaluate-model")
@click.option("--model", "run_dir", required=True, type=click.Path(file_okay=False), help="A run folder.")
@click.argument("test_path", metavar="TEST_FILE", type=click.Path(dir_okay=False))
@click.option("--cache", type=click.Path(dir_okay=False), help="Retrieval cache for TEST_FILE.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1))
@click.option("--device", default="auto", show_default=True)
def evaluate_model(
    run_dir: str, test_path: str, cache: str | None, as_json: bool, batch_size: int, device: str
) -> None:
    """Score a trained run on a labelled file (seqeval entity F1 for NER; accuracy and macro-F1 otherwise)."""
    from ralm_es.inference.runs import evaluate_file, open_run

    run = open_run(run_dir, device)
    _refuse_an_unread_cache(run, cache)
    metrics = evaluate_file(run, test_path, cache, batch_size)
    if as_json:
        click.echo(json.dumps(metrics))
        return
    click.echo("  ".join(f"{k} {metrics[k]:.4f}" for k in SCALARS if k in metrics))
    click.echo(f"{metrics['examples']} examples, {metrics['truncated']} truncated to the length budget")
    click.echo(metrics["report"])
