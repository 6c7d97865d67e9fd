"""bench/gpu_train.sh where no GPU is lent: a stand-in for Python records what the script asks of it, so its
plumbing is checked before the few minutes of a lent device are spent on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_train.sh"


def test_gpu_script_finds_the_default_caches_and_gives_the_conll_part_dev_and_test(tmp_path: Path) -> None:
    caches, data = tmp_path / "caches", tmp_path / "conll2003"
    caches.mkdir()
    data.mkdir()
    for split in ("train", "dev", "test"):
        (caches / f"conll-doc-{split}.jsonl").write_text("")
        (data / f"{split}.txt").write_text("")
    calls = tmp_path / "calls.jsonl"
    python = tmp_path / "python"
    python.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"with open({str(calls)!r}, 'a') as f:\n    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    python.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("CACHES", "ENCODER", "THROUGHPUT_S", "CONLL_S")}
    env |= {"OUT": str(tmp_path / "out"), "PYTHON": str(python), "DATA": str(data)}

    done = subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    device_check, throughput, conll = (json.loads(line) for line in calls.read_text().splitlines())
    assert device_check[0] == "-c" and "torch.cuda.is_available()" in device_check[1]
    assert throughput[:2] == ["bench/train_bench.py", "throughput"]
    assert throughput[throughput.index("--caches") + 1] == "caches/conll-doc-{split}.jsonl"
    assert conll[:2] == ["bench/train_bench.py", "efficiency"]
    assert f"data.dev={data}/dev.txt" in conll and f"data.test={data}/test.txt" in conll
    assert "train.device=cuda" in throughput and "train.device=cuda" in conll
    # The shared-encoder variant is recorded on full CoNLL, beside none.
    modes = conll[conll.index("--modes") + 1 : conll.index("--seeds")]
    assert {"none", "attention"} <= set(modes)
