"""The ``Paradigm`` protocol: what a post-training algorithm plugs into the one loop (:mod:`posttrain.loop`).

The loop owns everything the paradigms share (prompts, rewards, group advantages, micro-batches, optimizer steps,
logging, checkpoints); a paradigm owns what depends on how its model generates a frame: the rollout, the replay of
the rollout's log-probabilities (old, reference, and with gradients for the loss), and the model file it writes.

* :class:`posttrain.grpo.paradigm.GRPO`: autoregressive models (MineWorld), token-level log-probabilities;
* :class:`posttrain.flow.paradigm.FlowGRPO`: NFD (next-frame diffusion), log-probabilities of SDE denoising steps.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from posttrain.data import Prompts
from posttrain.grpo.core import LossStats


@dataclass
class OldLogprobs:
    """A micro-batch's log-probabilities before the update (computed without gradients)."""

    logp: torch.Tensor
    """The policy's replayed log-probabilities: the denominators of the importance ratios."""
    sampler: torch.Tensor
    """The same samples' log-probabilities as the rollout's sampler computed them (logged: the replay's gap to them)."""
    reference: torch.Tensor | None = None
    """What the KL term compares with (GRPO: the reference's log-probs; Flow-GRPO: its SDE means); None at beta 0."""


@dataclass(frozen=True)
class Throughput:
    """The work of one iteration, for the speed metrics."""

    rollout_tokens: int
    """Tokens the rollout generated (Flow-GRPO: latent tokens times denoising steps)."""
    replay_tokens: int
    """Tokens the old log-probs and the update replayed (each trained sample twice)."""
    rollout_frames: int | None = None
    """Frames the rollout generated, when frames per second is worth its own metric (Flow-GRPO)."""


@runtime_checkable
class Paradigm(Protocol):
    """A post-training algorithm over one world model. ``batch`` is the paradigm's own rollout batch: ``P``
    prompts x ``G`` rollouts, sample ``s`` is member ``s % G`` of prompt ``s // G``, with ``items`` and
    ``group_size``; ``samples`` are ``int64[m]`` sample indices of one micro-batch."""

    title: str
    """Shown on the progress bar."""
    policy: nn.Module
    """The world model being trained; it samples the rollouts."""
    transformer: nn.Module
    """The module the optimizer updates and run checkpoints hold."""
    params: list[nn.Parameter]
    """Its trainable parameters (all of them, or LoRA adapters)."""
    off_policy: bool
    """Whether the rollouts sample from another distribution than the replay scores (truncated sampling)."""
    run_tags: dict[str, Any]
    """Added to the run config that checkpoints hold (a checkpoint of another paradigm is refused on resume)."""

    def rollout(self, prompts: Prompts, iteration: int) -> Any:
        """``G`` rollouts of every prompt, each from the generator of ``(seed, iteration, prompt key, member)``."""
        ...

    def decode(self, batch: Any, prompts: Prompts) -> np.ndarray:
        """What the reward sees: ``uint8[P * G, F + 1, H, W, 3]``, the last context frame, then the generated ones."""
        ...

    def loss_units(self, batch: Any) -> int:
        """Per sample, the units the loss is averaged over (tokens, or trained denoising steps)."""
        ...

    def replaying(self) -> AbstractContextManager[Any]:
        """The mode the old log-probs and the update run in (the same kernels with and without gradients)."""
        ...

    def old_logprobs(self, batch: Any, samples: torch.Tensor) -> OldLogprobs:
        """The replayed log-probs of ``samples`` under the current weights, and the reference's when ``beta > 0``."""
        ...

    def loss(
        self, batch: Any, samples: torch.Tensor, old: OldLogprobs, advantages: torch.Tensor, units: float
    ) -> tuple[torch.Tensor, LossStats]:
        """The micro-batch's differentiable loss, summed over its units and divided by ``units`` (the optimizer
        step's units on every rank), and its statistics."""
        ...

    def throughput(self, batch: Any, trained: int) -> Throughput:
        """The iteration's work: the rollout, and the replay of ``trained`` kept samples."""
        ...

    def probe_videos(self, suite: Any) -> tuple[np.ndarray, Prompts]:
        """One rollout per item of ``suite`` (its first ``data.eval_items``) with fixed seeds: the videos
        ``uint8[N, F + 1, H, W, 3]`` (context frame first) and their prompts, for :func:`posttrain.probe.score_probe`."""
        ...

    def save(self, path: Path) -> None:
        """Write the post-trained model to ``path`` (a file its model class loads)."""
        ...

    def summary(self) -> dict[str, Any]:
        """The paradigm's fields of the run summary (e.g. its KL reference)."""
        ...
