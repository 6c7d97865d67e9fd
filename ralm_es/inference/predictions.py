"""Predictions of a model over a feature set: labels per example and, with a mode that weighs passages
(attention, pair), the weight each passage got. Shared by dev evaluation during training, ``ralm-es predict``
and ``ralm-es evaluate-model``."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from ralm_es.config import ConfigError
from ralm_es.embed import bf16_native
from ralm_es.model.inputs import FeatureSet
from ralm_es.model.labelling import Prediction, Scored
from ralm_es.model.ralm import RalmModel


def check_precision(device: torch.device, precision: str) -> None:
    """Refuse ``bf16`` on a device that would only emulate it."""
    if precision == "bf16" and not bf16_native(device):
        raise ConfigError(
            f"train.precision bf16: the {device.type} here has no native bf16 (a CPU needs AVX512-BF16 or AMX); "
            "use auto or fp32"
        )


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast for ``bf16``, and for ``auto`` on a CUDA GPU that supports it; full precision otherwise.
    ``auto`` keeps the CPU in fp32: bf16 changes a run's figures, and not every CPU computes it natively."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda" and bf16_native(device)):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.inference_mode()
def predict(
    model: RalmModel, fs: FeatureSet, batch_size: int, device: torch.device, precision: str = "auto"
) -> list[Prediction]:
    """Words cut off by the length budget are tagged ``O`` (they are counted in ``fs.truncated``)."""
    model.eval()
    labels = model.spec.labels
    out: list[Prediction] = []
    for start in range(0, len(fs), batch_size):
        idx = list(range(start, min(start + batch_size, len(fs))))
        batch = {k: v.to(device) for k, v in fs.batch(idx).items() if k != "labels"}
        with autocast(device, precision):
            result = model(batch)
        probs = result.logits.float().softmax(-1).cpu()
        weights = result.passage_weights.float().cpu() if result.passage_weights is not None else None
        for row, i in enumerate(idx):
            # The weight tensor has a column per passage slot; an example's own passages are its first ones.
            own = weights[row, :, : len(fs.hits[i])] if weights is not None else None
            out.append(model.labelling.decode(Scored(probs[row], own, fs.features[i].word_starts), labels))
    return out
