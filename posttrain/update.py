"""The update's plan and its optimizer steps: rewards gathered over ranks -> group advantages -> micro-batches of
the kept samples; then per optimizer step, gradients summed over ranks, clipped, applied, schedule advanced."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from posttrain.config import config_to_dict
from posttrain.data import PromptSampler
from posttrain.grpo.core import group_advantages
from posttrain.run import Run
from worldmodels.runtime.distributed import Distributed
from worldmodels.training.common import cosine_with_warmup, make_adamw


@dataclass
class TrainState:
    """What the optimizer steps change, and what a run checkpoint holds (with the RNG states)."""

    transformer: nn.Module
    params: list[nn.Parameter]
    """The trainable parameters (gradients summed and clipped over these)."""
    optimizer: torch.optim.Optimizer
    scheduler: Any
    """Cosine schedule with warm-up, one step per optimizer step."""
    run_config: dict[str, Any]
    """The config fields that must match for a checkpoint to resume this run."""


def make_train_state(run: Run, transformer: nn.Module, params: list[nn.Parameter], tags: dict[str, Any]) -> TrainState:
    """AdamW over ``transformer``'s trainable parameters and its cosine schedule (``algo.minibatches`` steps per
    iteration); the run config of its checkpoints, with ``tags`` (e.g. the paradigm) and the world size."""
    optim = run.config.optim
    named = [(n, p) for n, p in transformer.named_parameters() if p.requires_grad]
    optimizer = make_adamw(named, lr=optim.lr, weight_decay=optim.weight_decay, betas=tuple(optim.betas))
    total = run.config.iterations * run.config.algo.minibatches
    scheduler = cosine_with_warmup(optimizer, warmup=optim.warmup, total=total, min_ratio=optim.min_lr_ratio)
    skipped = ("out", "logging", "checkpoint")  # may change between a run and its resumption
    run_config = {k: v for k, v in config_to_dict(run.config).items() if k not in skipped}
    run_config |= tags
    run_config["world_size"] = run.dist.world
    return TrainState(transformer, params, optimizer, scheduler, run_config)


@dataclass
class UpdatePlan:
    """One iteration's rewards (over every rank), advantages and this rank's micro-batches of kept samples."""

    all_frames: np.ndarray
    """``[P * G, F]`` per-frame rewards of every rollout of the iteration, in prompt order."""
    trajectory: np.ndarray
    """``[P, G]`` trajectory rewards (mean over frames)."""
    advantages: np.ndarray
    """``[P, G]`` group-normalised advantages."""
    keep: np.ndarray
    """``bool[P, G]`` the rollouts trained (groups whose rewards are all equal carry no signal)."""
    local_advantages: torch.Tensor
    """``float32[local samples]`` this rank's advantages, by sample index."""
    samples: np.ndarray
    """This rank's kept sample indices."""
    parts: list[list[torch.Tensor]]
    """Optimizer steps of micro-batches (sample indices)."""
    units: list[float]
    """Per optimizer step: the loss units (tokens, or trained denoising steps) of its kept samples on every rank."""

    def micro_batches(self) -> Iterator[torch.Tensor]:
        """Every micro-batch, in update order."""
        return (micro for part in self.parts for micro in part)


def micro_batches(samples: np.ndarray, minibatches: int, micro: int) -> list[list[torch.Tensor]]:
    """Split the kept samples into ``minibatches`` optimizer steps of micro-batches (the same split is used for the
    old log-probs and the update, which keeps the first micro-step's ratio exactly 1)."""
    return [
        [torch.as_tensor(part[i : i + micro]) for i in range(0, len(part), micro)]
        for part in np.array_split(samples, minibatches)
    ]


def plan_update(run: Run, per_frame: np.ndarray, sampler: PromptSampler, units_per_sample: int) -> UpdatePlan:
    """Gather every rank's per-frame rewards (``[local P * G, F]``), normalise them per group
    (:func:`~posttrain.grpo.core.group_advantages`), drop zero-std groups and split this rank's kept samples into
    ``algo.minibatches`` steps of ``algo.micro_batch``; ``units_per_sample``: the loss units of one sample."""
    algo, dist = run.config.algo, run.dist
    all_frames = dist.gather_rows(per_frame)  # [P * G, F] in prompt order
    trajectory = all_frames.mean(axis=1).reshape(-1, run.config.rollout.group_size)
    advantages, keep = group_advantages(trajectory, scale=algo.scale, eps=algo.adv_eps, clip=algo.adv_clip)
    local_adv = torch.as_tensor(advantages[sampler.local_slots].reshape(-1), dtype=torch.float32)
    samples = np.nonzero(keep[sampler.local_slots].reshape(-1))[0]
    parts = micro_batches(samples, algo.minibatches, algo.micro_batch)
    counts = torch.tensor([float(sum(len(m) for m in part)) for part in parts], dtype=torch.float64)
    units = (dist.reduce(counts) * units_per_sample).tolist()
    return UpdatePlan(all_frames, trajectory, advantages, keep, local_adv, samples, parts, units)


def optimizer_step(run: Run, state: TrainState) -> float:
    """Sum the accumulated gradients over ranks, clip them to ``optim.max_grad_norm``, step the optimizer and the
    schedule; returns the gradient norm before clipping."""
    sum_gradients(state.params, run.dist)
    max_norm = run.config.optim.max_grad_norm
    norm = float(torch.nn.utils.clip_grad_norm_(state.params, max_norm if max_norm is not None else math.inf))
    state.optimizer.step()
    state.scheduler.step()
    return norm


def skip_step(state: TrainState) -> None:
    """No optimizer step (every group of this slice had equal rewards on every rank); the schedule still advances,
    to stay aligned with iterations."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
        state.scheduler.step()


def sum_gradients(params: list[nn.Parameter], dist: Distributed) -> None:
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
