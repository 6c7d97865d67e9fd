"""Checkpoints never go through pickle: the code has no unpickling call, a run folder holds safetensors and text
only, and pickle bombs planted in a run folder (beside the checkpoints or in their place) are never executed."""

from __future__ import annotations

import ast
import json
import os
import pickle
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors import safe_open

from ralm_es.corpora.benchmarks import sample_path
from ralm_es.errors import RalmError
from ralm_es.inference.checkpoint import ENCODER_DIR, SPEC, WEIGHTS
from ralm_es.inference.runs import open_run
from ralm_es.model_folder import ModelError
from ralm_es.resumable import STATE_DIR
from ralm_es.train.config import load_config
from ralm_es.train.loop import train

PACKAGE = Path(__file__).resolve().parents[1] / "ralm_es"
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
PICKLE_SUFFIXES = {".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz"}
# torch.save writes a zip archive; protocol 2+ pickles start with PROTO (0x80) and the protocol number.
PICKLE_MAGIC = (*(bytes([0x80, n]) for n in range(2, 6)), b"PK\x03\x04")


class Bomb:
    """Unpickling this creates ``marker``: proof that something was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.marker),)


def calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    """Every call written as ``a.b.c(...)`` or ``name(...)``, with its dotted name."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts = []
            func = node.func
            while isinstance(func, ast.Attribute):
                parts.append(func.attr)
                func = func.value
            if isinstance(func, ast.Name):
                found.append((".".join([func.id, *reversed(parts)]), node))
    return found


def keyword_is(node: ast.Call, name: str, value: object) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value == value for k in node.keywords)


def test_the_code_never_unpickles() -> None:
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 20
    problems = []
    for path in sources:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [(node.module or "").split(".")[0]]
                if node.module == "torch" and any(alias.name == "load" for alias in node.names):
                    problems.append(f"{path}:{node.lineno}: from torch import load")
            else:
                continue
            problems += [f"{path}:{node.lineno}: imports {name}" for name in names if name in PICKLE_MODULES]
        for name, node in calls(tree):
            if name in ("torch.load", "th.load") and not keyword_is(node, "weights_only", True):
                problems.append(f"{path}:{node.lineno}: {name} without weights_only=True")
            if name.endswith(("np.load", "numpy.load")) and keyword_is(node, "allow_pickle", True):
                problems.append(f"{path}:{node.lineno}: {name} with allow_pickle=True")
            if name.endswith("from_pretrained") and keyword_is(node, "use_safetensors", False):
                problems.append(f"{path}:{node.lineno}: from_pretrained with use_safetensors=False")
    assert problems == []


@pytest.fixture(scope="module")
def paused_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A run paused after 2 of 4 steps: best model and resumable state both saved."""
    folder = tmp_path_factory.mktemp("ckpt-safety")
    ner = str(sample_path("sample_ner.txt"))
    config = {
        "data": {"train": ner, "dev": ner, "limit": 16},
        "model": {"encoder": str(tiny_model_dir), "fusion": "none", "max_length": 32},
        "train": {"max_steps": 4, "batch_size": 4, "eval_every": 1, "device": "cpu", "threads": 1},
        "run": {"out": str(folder / "run"), "progress": False},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    result = train(load_config(folder / "config.yaml"), stop_after=2)
    assert result.steps == 2 and not result.finished
    return result.out


def copy_run(run: Path, tmp_path: Path) -> Path:
    """The paused run copied to ``tmp_path/run`` with a config that resumes it there."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    config["run"].update(out=str(copy), resume=True)
    (tmp_path / "resume.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return copy


def plant(path: Path, marker: Path, zipped: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if zipped:
        torch.save({"state": Bomb(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(Bomb(marker)))


def test_a_run_folder_holds_safetensors_and_text_only(paused_run: Path) -> None:
    files = [p for p in paused_run.rglob("*") if p.is_file()]
    assert [p for p in files if p.suffix in PICKLE_SUFFIXES] == []
    assert [p for p in files if p.read_bytes()[:4].startswith(PICKLE_MAGIC)] == []
    weights = {p.relative_to(paused_run).as_posix() for p in files if p.suffix == ".safetensors"}
    assert weights == {WEIGHTS, f"{STATE_DIR}/{WEIGHTS}", f"{STATE_DIR}/optimizer.safetensors"}
    for name in weights:
        with safe_open(str(paused_run / name), framework="pt") as fh:
            assert list(fh.keys())


@pytest.mark.parametrize("zipped", [False, True], ids=["pickle", "torch.save"])
def test_pickle_files_beside_the_checkpoints_are_ignored_on_resume(
    paused_run: Path, tmp_path: Path, zipped: bool
) -> None:
    run = copy_run(paused_run, tmp_path)
    marker = tmp_path / "unpickled"
    for name in ("optimizer.pt", "training_state.pt", "scheduler.pt", "rng_state.pth", "pytorch_model.bin"):
        plant(run / STATE_DIR / name, marker, zipped)
    for name in ("pytorch_model.bin", "model.pt", "training_args.bin", "encoder/pytorch_model.bin"):
        plant(run / name, marker, zipped)
    result = train(load_config(tmp_path / "resume.yaml"))
    assert result.steps == 4 and result.finished
    open_run(run, "cpu")
    assert not marker.exists()


def load(run: Path, target: str, resume_config: Path) -> None:
    """Read ``target`` the way ralm-es does: the best model through ``open_run``, the state by resuming."""
    if target == WEIGHTS:
        open_run(run, "cpu")
    else:
        train(load_config(resume_config))


TARGETS = [f"{STATE_DIR}/optimizer.safetensors", f"{STATE_DIR}/{WEIGHTS}", WEIGHTS]


@pytest.mark.parametrize("zipped", [False, True], ids=["pickle", "torch.save"])
@pytest.mark.parametrize("target", TARGETS)
def test_a_pickle_in_place_of_a_checkpoint_is_refused_unread_naming_the_file(
    paused_run: Path, tmp_path: Path, target: str, zipped: bool
) -> None:
    run = copy_run(paused_run, tmp_path)
    marker = tmp_path / "unpickled"
    plant(run / target, marker, zipped)
    with pytest.raises(RalmError, match=re.escape(str(run / target))):
        load(run, target, tmp_path / "resume.yaml")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        # A model.json edited by hand, or copied from another run: weights of another model, named as such.
        (
            lambda spec: {**spec, "case_features": False},
            r"do not match .*model\.json .*\(missing: none; unexpected: case_embed\.weight\)",
        ),
        (
            lambda spec: {**spec, "labels": [*spec["labels"], "B-NEW"]},
            r"do not match .*model\.json .*: .*size mismatch for head\.weight",
        ),
    ],
    ids=["unexpected-key", "other-shape"],
)
def test_weights_of_another_model_are_named_as_such(
    paused_run: Path, tmp_path: Path, edit: Callable[[dict[str, Any]], dict[str, Any]], message: str
) -> None:
    run = copy_run(paused_run, tmp_path)
    spec = edit(json.loads((run / SPEC).read_text(encoding="utf-8")))
    (run / SPEC).write_text(json.dumps(spec), encoding="utf-8")
    with pytest.raises(ModelError, match=rf"^{re.escape(str(run / WEIGHTS))}: the weights {message}") as raised:
        open_run(run, "cpu")
    assert "\n" not in str(raised.value) and "not a readable safetensors file" not in str(raised.value)


def test_a_run_folder_without_its_encoder_config_is_named(paused_run: Path, tmp_path: Path) -> None:
    run = copy_run(paused_run, tmp_path)
    shutil.rmtree(run / ENCODER_DIR)
    with pytest.raises(ModelError, match=rf"^cannot read the encoder's config in {re.escape(str(run / ENCODER_DIR))}"):
        open_run(run, "cpu")
