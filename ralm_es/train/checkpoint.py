"""Writing run folders, without pickle: tensors in safetensors, everything else in JSON.

A run folder holds the best model (``model.safetensors``, ``model.json`` with the spec and label map,
``encoder/config.json``, the tokenizer), read back by ``inference/checkpoint.py``; ``state/`` holds what
``run.resume`` needs (``ralm_es/resumable.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_model
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from ralm_es.inference.checkpoint import ENCODER_DIR, SPEC, WEIGHTS
from ralm_es.model.ralm import RalmModel
from ralm_es.model.spec import ModelSpec
from ralm_es.model_folder import ModelError, resolve_model_path


def encoder_config(folder: Path) -> PretrainedConfig:
    """The config of the pretrained encoder in ``folder``, read without its weights."""
    try:
        return AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the encoder in {folder}: {exc}") from exc


def new_model(spec: ModelSpec, encoder_path: str | None) -> RalmModel:
    """A model around the pretrained encoder in ``encoder_path`` (None: the packaged default)."""
    folder = resolve_model_path(encoder_path)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        encoder = AutoModel.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the encoder in {folder}: {exc}") from exc
    return RalmModel(spec, encoder)


def save_run_model(folder: Path, model: RalmModel, tokenizer: PreTrainedTokenizerBase) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SPEC).write_text(json.dumps(model.spec.to_json(), indent=2) + "\n", encoding="utf-8")
    model.encoder.config.save_pretrained(folder / ENCODER_DIR)
    tokenizer.save_pretrained(folder)
    save_model(model, str(folder / WEIGHTS))
