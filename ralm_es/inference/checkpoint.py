"""Reading the model a run folder holds, without pickle: ``model.safetensors`` with the weights, ``model.json``
with the spec and label map, ``encoder/config.json`` and the tokenizer. Training writes these
(``train/checkpoint.py``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from ralm_es.config import ConfigError
from ralm_es.model.ralm import RalmModel
from ralm_es.model.spec import ModelSpec
from ralm_es.model_folder import ModelError

WEIGHTS = "model.safetensors"
SPEC = "model.json"
ENCODER_DIR = "encoder"
T = TypeVar("T")


def load_tokenizer(folder: Path) -> PreTrainedTokenizerBase:
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the tokenizer in {folder}: {exc}") from exc
    if not tokenizer.is_fast:
        raise ModelError(f"{folder}: a fast tokenizer (tokenizer.json) is needed for word alignment")
    return tokenizer


def load_run_model(folder: str | Path, device: torch.device) -> tuple[RalmModel, PreTrainedTokenizerBase]:
    """The model saved in a run folder; fails naming the folder when it is not one or has no weights."""
    folder = Path(folder)
    if not (folder / SPEC).is_file():
        raise ModelError(f"{folder} is not a ralm-es run folder (no {SPEC})")
    if not (folder / WEIGHTS).is_file():
        raise ModelError(f"run folder {folder} has no weights ({WEIGHTS}); did training finish an evaluation?")
    try:
        # A field or a value this version does not know (a fusion mode added later) is refused here, in one line.
        spec = ModelSpec.from_json(json.loads((folder / SPEC).read_text(encoding="utf-8")))
    except (TypeError, ConfigError) as exc:
        raise ModelError(f"{folder / SPEC} was not written by this version of ralm-es: {exc}") from None
    hf_logging.set_verbosity_error()
    try:
        config = AutoConfig.from_pretrained(folder / ENCODER_DIR, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the encoder's config in {folder / ENCODER_DIR}: {exc}") from None
    model = RalmModel(spec, AutoModel.from_config(config))
    load_weights(model, folder / WEIGHTS, device, f"{folder / SPEC} and {folder / ENCODER_DIR}")
    return model.to(device).eval(), load_tokenizer(folder)


def load_weights(model: torch.nn.Module, path: Path, device: torch.device, described_by: str) -> None:
    """Load ``path`` into ``model``, built from what ``described_by`` says. Weights of another model (those
    settings changed since the weights were saved) are named as such in one line, not as a damaged file."""

    def load(file: str) -> tuple[list[str], list[str]]:
        try:
            missing, unexpected = load_model(model, file, strict=False, device=str(device))
        except RuntimeError as exc:
            if "size mismatch" not in str(exc):
                raise
            raise ModelError(f"{path}: the weights do not match {described_by}: {' '.join(str(exc).split())}") from None
        return sorted(missing), sorted(unexpected)

    missing, unexpected = read_safetensors(path, load)
    if missing or unexpected:

        def names(keys: list[str]) -> str:
            return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "") if keys else "none"

        raise ModelError(
            f"{path}: the weights do not match {described_by} (missing: {names(missing)}; "
            f"unexpected: {names(unexpected)})"
        )


def read_safetensors(path: Path, load: Callable[[str], T]) -> T:
    """``load(path)``, with a damaged or foreign file (a pickle put in its place) reported as a ModelError."""
    try:
        return load(str(path))
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise ModelError(f"{path}: not a readable safetensors file ({exc})") from None
