"""What a prompt is (:class:`Prompts`), which prompts (suite items) each iteration trains on, which rank rolls out
which groups, and the generator of every rollout (:func:`member_generator`).

The prompt order is a pure function of ``(seed, iteration)``: the suite is shuffled once per epoch with a generator
seeded from ``(seed, epoch)``, and iteration ``i`` takes positions ``i * P .. (i + 1) * P - 1`` of the concatenated
epochs. Resuming therefore only needs the iteration number (stored as the sampler position in checkpoints).

Group-aware distribution: every group stays whole on one rank (its ``G`` rollouts share one prefilled context, see
``grpo/rollout.py``); rank ``r`` of ``W`` takes the contiguous block ``r * P / W .. (r + 1) * P / W - 1`` of the
iteration's prompts. The trainer gathers every rank's rewards (in rank order, i.e. prompt order) before normalising
them per group, so advantages do not depend on the number of ranks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

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


# -- rollout seeds ----------------------------------------------------------------------------------------------------

ROLLOUT_STREAM = 101
"""Seed-sequence stream of training rollouts."""
EVAL_STREAM = 102
"""Seed-sequence stream of evaluation rollouts (fixed seeds, independent of the iteration)."""


def member_generator(
    seed: int, iteration: int, prompt: int, member: int, *, stream: int = ROLLOUT_STREAM, device: str = "cpu"
) -> torch.Generator:
    """The generator of one rollout: a function of ``(seed, stream, iteration, prompt, member)`` only."""
    words = np.random.SeedSequence(int(seed), spawn_key=(int(stream), int(iteration), int(prompt), int(member)))
    value = int(words.generate_state(2, np.uint64)[0] >> np.uint64(1))  # torch seeds are < 2**63
    generator = torch.Generator(device=device)
    generator.manual_seed(value)
    return generator


# -- prompts ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prompts:
    """What a group is conditioned on, for ``P`` prompts."""

    items: np.ndarray
    """``int64[P]`` suite item indices."""
    keys: np.ndarray
    """``int64[P]`` the prompts' seed keys (their slots in the iteration): they seed the rollouts."""
    context_frames: np.ndarray
    """``uint8[P, C, H, W, 3]`` real context frames."""
    context_actions: np.ndarray
    """``int64[P, C - 1, *A]`` compact actions between the context frames."""
    actions: np.ndarray
    """``int64[P, F, *A]`` commanded compact actions; generated frame ``k`` follows action ``k``."""

    def __len__(self) -> int:
        return len(self.items)

    @property
    def n_frames(self) -> int:
        return int(self.actions.shape[1])


def prompts_from_suite(
    suite, indices: Sequence[int], n_frames: int | None = None, *, keys: Sequence[int] | None = None
) -> Prompts:
    """The prompts of suite items ``indices``; ``n_frames`` keeps only the first actions (default: all ``F``);
    ``keys`` seed the rollouts (default: the item indices)."""
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size == 0:
        raise DataError("no prompts selected; pass at least one suite item index")
    if indices.min() < 0 or indices.max() >= len(suite):
        raise DataError(
            f"prompt indices must lie in [0, {len(suite)}) for suite {suite.name!r}, got {indices.tolist()}"
        )
    total = suite.n_frames
    n = total if n_frames is None else int(n_frames)
    if not 1 <= n <= total:
        raise ConfigError(f"n_frames must lie in [1, {total}] for suite {suite.name!r}, got {n_frames}")
    keys = indices if keys is None else np.asarray(keys, dtype=np.int64)
    if keys.shape != indices.shape:
        raise DataError(f"got {len(keys)} seed keys for {len(indices)} prompts")
    arrays = suite.arrays
    return Prompts(
        items=indices,
        keys=keys,
        context_frames=arrays["context_frames"][indices],
        context_actions=arrays["context_actions"][indices],
        actions=arrays["actions"][indices, :n],
    )
