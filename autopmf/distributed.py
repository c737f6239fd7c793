"""Distributed training on PyTorch's own engine (torchrun + torch.distributed).

Launched with `torchrun --nproc_per_node N`, each rank reads RANK / WORLD_SIZE / LOCAL_RANK
from the environment; without them everything runs as a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def init_distributed(device: str) -> DistContext:
    """Join the process group torchrun set up (gloo on CPU, NCCL on GPU), or run alone."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistContext(device=device)
    use_cuda = device.startswith("cuda")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    return DistContext(dist.get_rank(), dist.get_world_size(), device)
