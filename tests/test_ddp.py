"""Two gloo processes under torchrun train one model together (DistributedDataParallel on CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_train import conll_files, losses, ner_config


def test_two_processes_train_together(tmp_path: Path, tiny_model_dir: Path) -> None:
    config = ner_config(tmp_path, conll_files(tmp_path, 48, 8), tiny_model_dir)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "ralm_es.cli.main", "train", "--config", str(config), "--json", "--set", "train.max_steps=10"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summaries = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    # Both ranks ran the same 10 steps; rank 0 alone evaluated and wrote the run folder.
    assert sorted(s["steps"] for s in summaries) == [10, 10]
    assert sum(s["best_metric"] is not None for s in summaries) == 1
    run = tmp_path / "run"
    assert "| processes | 2 |" in (run / "report.md").read_text()
    # 16 examples a step (8 per process): 48 training sentences make an epoch of 3 steps.
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[2])["epoch"] == 1.0
    seen = losses(run)
    assert sum(seen[-3:]) < sum(seen[:3])
