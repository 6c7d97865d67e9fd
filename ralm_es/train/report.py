"""What a run leaves for people: ``metrics.jsonl`` (one JSON object per log or evaluation), a PNG plot of the
training loss and the dev metric, and ``report.md``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

METRICS = "metrics.jsonl"
PLOT = "training.png"
REPORT = "report.md"


def append_metrics(folder: Path, record: dict[str, Any]) -> None:
    with (folder / METRICS).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def start_metrics(folder: Path) -> None:
    """An empty log, for a run that starts afresh."""
    (folder / METRICS).write_text("", encoding="utf-8")


def read_metrics(folder: Path) -> list[dict[str, Any]]:
    path = folder / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def truncate_metrics(folder: Path, step: int) -> None:
    """Drop the records of steps after ``step``: where a resumed run continues from."""
    kept = [r for r in read_metrics(folder) if r["step"] <= step]
    (folder / METRICS).write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")


def plot(folder: Path, records: list[dict[str, Any]], metric: str) -> Path:
    losses = [(r["step"], r["loss"]) for r in records if "loss" in r]
    evals = [(r["step"], r["dev"][metric]) for r in records if "dev" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if losses:
        ax.plot(*zip(*losses, strict=True), color="tab:blue", label="training loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss", color="tab:blue")
    if evals:
        ax2 = ax.twinx()
        ax2.plot(*zip(*evals, strict=True), "o-", color="tab:orange", label=f"dev {metric}")
        ax2.set_ylabel(f"dev {metric}", color="tab:orange")
    ax.set_title("training loss and dev metric")
    fig.tight_layout()
    path = folder / PLOT
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _table(rows: dict[str, dict[str, float]]) -> list[str]:
    lines = ["| | precision | recall | f1 | support |", "|---|---|---|---|---|"]
    for name, v in rows.items():
        lines.append(f"| {name} | {v['precision']:.4f} | {v['recall']:.4f} | {v['f1']:.4f} | {int(v['support'])} |")
    return lines


def write_report(folder: Path, summary: dict[str, Any], dev: dict[str, Any] | None) -> Path:
    lines = [f"# Training run `{folder.name}`", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in summary.items()]
    if dev is not None:
        lines += ["", "## Best dev evaluation", ""]
        per = dev.get("per_type") or dev.get("per_label") or {}
        lines += _table(per)
        lines += ["", "```", dev["report"].rstrip(), "```"]
    lines += ["", f"![training]({PLOT})", ""]
    path = folder / REPORT
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
