"""Flow-GRPO on an NFD (next-frame diffusion) world model: the :class:`~posttrain.paradigm.Paradigm` of RLIR's
diffusion paradigm (arXiv 2509.23958).

* **rollout** (:func:`~posttrain.flow.rollout.flow_rollout`): ``G`` SDE rollouts per prompt from one prefilled
  context, each frame denoised in ``rollout.steps`` steps of the Flow-GRPO SDE (same initial noise in a group); per
  frame a random ``timestep_fraction`` of the non-final steps is kept for training;
* **old log-probs**: the kept rollouts' trained steps replayed without gradients
  (:func:`~posttrain.flow.rollout.replay_logprobs`, one packed forward per context window) in the micro-batches the
  update uses, so the first micro-step's ratio is exactly 1; with ``beta > 0`` the frozen reference's SDE means;
* **loss**: per trained step the PPO-clipped surrogate (:func:`~posttrain.grpo.core.grpo_loss` on the step ratios;
  see :mod:`posttrain.flow.config` for the clip range) plus ``beta`` times the closed-form KL between the policy's and
  the reference's Gaussian steps (:func:`~posttrain.flow.sde.gaussian_mean_kl`), averaged over every trained step of
  the accumulated batch on every rank;
* **evaluation** with the ODE sampler RLIR evaluates with (DPM-Solver++, 18 steps, fixed seeds);
* **model file**: an NFD file (``NFD.from_checkpoint``, ``rlir eval``, ``RLIR-NFD-v0``).
"""

from __future__ import annotations

import copy
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from posttrain.data import EVAL_STREAM, Prompts, member_generator, prompts_from_suite
from posttrain.flow.config import FlowPostTrainConfig
from posttrain.flow.rollout import FlowRolloutBatch, FlowSampling, decode_videos, flow_rollout, replay_logprobs
from posttrain.flow.sde import gaussian_mean_kl
from posttrain.grpo.core import LossStats, grpo_loss
from posttrain.paradigm import OldLogprobs, Throughput
from worldmodels.errors import ConfigError
from worldmodels.nfd import NFD, NFDSampling, save_nfd


def flow_sampling(config: FlowPostTrainConfig) -> FlowSampling:
    """The rollout's SDE sampler from ``config.rollout``."""
    r = config.rollout
    return FlowSampling(steps=r.steps, noise_level=r.noise_level, shift=r.shift, fraction=r.timestep_fraction,
                        same_noise=r.same_noise, sde_type=r.sde_type)  # fmt: skip


class FlowGRPO:
    """Flow-GRPO (see the module docstring) of ``model``, whose transformer is trained in place.

    Args:
        config: the run (:mod:`posttrain.flow.config`).
        model: an ``NFD``.
    """

    title = "RLIR Flow-GRPO"
    off_policy = False  # the replay scores the SDE steps the rollout sampled, from the same Gaussians

    def __init__(self, config: FlowPostTrainConfig, model: nn.Module):
        if not isinstance(model, NFD):
            raise ConfigError(
                f"Flow-GRPO post-trains NFD models, got {type(model).__name__}; autoregressive (MineWorld) models use "
                "posttrain.config.load_config"
            )
        self.config = config
        self.policy = model.eval().requires_grad_(False)
        self.transformer = self.policy.transformer.requires_grad_(True)
        self.params = list(self.transformer.parameters())
        self.reference = copy.deepcopy(self.transformer).requires_grad_(False) if config.algo.beta > 0 else None
        self.sampling = flow_sampling(config)
        self.run_tags: dict[str, Any] = {"paradigm": "flow-grpo"}

    def rollout(self, prompts: Prompts, iteration: int) -> FlowRolloutBatch:
        return flow_rollout(self.policy, prompts, group_size=self.config.rollout.group_size, sampling=self.sampling,
                            seed=self.config.seed, iteration=iteration,
                            prompts_per_state=self.config.rollout.prompts_per_state)  # fmt: skip

    def decode(self, batch: FlowRolloutBatch, prompts: Prompts) -> np.ndarray:
        return decode_videos(self.policy, batch, prompts)

    def loss_units(self, batch: FlowRolloutBatch) -> int:
        return batch.n_frames * self.sampling.steps_per_frame  # trained denoising steps per sample

    def replaying(self) -> AbstractContextManager[None]:
        return nullcontext()

    def old_logprobs(self, batch: FlowRolloutBatch, samples: torch.Tensor) -> OldLogprobs:
        device = self.policy.device
        logp, _, _ = replay_logprobs(self.transformer, batch, samples, device=device)
        reference = None
        if self.reference is not None:
            reference = replay_logprobs(self.reference, batch, samples, device=device)[1]  # its SDE means
        return OldLogprobs(logp, batch.sampler_logprobs[samples], reference)

    def loss(
        self, batch: FlowRolloutBatch, samples: torch.Tensor, old: OldLogprobs, advantages: torch.Tensor, units: float
    ) -> tuple[torch.Tensor, LossStats]:
        clip = self.config.algo.clip_range
        logp, mean, std = replay_logprobs(self.transformer, batch, samples, device=self.policy.device)
        loss, stats = grpo_loss(logp, old.logp, advantages.to(logp.device), torch.ones_like(logp, dtype=torch.bool),
                                total_tokens=units, eps_low=clip, eps_high=clip)  # fmt: skip
        if old.reference is not None:
            kl = gaussian_mean_kl(mean.flatten(0, 2), old.reference.flatten(0, 2), std.flatten(0, 2))
            loss = loss + self.config.algo.beta * kl.sum() / units
            stats.kl = float(kl.detach().sum())
        return loss, stats

    def throughput(self, batch: FlowRolloutBatch, trained: int) -> Throughput:
        hw = self.policy.config.tokens_per_frame
        frames = batch.n_samples * batch.n_frames
        return Throughput(rollout_tokens=frames * hw * self.sampling.steps,
                          replay_tokens=2 * trained * self.loss_units(batch) * hw, rollout_frames=frames)  # fmt: skip

    def probe_videos(self, suite: Any) -> tuple[np.ndarray, Prompts]:
        return probe_flow_videos(self.policy, suite, self.config)

    def save(self, path: Path) -> None:
        save_nfd(self.policy, path)

    def summary(self) -> dict[str, Any]:
        s = self.sampling
        return {
            "paradigm": "flow-grpo",
            "reference": "frozen-copy" if self.reference is not None else None,
            "sampling": {"steps": s.steps, "noise_level": s.noise_level, "fraction": s.fraction,
                         "trained_steps_per_frame": s.steps_per_frame, "sde_type": s.sde_type},
        }  # fmt: skip


@torch.no_grad()
def probe_flow_videos(policy: NFD, suite: Any, config: FlowPostTrainConfig) -> tuple[np.ndarray, Prompts]:
    """One ODE rollout (``rollout.eval_sampler`` with ``rollout.eval_steps``) per item of ``suite`` (its first
    ``data.eval_items``), with seeds that do not change during training; the videos (context frame first) and
    prompts."""
    n = min(config.data.eval_items, len(suite))
    n_frames = min(config.data.n_frames or suite.n_frames, suite.n_frames)
    prompts = prompts_from_suite(suite, range(n), n_frames)
    sampling = NFDSampling(config.rollout.eval_sampler, config.rollout.eval_steps, config.rollout.shift)
    per_state = config.rollout.prompts_per_state or n
    videos = []
    for begin in range(0, n, per_state):
        rows = range(begin, min(n, begin + per_state))
        generators = [member_generator(config.seed, 0, i, 0, stream=EVAL_STREAM, device=policy.device.type)
                      for i in rows]  # fmt: skip
        context = torch.as_tensor(prompts.context_frames[begin : rows.stop])
        state = policy.start(context, prompts.context_actions[begin : rows.stop], generators, sampling=sampling)
        frames = [policy.step(state, prompts.actions[begin : rows.stop, k]).cpu().numpy() for k in range(n_frames)]
        videos.append(np.concatenate([prompts.context_frames[begin : rows.stop, -1:], np.stack(frames, 1)], 1))
    return np.concatenate(videos), prompts
