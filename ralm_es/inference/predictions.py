"""Predictions of a model over a feature set: labels per example and, with a mode that weighs passages
(attention, pair), the weight each passage got. Shared by dev evaluation during training, ``ralm-es predict``
and ``ralm-es evaluate-model``."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from ralm_es.config import ConfigError
from ralm_es.embed import bf16_native
from ralm_es.model.inputs import FeatureSet
from ralm_es.model.ralm import RalmModel


@dataclass
class Prediction:
    # NER: one tag per word; classification: one label.
    labels: list[str] | str
    # NER: per word, the weight of each passage; classification: one row. None for none and concat.
    weights: list[list[float]] | None
    probability: float | None = None


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
            feat = fs.features[i]
            n_passages = len(fs.hits[i])
            if model.spec.task == "ner":
                tags = [labels[int(probs[row, p].argmax())] if p >= 0 else "O" for p in feat.word_starts]
                word_weights = None
                if weights is not None:
                    word_weights = [
                        weights[row, p, :n_passages].tolist() if p >= 0 else [0.0] * n_passages
                        for p in feat.word_starts
                    ]
                out.append(Prediction(tags, word_weights))
            else:
                best = int(probs[row].argmax())
                row_weights = [weights[row, 0, :n_passages].tolist()] if weights is not None else None
                out.append(Prediction(labels[best], row_weights, float(probs[row, best])))
    return out
