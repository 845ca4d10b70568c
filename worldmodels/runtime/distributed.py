"""The data-parallel layout of a ``torchrun`` launch, set up once for every layer (evaluator, trainers, post-trainer).

``torchrun --nproc_per_node N -m rlir ...`` sets ``WORLD_SIZE``/``RANK``; :meth:`Distributed.from_env` joins the
process group (gloo on CPU, nccl on GPU). Launched without ``torchrun`` it is one process and every method is a no-op,
so the same code runs both ways.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from worldmodels.errors import ConfigError

__all__ = ["Distributed"]

_REDUCE_OPS = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}


def _leave_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


@dataclass(frozen=True)
class Distributed:
    """This process's place among ``world`` data-parallel processes; ``rank`` 0 writes the outputs."""

    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls, device: str | torch.device = "cpu") -> Distributed:
        """The layout ``torchrun`` launched (joining its process group: nccl for a CUDA ``device``, else gloo)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.device(device).type == "cuda" else "gloo")
            # a process that exits with the group alive can abort in the backend's threads' teardown ("terminate
            # called without an active exception", SIGABRT), failing a finished run: leave the group on exit
            atexit.register(_leave_process_group)
        return cls(rank=dist.get_rank(), world=dist.get_world_size())

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes files and draws progress bars."""
        return self.rank == 0

    def rows(self, n: int) -> slice:
        """This rank's contiguous share of a global batch of ``n`` rows."""
        if n % self.world:
            raise ConfigError(f"batch size {n} must be a multiple of the {self.world} processes; change one of them")
        share = n // self.world
        return slice(self.rank * share, (self.rank + 1) * share)

    def gather_rows(self, array: np.ndarray) -> np.ndarray:
        """Every rank's equally shaped ``array`` concatenated in rank order."""
        if self.world == 1:
            return array
        local = torch.as_tensor(np.ascontiguousarray(array))
        parts = [torch.empty_like(local) for _ in range(self.world)]
        dist.all_gather(parts, local)
        return torch.cat(parts).numpy()

    def reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """All-reduce ``tensor`` in place (``op``: sum, min or max) and return it."""
        if op not in _REDUCE_OPS:
            raise ConfigError(f"reduce op {op!r} is not one of {sorted(_REDUCE_OPS)}")
        if self.world > 1:
            dist.all_reduce(tensor, op=_REDUCE_OPS[op])
        return tensor

    def mean(self, value: float) -> float:
        """The mean of a scalar over ranks."""
        if self.world == 1:
            return value
        return float(self.reduce(torch.tensor([value], dtype=torch.float64)).item()) / self.world

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.world > 1:
            dist.barrier()

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` in DistributedDataParallel (gradients averaged over ranks), or itself for one process."""
        if self.world == 1:
            return module
        return torch.nn.parallel.DistributedDataParallel(module)
