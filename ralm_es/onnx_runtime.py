"""The encoder under ONNX Runtime: a local model folder exported once with ``torch.onnx.export`` (int8: dynamically
quantised), cached under the ralm-es cache home by encoder revision, never beside the installed package.

The runtimes and which of them give interchangeable vectors live here too. ``onnx`` (fp32) gives vectors within
1e-3 cosine of torch's, and ``torch-bf16`` (torch with bf16 weights, on a device that computes bf16 natively) within
1e-4 on MiniLM (torch on a GPU embeds in half precision under the same kind), so an index filled by one answers
queries encoded by another; ``onnx-int8`` vectors are further off and never mix with the others (``vector_kind``)."""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ralm_es.config import ConfigError, cache_home
from ralm_es.model_folder import ModelError

if TYPE_CHECKING:
    import numpy as np
    import onnxruntime

Runtime = Literal["torch", "torch-bf16", "onnx", "onnx-int8"]
RUNTIMES: tuple[Runtime, ...] = ("torch", "torch-bf16", "onnx", "onnx-int8")
# The vectors of the runtimes of one kind are interchangeable (fp32 export: same graph, same arithmetic; bf16: pooled
# vectors at cosine >= 0.9999 of fp32's on SciFact, docs/benchmarks.md).
VECTOR_KIND: dict[str, str] = {"torch": "fp32", "torch-bf16": "fp32", "onnx": "fp32", "onnx-int8": "int8"}
ONNX_RUNTIMES: tuple[Runtime, ...] = ("onnx", "onnx-int8")
OPSET = 17


def check_runtime(runtime: str, where: str) -> Runtime:
    if runtime not in RUNTIMES:
        raise ConfigError(f"{where}: unknown encoder runtime '{runtime}' (use {', '.join(RUNTIMES)})")
    return runtime  # type: ignore[return-value]


def vector_kind(runtime: str | None) -> str:
    """``fp32`` or ``int8``; an index that recorded no runtime was filled by torch (before runtimes existed)."""
    return VECTOR_KIND[runtime or "torch"]


def onnx_path(revision: str, runtime: Runtime) -> Path:
    name = "model-int8.onnx" if runtime == "onnx-int8" else "model.onnx"
    return cache_home() / "onnx" / revision / name


def _atomic(dest: Path, write: object) -> None:
    """Write through a temporary file renamed into place, so a killed export never leaves a half model."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".onnx.tmp")
    os.close(fd)
    try:
        write(Path(tmp))  # type: ignore[operator]
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _export(folder: Path, dest: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32).eval()
    sample = tokenizer(["an example sentence", "another"], padding=True, return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
    axes = {n: {0: "batch", 1: "sequence"} for n in names}

    class Graph(torch.nn.Module):
        """The model with positional inputs in ``names`` order and one output, as the exporter traces it."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.model(**dict(zip(names, inputs, strict=True))).last_hidden_state

    def write(tmp: Path) -> None:
        # The tracer warns about every shape-dependent branch of the model; the exported graph is checked by tests.
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Graph(),
                tuple(sample[n] for n in names),
                str(tmp),
                input_names=names,
                output_names=["last_hidden_state"],
                dynamic_axes={**axes, "last_hidden_state": {0: "batch", 1: "sequence"}},
                opset_version=OPSET,
                dynamo=False,
            )

    _atomic(dest, write)


def _quantize(source: Path, dest: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per-channel scales: per-tensor ones leave MiniLM's query vectors at ~0.96 cosine of fp32's, these at ~0.99.
    def write(tmp: Path) -> None:
        # quantize_dynamic logs a pre-processing hint on the root logger that does not apply to dynamic int8.
        logging.disable(logging.WARNING)
        try:
            quantize_dynamic(source, tmp, per_channel=True, weight_type=QuantType.QInt8)
        finally:
            logging.disable(logging.NOTSET)

    _atomic(dest, write)


def load_session(folder: Path, revision: str, runtime: Runtime, threads: int) -> onnxruntime.InferenceSession:
    """The ONNX Runtime session for ``folder``'s encoder on ``threads`` threads, exporting (and quantising) it on
    first use."""
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError(
            f"encoder runtime {runtime} needs onnxruntime: pip install 'ralm-es[onnx]' (or use runtime torch)"
        ) from None
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

    fp32 = onnx_path(revision, "onnx")
    path = onnx_path(revision, runtime)
    try:
        if not fp32.is_file():
            _export(folder, fp32)
        if not path.is_file():
            _quantize(fp32, path)
    except (OSError, RuntimeError, ValueError) as exc:
        raise ModelError(f"cannot make the {runtime} encoder of {folder} at {path}: {exc}") from exc
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except (OSError, ort_state.Fail, ort_state.InvalidProtobuf, ort_state.InvalidGraph, ort_state.NoSuchFile) as exc:
        # The cached export is damaged (a disk filled or a copy cut short while it was written): made again if gone.
        raise ModelError(
            f"cannot load the {runtime} encoder of {folder} from {path} ({exc}); delete that file to export it again"
        ) from None


def run_session(session: onnxruntime.InferenceSession, batch: dict[str, np.ndarray]) -> np.ndarray:
    """``last_hidden_state`` for a tokenised batch (numpy int64), feeding only the inputs the graph takes."""
    wanted = {i.name for i in session.get_inputs()}
    feed = {name: value.astype("int64") for name, value in batch.items() if name in wanted}
    return session.run(["last_hidden_state"], feed)[0]
