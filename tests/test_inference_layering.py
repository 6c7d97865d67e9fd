"""Inference is not training: serving a run and the ``predict`` / ``evaluate-model`` commands load nothing from
``ralm_es.train``. Checked in a fresh interpreter, whose ``sys.modules`` holds only what these imports pulled in."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CHECK = """
import importlib, pkgutil, sys
import ralm_es.inference
import ralm_es.serve.app
for info in pkgutil.iter_modules(ralm_es.inference.__path__, "ralm_es.inference."):
    importlib.import_module(info.name)
{extra}
print(sorted(m for m in sys.modules if m == "ralm_es.train" or m.startswith("ralm_es.train.")))
"""

# Each command fails on the missing run folder, after importing what it needs to open one.
COMMAND = """
from click.testing import CliRunner
from ralm_es.cli.main import cli
result = CliRunner().invoke(cli, [{args!r}, "--model", {folder!r}, {data!r}])
assert "is not a ralm-es run folder" in str(result.exception), result.output
"""


def loaded_train_modules(extra: str = "") -> str:
    code = CHECK.format(extra=extra)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_serving_and_the_inference_package_import_nothing_from_train() -> None:
    assert loaded_train_modules() == "[]"


@pytest.mark.parametrize("command", ["predict", "evaluate-model"])
def test_the_predict_and_evaluate_commands_import_nothing_from_train(command: str, tmp_path: Path) -> None:
    data = tmp_path / "in.txt"
    data.write_text("John X X B-PER\n", encoding="utf-8")
    extra = COMMAND.format(args=command, folder=str(tmp_path / "no-run"), data=str(data))
    assert loaded_train_modules(extra) == "[]"
