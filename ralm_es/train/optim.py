"""AdamW with no weight decay on biases and LayerNorm, a higher rate for fresh layers, linear warmup and decay."""

from __future__ import annotations

from torch import nn
from torch.optim import AdamW
from torch.optim.lr_scheduler import LambdaLR

from ralm_es.train.config import OptimSettings


def param_groups(model: nn.Module, cfg: OptimSettings) -> list[dict[str, object]]:
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        # Biases, LayerNorm gains and other vectors: every 1-d parameter.
        no_decay = param.ndim < 2
        pretrained = name.startswith("encoder.")
        groups.setdefault((pretrained, no_decay), []).append(param)
    return [
        {
            "params": params,
            "lr": cfg.lr if pretrained else cfg.head_lr,
            "weight_decay": 0.0 if no_decay else cfg.weight_decay,
        }
        # Encoder groups first, so the first learning rate reported is the encoder's.
        for (pretrained, no_decay), params in sorted(groups.items(), key=lambda item: (not item[0][0], item[0][1]))
    ]


def make_optimizer(model: nn.Module, cfg: OptimSettings) -> AdamW:
    # The fused kernel is several times faster than the default on CPU as well as on CUDA.
    return AdamW(param_groups(model, cfg), betas=(0.9, 0.999), eps=1e-8, fused=True)


def make_scheduler(optimizer: AdamW, total_steps: int, warmup_ratio: float) -> LambdaLR:
    warmup = int(total_steps * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return LambdaLR(optimizer, factor)
