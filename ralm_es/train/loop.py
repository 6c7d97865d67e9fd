"""The training loop, written out in one place in the spirit of nanoGPT's ``train.py``: seeded data order,
gradient accumulation, clipping, AdamW with warmup and decay, bf16 autocast (on CUDA by default, on a bf16 CPU when
asked), evaluation every N steps, early stopping on the dev metric, the best checkpoint and a resumable state."""

from __future__ import annotations

import contextlib
import logging
import math
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ralm_es import resumable
from ralm_es.config import to_dict
from ralm_es.errors import RalmError
from ralm_es.inference.checkpoint import WEIGHTS, load_tokenizer
from ralm_es.inference.passages import frozen_embedder
from ralm_es.inference.predictions import autocast, check_precision, predict
from ralm_es.inference.runs import evaluate_file, open_run
from ralm_es.inference.task import task_of
from ralm_es.model.inputs import FeatureSet
from ralm_es.model.ralm import RalmModel
from ralm_es.model.strategies import STRATEGIES, check_encoder_fits, ignored_settings, strategy_of
from ralm_es.model.strategies.base import drop_passages
from ralm_es.model_folder import resolve_model_path
from ralm_es.tasks import Task
from ralm_es.train import checkpoint, distributed, report
from ralm_es.train.config import TrainConfig
from ralm_es.train.data import load_splits
from ralm_es.train.optim import make_optimizer, make_scheduler

log = logging.getLogger(__name__)


class TrainError(RalmError):
    """A run that cannot start or continue: an existing run folder, no saved state, out of GPU memory."""


@dataclass
class RunResult:
    out: Path
    steps: int
    total_steps: int
    best_step: int | None
    best_metric: float | None
    dev: dict[str, Any] | None
    stopped_early: bool
    finished: bool
    examples_per_s: float
    peak_memory_mb: float
    truncated: dict[str, int]
    # Metrics of the best checkpoint on data.test, when set, once the run has finished.
    test: dict[str, Any] | None = None


def train(cfg: TrainConfig, stop_after: int | None = None) -> RunResult:
    """Train as ``cfg`` says. ``stop_after`` ends this call after that many optimizer steps, saving the state so
    that ``run.resume`` continues the same run (for time-sliced or preemptible machines)."""
    layout = distributed.setup(cfg.train.device)
    try:
        return _train(cfg, layout, stop_after)
    except torch.cuda.OutOfMemoryError:
        t = cfg.train
        raise TrainError(
            f"CUDA out of memory with train.batch_size={t.batch_size} (train.grad_accum={t.grad_accum}, "
            f"train.eval_batch_size={t.eval_batch_size}, model.k={cfg.model.k}); lower train.batch_size and raise "
            "train.grad_accum to keep the effective batch, or lower train.eval_batch_size"
        ) from None
    finally:
        distributed.teardown(layout)


def _check_out(out: Path, resume: bool) -> None:
    has_run = (out / resumable.STATE_DIR).exists() or (out / WEIGHTS).exists()
    if resume and not has_run:
        raise TrainError(f"run.resume is set but {out} holds no run to resume")
    if not resume and has_run:
        raise TrainError(f"{out} already holds a run: set run.resume=true to continue it, or choose another run.out")


# What a resumed run may set otherwise: how and where it runs (a paused run may move to another machine, an
# evaluation that ran out of memory may take smaller batches) and the test set scored at the end, not what it trains.
RESUME_MAY_CHANGE = ("run.", "train.threads", "train.device", "train.eval_batch_size", "data.test", "data.test_cache")


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def changed_settings(out: Path, cfg: TrainConfig) -> list[str]:
    """``key old -> new`` for each setting of ``cfg`` that differs from the run saved in ``out`` (its
    ``config.yaml``) in what it trains; none when ``out`` holds no config."""
    saved_file = out / "config.yaml"
    if not saved_file.is_file():
        return []
    saved, now = _flat(yaml.safe_load(saved_file.read_text(encoding="utf-8"))), _flat(to_dict(cfg))
    # A setting the saved config lacks (added since it was written) or no longer has is not compared.
    return [
        f"{key} {saved[key]!r} -> {now[key]!r}"
        for key in sorted(saved.keys() & now.keys())
        if saved[key] != now[key] and not key.startswith(RESUME_MAY_CHANGE)
    ]


def _check_resumed_settings(out: Path, cfg: TrainConfig) -> None:
    """A resume continues the saved run exactly, so it must have the settings the run was trained with."""
    if changed := changed_settings(out, cfg):
        raise TrainError(
            f"{out} was trained with other settings ({'; '.join(changed)}): resume it with the settings in its "
            "config.yaml, or choose another run.out"
        )


def _check_regularisers(cfg: TrainConfig) -> None:
    """Regularisers that the fusion mode cannot apply (their ranges are the settings' own check)."""
    t, fusion = cfg.train, cfg.model.fusion
    slotted = ", ".join(name for name, s in STRATEGIES.items() if s.slotted)
    # With model.concat_passages the passages are in the input too, where no slot can drop or clear them.
    mode = f"'{fusion}' with model.concat_passages" if cfg.model.concat_passages else f"'{fusion}'"
    for name, value in (("passage_dropout", t.passage_dropout), ("consistency_weight", t.consistency_weight)):
        if value > 0 and not strategy_of(cfg.model).slotted:
            raise TrainError(f"train.{name} needs a fusion mode with separate passages ({slotted}), not {mode}")


def _evaluate(model: RalmModel, task: Task, fs: FeatureSet, cfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    preds = predict(model, fs, cfg.train.eval_batch_size, device, cfg.train.precision)
    model.train()
    return task.metrics(task.gold(fs.examples), [p.labels for p in preds])


def _train(cfg: TrainConfig, layout: distributed.Layout, stop_after: int | None) -> RunResult:
    t = cfg.train
    out = Path(cfg.run.out)
    _check_out(out, cfg.run.resume)
    if cfg.run.resume:
        _check_resumed_settings(out, cfg)
    _check_regularisers(cfg)
    if layout.main and (unread := ignored_settings(cfg.model)):
        log.warning(unread)
    device = layout.device
    check_precision(device, t.precision)
    torch.manual_seed(t.seed)

    # Data: examples joined with their cached passages, as features. The label map comes from the training data.
    task = task_of(cfg.task)
    encoder_folder = resolve_model_path(cfg.model.encoder)
    tokenizer = load_tokenizer(encoder_folder)
    encoder = checkpoint.encoder_config(encoder_folder)
    check_encoder_fits(cfg.model, encoder.hidden_size, encoder.max_position_embeddings, encoder_folder)
    # Before the frozen encoder loads: it runs on this count, an ONNX session too.
    if t.threads:
        torch.set_num_threads(t.threads)
    embed = frozen_embedder(cfg.model, t.device)
    splits = load_splits(cfg, task, tokenizer, embed)
    train_fs, dev_fs = splits.train, splits.dev

    # Model, optimizer, schedule.
    model = checkpoint.new_model(splits.spec, cfg.model.encoder).to(device)
    per_rank = t.batch_size * layout.world
    micro_per_epoch = math.ceil(len(train_fs) / per_rank)
    # Epochs count micro-batches, so the last optimizer step may take fewer than train.grad_accum of them.
    total_micro = t.max_steps * t.grad_accum if t.max_steps else max(1, math.ceil(t.epochs * micro_per_epoch))
    total_steps = math.ceil(total_micro / t.grad_accum)
    optimizer = make_optimizer(model, t)
    scheduler = make_scheduler(optimizer, total_steps, t.warmup_ratio)
    loop: dict[str, Any] = {"step": 0, "micro": 0, "best": None, "best_step": None, "bad_evals": 0}
    # The loss window is saved with the state, so a resumed run logs the same averages as one run in one go.
    loop.update(stopped_early=False, dev=None, timed_steps=0, train_seconds=0.0, window_loss=0.0, window_steps=0)
    if cfg.run.resume:
        # A state saved before these counters were kept times only the steps from here on.
        counters = {"timed_steps": 0, "train_seconds": 0.0, "window_loss": 0.0, "window_steps": 0}
        loop = counters | resumable.load_state(out, model, optimizer, scheduler, device)
        if layout.main:
            # A run killed between two saved states logged steps that it will now train again.
            report.truncate_metrics(out, loop["step"])
    ddp = DistributedDataParallel(model) if layout.world > 1 else None
    forward = ddp or model
    if layout.main:
        out.mkdir(parents=True, exist_ok=True)
        if not cfg.run.resume:
            # A run killed before its first save left records (and nothing to resume) that are not this run's.
            report.start_metrics(out)
        (out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")

    # Data order: a seeded permutation per epoch, padded to a whole number of batches on every rank, so the
    # micro-batch counter alone says where a resumed run continues.
    permutations: dict[int, list[int]] = {}

    def micro_batch(i: int) -> dict[str, torch.Tensor]:
        epoch, j = divmod(i, micro_per_epoch)
        if epoch not in permutations:
            order = torch.randperm(len(train_fs), generator=torch.Generator().manual_seed(t.seed + epoch)).tolist()
            permutations[epoch] = (order * math.ceil(micro_per_epoch * per_rank / len(order)))[
                : micro_per_epoch * per_rank
            ]
        start = j * per_rank + layout.rank * t.batch_size
        batch = train_fs.batch(permutations[epoch][start : start + t.batch_size])
        if t.passage_dropout > 0:
            # Seeded by the micro-batch and rank, so a resumed run drops the same passages.
            generator = torch.Generator().manual_seed(t.seed * 1_000_003 + i * layout.world + layout.rank)
            batch = drop_passages(batch, t.passage_dropout, generator)
        return {k: v.to(device) for k, v in batch.items()}

    bar = tqdm(total=total_steps, initial=loop["step"], desc="train", disable=not (cfg.run.progress and layout.main))
    # Throughput counts training time only, not evaluation or checkpoints, over every part of a resumed run.
    start_step = loop["step"]
    model.train()
    while loop["step"] < total_steps and not loop["stopped_early"]:
        step_started = time.perf_counter()
        step_loss = 0.0
        accum = min(t.grad_accum, total_micro - loop["micro"])
        for micro in range(accum):
            batch = micro_batch(loop["micro"])
            loop["micro"] += 1
            # Gradients are only all-reduced on the last micro-batch of an accumulation window.
            sync = ddp.no_sync() if ddp is not None and micro < accum - 1 else contextlib.nullcontext()
            with sync:
                with autocast(device, t.precision):
                    # The mean over the step's micro-batches, a short last step's too.
                    loss = forward(batch, t.consistency_weight).loss / accum
                loss.backward()
            step_loss += loss.item()
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loop["step"] += 1
        loop["window_loss"] += step_loss
        loop["window_steps"] += 1

        step = loop["step"]
        loop["train_seconds"] += time.perf_counter() - step_started
        loop["timed_steps"] += 1
        rate = _timed_micro(loop, t.grad_accum) * per_rank / loop["train_seconds"]
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.4f}", ex_s=f"{rate:.1f}")
        if layout.main and (step % t.log_every == 0 or step == total_steps):
            mean_loss = loop["window_loss"] / loop["window_steps"]
            record = {"step": step, "epoch": round(loop["micro"] / micro_per_epoch, 3), "loss": mean_loss}
            record.update({"lr": scheduler.get_last_lr()[0], "examples_per_s": round(rate, 2)})
            report.append_metrics(out, record)
            loop.update(window_loss=0.0, window_steps=0)

        evaluate_now = step % t.eval_every == 0 or step == total_steps
        pause_now = stop_after is not None and step - start_step >= stop_after
        if evaluate_now:
            stop = False
            if layout.main:
                if dev_fs is not None:
                    metrics = _evaluate(model, task, dev_fs, cfg, device)
                    score = metrics[task.main_metric]
                    report.append_metrics(out, {"step": step, "dev": _scalars(metrics)})
                    if loop["best"] is None or score > loop["best"]:
                        loop.update(best=score, best_step=step, bad_evals=0, dev=metrics)
                        checkpoint.save_run_model(out, model, tokenizer)
                    else:
                        loop["bad_evals"] += 1
                        stop = t.patience > 0 and loop["bad_evals"] >= t.patience
                else:
                    checkpoint.save_run_model(out, model, tokenizer)
                    loop["best_step"] = step
            loop["stopped_early"] = distributed.agree(layout, stop)
        if layout.main and (evaluate_now or pause_now):
            resumable.save_state(out, model, optimizer, scheduler, loop)
        if pause_now:
            break
    bar.close()

    finished = loop["step"] >= total_steps or loop["stopped_early"]
    rate = _timed_micro(loop, t.grad_accum) * per_rank / max(loop["train_seconds"], 1e-9)
    truncated = {"train": train_fs.truncated, "dev": dev_fs.truncated if dev_fs is not None else 0}
    result = RunResult(
        out=out,
        steps=loop["step"],
        total_steps=total_steps,
        best_step=loop["best_step"],
        best_metric=loop["best"],
        dev=loop["dev"],
        stopped_early=loop["stopped_early"],
        finished=finished,
        examples_per_s=rate,
        peak_memory_mb=_peak_memory_mb(device),
        truncated=truncated,
    )
    if layout.main:
        if finished and cfg.data.test:
            run = open_run(out, str(device))
            result.test = evaluate_file(run, cfg.data.test, cfg.data.test_cache, t.eval_batch_size, cfg.data.limit)
        _write_outputs(out, cfg, task, result, layout, device)
    return result


def _timed_micro(loop: dict[str, Any], grad_accum: int) -> int:
    """Micro-batches of the timed steps: the last ``timed_steps`` steps (an older state timed only those after it),
    and only the run's last step may be short."""
    return loop["micro"] - (loop["step"] - loop["timed_steps"]) * grad_accum


def _scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k != "report"}


def _peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated on CUDA; on CPU the peak resident size of the whole process."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _write_outputs(
    out: Path, cfg: TrainConfig, task: Task, result: RunResult, layout: distributed.Layout, device: torch.device
) -> None:
    records = report.read_metrics(out)
    report.plot(out, records, task.main_metric)
    summary = {
        "task": cfg.task.type,
        "fusion": cfg.model.fusion,
        "encoder": cfg.model.encoder or "default (all-MiniLM-L6-v2)",
        "steps": f"{result.steps} of {result.total_steps}",
        "status": "finished" if result.finished else "paused (resume with --set run.resume=true)",
        "stopped early": result.stopped_early,
        f"best dev {task.main_metric}": "n/a" if result.best_metric is None else f"{result.best_metric:.4f}",
        "best step": result.best_step,
        "processes": layout.world,
        "device": str(device),
        "examples/s (training time only)": f"{result.examples_per_s:.1f}",
        "peak memory (MiB)": f"{result.peak_memory_mb:.0f}",
        "inputs truncated to the length budget": ", ".join(f"{k} {v}" for k, v in result.truncated.items()),
    }
    if result.test is not None:
        summary[f"test {task.main_metric} (best checkpoint)"] = f"{result.test[task.main_metric]:.4f}"
    report.write_report(out, summary, result.dev)
