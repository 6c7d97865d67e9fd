"""Sentence embeddings from a local Hugging Face encoder folder: the pooling its sentence-transformers
``modules.json`` declares (mean when it declares none), L2 normalisation, batches sorted by length, CUDA
(bf16/fp16) when present. The network runs under torch (``runtime`` torch, or torch-bf16: bf16 weights on a
device that computes bf16 natively), or under ONNX Runtime on the CPU (onnx or onnx-int8, see
``ralm_es.onnx_runtime``); pooling and normalisation are the same for all. Nothing is ever downloaded."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, BatchEncoding
from transformers.utils import logging as hf_logging

from ralm_es.model_folder import WEIGHT_FILES, ModelError, resolve_model_path
from ralm_es.onnx_runtime import Runtime, check_runtime, load_session, run_session
from ralm_es.store.base import EncoderRecord

if TYPE_CHECKING:
    import onnxruntime

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


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


def bf16_native(device: torch.device) -> bool:
    """Whether ``device`` computes in bf16 natively: a CUDA GPU that supports it, or a CPU with AVX512-BF16 or AMX
    (oneDNN's own check; elsewhere torch emulates bf16 on the CPU, slower than fp32)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of the token states where ``mask`` is 1 (sentence-transformers' mean pooling)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def max_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-dimension maximum over the token states where ``mask`` is 1."""
    return hidden.masked_fill(mask.unsqueeze(-1) == 0, torch.finfo(hidden.dtype).min).max(1).values


def cls_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return hidden[:, 0]


POOLING = {"mean": mean_pool, "cls": cls_pool, "max": max_pool}
# The sentence-transformers modules an encoder folder may hold: the network, its pooling, unit length.
SENTENCE_MODULES = ("Transformer", "Pooling", "Normalize")
# sentence-transformers' Pooling config flags, in the order it reads them.
POOLING_FLAGS = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_max_tokens": "max"}


def pooling_mode(folder: Path) -> str:
    """The pooling a model folder declares in ``modules.json``; ``mean`` for a plain Hugging Face folder (what
    sentence-transformers assumes for one). A mode ralm-es cannot apply is an error, never a silent mean."""
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return "mean"
    try:
        modules = json.loads(modules_file.read_text())
        kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
        pooling = next((m for m, kind in zip(modules, kinds, strict=True) if kind == "Pooling"), None)
        config = json.loads((folder / pooling["path"] / "config.json").read_text()) if pooling else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelError(f"{modules_file}: cannot read the pooling module ({exc})") from None
    # Vectors are always unit length; a module that changes them otherwise (Dense, say) would be skipped.
    if unknown := [kind for kind in kinds if kind not in SENTENCE_MODULES]:
        raise ModelError(
            f"{modules_file}: module {unknown[0]} is not supported (ralm-es runs {', '.join(SENTENCE_MODULES)}): "
            "its vectors would not be the model's"
        )
    if pooling is None:
        return "mean"
    if "pooling_mode" in config:
        modes = [str(config["pooling_mode"])]
    else:
        modes = [mode for flag, mode in POOLING_FLAGS.items() if config.get(flag)]
        modes += [
            key
            for key, value in config.items()
            if key.startswith("pooling_mode_") and value and key not in POOLING_FLAGS
        ]
    if len(modes) != 1 or modes[0] not in POOLING:
        raise ModelError(
            f"{folder / pooling['path'] / 'config.json'}: pooling {'+'.join(modes) or 'none'} is not supported "
            f"(ralm-es pools by {', '.join(POOLING)})"
        )
    return modes[0]


class TorchNetwork:
    """The encoder network under torch: its weights in ``dtype`` on ``device``."""

    def __init__(self, path: Path, device: torch.device, dtype: torch.dtype) -> None:
        self.device = device
        try:
            self.model = AutoModel.from_pretrained(path, local_files_only=True, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load the model in {path}: {exc}") from exc
        self.model.to(device).eval()

    def hidden(self, batch: BatchEncoding) -> torch.Tensor:
        return self.model(**batch.to(self.device)).last_hidden_state


class OnnxNetwork:
    """The encoder network under ONNX Runtime (the package ralm-es installs runs on the CPU only)."""

    device = torch.device("cpu")

    def __init__(self, session: onnxruntime.InferenceSession) -> None:
        self.session = session

    def hidden(self, batch: BatchEncoding) -> torch.Tensor:
        return torch.from_numpy(run_session(self.session, {k: v.numpy() for k, v in batch.items()}))


Network = TorchNetwork | OnnxNetwork


def _torch(path: Path, revision: Callable[[], str], device: str) -> Network:
    chosen = pick_device(device)
    return TorchNetwork(path, chosen, cuda_dtype() if chosen.type == "cuda" else torch.float32)


def _torch_bf16(path: Path, revision: Callable[[], str], device: str) -> Network:
    chosen = pick_device(device)
    if not bf16_native(chosen):
        raise ModelError(
            f"encoder runtime torch-bf16: the {chosen.type} here has no native bf16 (a CPU needs AVX512-BF16 "
            "or AMX); use runtime torch"
        )
    return TorchNetwork(path, chosen, torch.bfloat16)


def _onnx(runtime: Runtime) -> Callable[[Path, Callable[[], str], str], Network]:
    def load(path: Path, revision: Callable[[], str], device: str) -> Network:
        # The session runs on the process's torch thread count, which the command has set.
        return OnnxNetwork(load_session(path, revision(), runtime, torch.get_num_threads()))

    return load


# How each runtime loads the network: the folder, its revision (ONNX exports are cached by it) and the device asked
# for (ONNX Runtime ignores it: CPU only).
NETWORKS: dict[Runtime, Callable[[Path, Callable[[], str], str], Network]] = {
    "torch": _torch,
    "torch-bf16": _torch_bf16,
    "onnx": _onnx("onnx"),
    "onnx-int8": _onnx("onnx-int8"),
}


class Encoder:
    """A frozen sentence encoder. ``encode`` returns float32 unit vectors in input order. On the CPU it runs on
    the process's torch thread count (the command sets it: ``train.threads``, a ``serve`` worker's share of the
    cores), and so does an ONNX Runtime session."""

    def __init__(
        self,
        path: str | Path | None = None,
        device: str = "auto",
        max_length: int = 256,
        runtime: Runtime = "torch",
    ) -> None:
        self.path = resolve_model_path(path)
        self.name = DEFAULT_MODEL_NAME if path is None else self.path.name
        self.runtime = check_runtime(runtime, "encoder")
        hf_logging.disable_progress_bar()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
            self.config = AutoConfig.from_pretrained(self.path, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load the model in {self.path}: {exc}") from exc
        self.network = NETWORKS[self.runtime](self.path, lambda: self.revision, device)
        self.device = self.network.device
        self.max_length = min(max_length, self.tokenizer.model_max_length)
        self.pooling = pooling_mode(self.path)
        self._pool = POOLING[self.pooling]

    @property
    def dim(self) -> int:
        return int(self.config.hidden_size)

    @cached_property
    def revision(self) -> str:
        """A content hash of the weights, so an index records exactly which encoder filled it."""
        weights = next(self.path / n for n in WEIGHT_FILES if (self.path / n).is_file())
        with weights.open("rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()[:16]

    def info(self) -> EncoderRecord:
        """What an index or a cache records about the encoder that made its vectors."""
        return EncoderRecord(
            name=self.name,
            revision=self.revision,
            dim=self.dim,
            pooling=self.pooling,
            path=str(self.path),
            runtime=self.runtime,
        )

    def _hidden(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The last hidden states of one batch and its attention mask."""
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return self.network.hidden(batch), batch["attention_mask"].to(self.device)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed ``texts``; batches are formed from length-sorted inputs so padding stays small."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        order = np.argsort([-len(t) for t in texts], kind="stable")
        starts = range(0, len(texts), batch_size)
        for start in starts:
            idx = order[start : start + batch_size]
            hidden, mask = self._hidden([texts[i] for i in idx])
            # Pooled in fp32: a bf16 or fp16 sum over hundreds of token states would lose digits.
            pooled = torch.nn.functional.normalize(self._pool(hidden.float(), mask), dim=-1)
            out[idx] = pooled.cpu().numpy()
        return out

    @torch.inference_mode()
    def token_states(self, texts: Sequence[str], batch_size: int = 64) -> list[np.ndarray]:
        """The last hidden layer's state of every token of each text ([CLS] and [SEP] included, cut to
        ``max_length``), as float16 arrays (tokens, dim) in input order; batched like ``encode``."""
        out: list[np.ndarray] = [np.zeros((0, self.dim), dtype=np.float16)] * len(texts)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            hidden, mask = self._hidden([texts[i] for i in idx])
            states = hidden.to(torch.float16).cpu().numpy()
            for row, i in enumerate(idx):
                out[i] = states[row, : int(mask[row].sum())].copy()
        return out
