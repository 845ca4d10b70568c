"""GRPO for autoregressive world models: the algorithm core (``core``), group rollouts with a shared-prefix KV cache
(``rollout``) and teacher-forced log-prob replay (``replay``)."""

from __future__ import annotations

from posttrain.grpo.core import ADVANTAGE_SCALES, LossStats, group_advantages, grpo_loss, k3_kl, ppo_token_loss
from posttrain.grpo.replay import replay_logprobs, replay_mode
from posttrain.grpo.rollout import RolloutBatch, rollout

__all__ = [
    "ADVANTAGE_SCALES",
    "LossStats",
    "RolloutBatch",
    "group_advantages",
    "grpo_loss",
    "k3_kl",
    "ppo_token_loss",
    "replay_logprobs",
    "replay_mode",
    "rollout",
]
