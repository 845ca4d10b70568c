"""Which prompts (suite items) each iteration trains on, and which rank rolls out which groups.

The prompt order is a pure function of ``(seed, iteration)``: the suite is shuffled once per epoch with a generator
seeded from ``(seed, epoch)``, and iteration ``i`` takes positions ``i * P .. (i + 1) * P - 1`` of the concatenated
epochs. Resuming therefore only needs the iteration number (stored as the sampler position in checkpoints).

Group-aware distribution: every group stays whole on one rank (its ``G`` rollouts share one prefilled context, see
``grpo/rollout.py``); rank ``r`` of ``W`` takes the contiguous block ``r * P / W .. (r + 1) * P / W - 1`` of the
iteration's prompts. The trainer gathers every rank's rewards (in rank order, i.e. prompt order) before normalising
them per group, so advantages do not depend on the number of ranks.
"""

from __future__ import annotations

import numpy as np

from worldmodels.errors import ConfigError, DataError
from worldmodels.training.common import step_rng

DATA_STREAM = 31


class PromptSampler:
    """Prompts of every iteration over ``n_items`` suite items.

    Args:
        n_items: suite size.
        prompts_per_iter: prompts (groups) per iteration over all ranks.
        seed: the run seed.
        world_size, rank: data-parallel layout (``prompts_per_iter`` must be a multiple of ``world_size``).
        shuffle: shuffle each epoch (``False``: items in suite order).
    """

    def __init__(
        self,
        n_items: int,
        prompts_per_iter: int,
        seed: int,
        *,
        world_size: int = 1,
        rank: int = 0,
        shuffle: bool = True,
    ):
        if n_items < 1:
            raise DataError("the training suite has no items")
        if prompts_per_iter < 1:
            raise ConfigError(f"prompts_per_iter must be >= 1, got {prompts_per_iter}")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is outside world_size {world_size}")
        if prompts_per_iter % world_size:
            raise ConfigError(
                f"rollout.prompts_per_iter={prompts_per_iter} must be a multiple of the {world_size} ranks (each "
                "group stays on one rank)"
            )
        self.n_items = n_items
        self.prompts_per_iter = prompts_per_iter
        self.seed = seed
        self.world_size = world_size
        self.rank = rank
        self.shuffle = shuffle
        self._epochs: dict[int, np.ndarray] = {}

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._epochs:
            if self.shuffle:
                self._epochs[epoch] = step_rng(self.seed, DATA_STREAM, epoch).permutation(self.n_items)
            else:
                self._epochs[epoch] = np.arange(self.n_items)
        return self._epochs[epoch]

    def position(self, iteration: int) -> int:
        """Prompts consumed before ``iteration`` (the sampler state stored in checkpoints)."""
        return iteration * self.prompts_per_iter

    def global_prompts(self, iteration: int) -> np.ndarray:
        """``int64[P]`` suite indices of every prompt of ``iteration``, over all ranks, in rank order."""
        if iteration < 0:
            raise ConfigError(f"iteration must be >= 0, got {iteration}")
        start = self.position(iteration)
        positions = np.arange(start, start + self.prompts_per_iter)
        return np.array([self._order(int(q) // self.n_items)[int(q) % self.n_items] for q in positions], dtype=np.int64)

    @property
    def local_slots(self) -> slice:
        """This rank's slots (positions ``0 .. P-1`` within an iteration's prompts)."""
        per_rank = self.prompts_per_iter // self.world_size
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)

    def local_prompts(self, iteration: int) -> tuple[np.ndarray, np.ndarray]:
        """``(suite indices, slots)`` of this rank's prompts of ``iteration``; the slot (the prompt's position in
        the iteration, unique even when an item repeats) seeds its rollouts."""
        slots = np.arange(self.prompts_per_iter)[self.local_slots]
        return self.global_prompts(iteration)[self.local_slots], slots
