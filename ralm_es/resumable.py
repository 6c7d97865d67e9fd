"""The resumable state of a training loop, without pickle: the latest weights, the optimizer's state, the
schedule, the RNG and the loop's own counters, in ``FOLDER/state/`` (safetensors and JSON). Used by ``train``'s
``run.resume`` and by ``tune-retriever --resume``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file, save_model
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from ralm_es.inference.checkpoint import WEIGHTS, load_weights, read_safetensors
from ralm_es.model_folder import ModelError

STATE_DIR = "state"


def save_state(
    folder: Path, model: torch.nn.Module, optimizer: Optimizer, scheduler: LRScheduler, loop: dict[str, Any]
) -> None:
    """Everything a resumed run needs (``run.resume``, ``tune-retriever --resume``), written to a new folder first
    so a crash never leaves half a state."""
    tmp = folder / f"{STATE_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / WEIGHTS))
    opt = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for idx, state in opt["state"].items():
        for name, value in state.items():
            tensors[f"{idx}.{name}"] = value.detach().cpu().contiguous()
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    meta = {"param_groups": opt["param_groups"], "scheduler": scheduler.state_dict(), "loop": loop}
    (tmp / "state.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    final = folder / STATE_DIR
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def saved_loop(folder: Path) -> dict[str, Any] | None:
    """The loop counters of the state saved in ``folder``, or None when it holds none."""
    path = folder / STATE_DIR / "state.json"
    if not path.is_file():
        return None
    loop: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))["loop"]
    return loop


def load_state(
    folder: Path, model: torch.nn.Module, optimizer: Optimizer, scheduler: LRScheduler, device: torch.device
) -> dict[str, Any]:
    """Restore what ``save_state`` wrote; returns the loop counters."""
    state_dir = folder / STATE_DIR
    if not (state_dir / "state.json").is_file():
        raise ModelError(f"cannot resume: {state_dir} holds no saved training state")
    load_weights(model, state_dir / WEIGHTS, device, f"the settings of {folder / 'config.yaml'}")
    meta = json.loads((state_dir / "state.json").read_text(encoding="utf-8"))
    # Loaded on the CPU: ``load_state_dict`` moves each value where the optimizer keeps it.
    tensors = read_safetensors(state_dir / "optimizer.safetensors", load_file)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("rng."):
            continue
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    scheduler.load_state_dict(meta["scheduler"])
    torch.set_rng_state(tensors["rng.cpu"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return meta["loop"]
