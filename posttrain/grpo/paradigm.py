"""GRPO on an autoregressive (MineWorld-architecture) world model: the :class:`~posttrain.paradigm.Paradigm` of
token-level post-training (RLIR, arXiv 2509.23958).

* **rollout**: ``G`` rollouts per prompt from one prefilled context (:func:`~posttrain.grpo.rollout.rollout`);
* **old log-probs**: the kept rollouts replayed without gradients (:func:`~posttrain.grpo.replay.replay_logprobs`),
  in the micro-batches the update uses, so the first micro-step's ratio is exactly 1; the reference's too when
  ``beta > 0`` (the LoRA adapter disabled, or a frozen copy of the initial weights);
* **loss**: token-level PPO clipped loss (+ ``beta`` k3 KL), token-mean over the whole accumulated batch
  (:func:`~posttrain.grpo.core.grpo_loss`);
* **model file**: ``MineWorld`` safetensors with LoRA merged (``MineWorld.from_checkpoint``, ``rlir eval --model``).
"""

from __future__ import annotations

import copy
import dataclasses
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from posttrain.config import PostTrainConfig
from posttrain.data import EVAL_STREAM, Prompts, prompts_from_suite
from posttrain.grpo.core import LossStats, grpo_loss
from posttrain.grpo.replay import replay_logprobs, replay_mode
from posttrain.grpo.rollout import RolloutBatch, decode_videos, rollout
from posttrain.lora import add_lora, lora_disabled, merged_copy
from posttrain.paradigm import OldLogprobs, Throughput
from worldmodels.errors import ConfigError
from worldmodels.mineworld import MineWorld, save_safetensors
from worldmodels.mineworld.sampling import SamplingConfig
from worldmodels.protocol import DiffusionModel


def token_sampling(config: PostTrainConfig) -> SamplingConfig:
    """The rollout's sampler from ``config.rollout``."""
    r = config.rollout
    return SamplingConfig(temperature=r.temperature, top_k=r.top_k, top_p=r.top_p, decoding=r.decoding)


@dataclass
class FrozenReference:
    """A frozen copy of the initial transformer, shaped like the model :func:`replay_logprobs` reads."""

    transformer: nn.Module
    config: Any
    device: torch.device


class GRPO:
    """Token-level GRPO (see the module docstring) of ``model``, whose weights are trained in place.

    Args:
        config: the run (:mod:`posttrain.config`).
        model: a ``MineWorld``.
        verbose: print notes (the main rank of a run).
    """

    title = "RLIR post-training"

    def __init__(self, config: PostTrainConfig, model: nn.Module, *, verbose: bool = True):
        if not isinstance(model, MineWorld):
            hint = (" (NFD models post-train with Flow-GRPO: build the config with posttrain.flow.config."
                    "load_flow_config; `rlir posttrain` does so for NFD checkpoints)"
                    if isinstance(model, DiffusionModel) else "")  # fmt: skip
            raise ConfigError(
                f"GRPO post-training needs a MineWorld-architecture model, got {type(model).__name__}{hint}"
            )
        self.config = config
        self.policy = model.eval().requires_grad_(False)
        self.transformer = self.policy.transformer
        self.reference: FrozenReference | None = None
        self.reference_kind: str | None = None
        if config.model.lora_rank > 0:
            self.params = add_lora(self.transformer, rank=config.model.lora_rank, alpha=config.model.lora_alpha,
                                   targets=config.model.lora_targets, seed=config.seed)  # fmt: skip
            self.reference_kind = "lora-disabled" if config.algo.beta > 0 else None
        else:
            self.transformer.requires_grad_(True)
            self.params = list(self.transformer.parameters())
            if config.algo.beta > 0:
                frozen = copy.deepcopy(self.transformer).requires_grad_(False)
                self.reference = FrozenReference(frozen, self.policy.config, self.policy.device)
                self.reference_kind = "frozen-copy"
        self.sampling = token_sampling(config)
        self.off_policy = config.off_policy
        self.run_tags: dict[str, Any] = {}
        if self.off_policy and verbose:
            print(f"note: rollouts use {self.sampling} (truncated or diagonal): the run is off-policy; old log-probs "
                  "come from the full-softmax replay")  # fmt: skip

    def rollout(self, prompts: Prompts, iteration: int) -> RolloutBatch:
        # LoRA: compute each adapted weight once per rollout, not once per decoding step
        cached = parametrize.cached() if self.config.model.lora_rank > 0 else nullcontext()
        with cached:
            return rollout(self.policy, prompts, group_size=self.config.rollout.group_size, sampling=self.sampling,
                           seed=self.config.seed, iteration=iteration,
                           prompts_per_state=self.config.rollout.prompts_per_state)  # fmt: skip

    def decode(self, batch: RolloutBatch, prompts: Prompts) -> np.ndarray:
        return decode_videos(self.policy, batch, prompts)

    def loss_units(self, batch: RolloutBatch) -> int:
        return batch.n_frames * self.policy.config.tokens_per_frame

    def replaying(self) -> AbstractContextManager[None]:
        return replay_mode(self.policy)

    def old_logprobs(self, batch: RolloutBatch, samples: torch.Tensor) -> OldLogprobs:
        temperature = self.sampling.temperature
        logp, _ = replay_logprobs(self.policy, batch, samples, temperature=temperature)
        reference = None
        if self.config.algo.beta > 0:
            if self.reference is None:  # LoRA: the base model is the policy with its adapters off
                with lora_disabled(self.policy):
                    reference = replay_logprobs(self.policy, batch, samples, temperature=temperature)[0]
            else:
                with replay_mode(self.reference):
                    reference = replay_logprobs(self.reference, batch, samples, temperature=temperature)[0]
        return OldLogprobs(logp, batch.sampler_logprobs.flatten(0, 1)[samples], reference)

    def loss(
        self, batch: RolloutBatch, samples: torch.Tensor, old: OldLogprobs, advantages: torch.Tensor, units: float
    ) -> tuple[torch.Tensor, LossStats]:
        algo = self.config.algo
        logp, entropy = replay_logprobs(self.policy, batch, samples, temperature=self.sampling.temperature,
                                        gradient_checkpointing=self.config.model.gradient_checkpointing,
                                        with_entropy=True)  # fmt: skip
        return grpo_loss(
            logp, old.logp, advantages.to(logp.device), torch.ones_like(logp, dtype=torch.bool), total_tokens=units,
            eps_low=algo.eps_low, eps_high=algo.eps_high, beta=algo.beta, ref_logp=old.reference, entropy=entropy,
        )  # fmt: skip

    def throughput(self, batch: RolloutBatch, trained: int) -> Throughput:
        tokens = self.loss_units(batch)  # per sample: every generated token
        return Throughput(rollout_tokens=batch.n_samples * tokens, replay_tokens=2 * trained * tokens)

    def probe_videos(self, suite: Any) -> tuple[np.ndarray, Prompts]:
        return probe_videos(self.policy, suite, self.config)

    def save(self, path: Path) -> None:
        """The post-trained model, whose default sampling (stored in the file) is the one its rollouts were optimised
        under — not the base's, which may truncate: GRPO improved the untruncated distribution it sampled."""
        model = merged_copy(self.policy)
        base_default = model.sampling
        model.sampling = dataclasses.replace(base_default, temperature=self.sampling.temperature,
                                             top_p=self.sampling.top_p, top_k=self.sampling.top_k)  # fmt: skip
        try:
            save_safetensors(model, path)
        finally:
            model.sampling = base_default  # merged_copy returns the policy itself when it has no adapters

    def summary(self) -> dict[str, Any]:
        return {"reference": self.reference_kind}


def probe_videos(policy: MineWorld, suite: Any, config: PostTrainConfig) -> tuple[np.ndarray, Prompts]:
    """One rollout per item of ``suite`` (its first ``data.eval_items``) with seeds that do not change during training,
    so probes at different iterations compare like with like; returns the videos (context frame first) and prompts."""
    n = min(config.data.eval_items, len(suite))
    n_frames = min(config.data.n_frames or suite.n_frames, suite.n_frames)
    prompts = prompts_from_suite(suite, range(n), n_frames)
    batch = rollout(policy, prompts, group_size=1, sampling=token_sampling(config), seed=config.seed, iteration=0,
                    stream=EVAL_STREAM, prompts_per_state=config.rollout.prompts_per_state)  # fmt: skip
    return decode_videos(policy, batch, prompts), prompts
