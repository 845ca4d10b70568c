"""Data parallelism of a post-training run under ``torchrun``: gloo on CPU, nccl on GPU; a no-op for one process."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass
class Dist:
    """The data-parallel layout: this process's ``rank`` among ``world`` processes."""

    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls, device: str) -> Dist:
        """Join the process group ``torchrun`` describes (``WORLD_SIZE``), or one process without it."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        return cls(rank=dist.get_rank(), world=dist.get_world_size())

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather_rows(self, array: np.ndarray) -> np.ndarray:
        """Concatenate every rank's equally shaped ``array`` in rank order."""
        if self.world == 1:
            return array
        import torch.distributed as dist

        local = torch.as_tensor(np.ascontiguousarray(array))
        parts = [torch.empty_like(local) for _ in range(self.world)]
        dist.all_gather(parts, local)
        return torch.cat(parts).numpy()

    def reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """All-reduce ``tensor`` in place with ``op`` (``"sum"``, ``"min"`` or ``"max"``); returns it."""
        if self.world > 1:
            import torch.distributed as dist

            ops = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
            dist.all_reduce(tensor, op=ops[op])
        return tensor

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


def sum_gradients(params: list[nn.Parameter], dist: Dist) -> None:
    """Sum gradients over ranks (one flat all-reduce). The loss is normalised by the global token count, so the
    sum is the gradient of the global token-mean; parameters without a gradient contribute zeros."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if dist.world == 1:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.reduce(flat)
    offset = 0
    for p in params:
        p.grad.copy_(flat[offset : offset + p.numel()].view_as(p))
        offset += p.numel()
