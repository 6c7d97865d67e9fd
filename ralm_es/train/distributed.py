"""Process layout under ``torchrun``: one process per device, NCCL on GPUs and gloo on CPUs."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ralm_es.embed import pick_device


@dataclass(frozen=True)
class Layout:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device: str) -> Layout:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1); otherwise a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Layout(0, 1, pick_device(device))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = pick_device(device)
    if chosen.type == "cuda":
        torch.cuda.set_device(local_rank)
        chosen = torch.device("cuda", local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
    return Layout(dist.get_rank(), dist.get_world_size(), chosen)


def teardown(layout: Layout) -> None:
    if layout.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def agree(layout: Layout, flag: bool) -> bool:
    """Rank 0's decision, on every rank (used for early stopping, decided where dev is evaluated)."""
    if layout.world == 1:
        return flag
    value = torch.tensor([int(flag)], device=layout.device)
    dist.broadcast(value, src=0)
    return bool(value.item())
