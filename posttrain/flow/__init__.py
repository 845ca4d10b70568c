"""Flow-GRPO for next-frame diffusion (NFD) world models: the SDE with the flow's marginals and its Gaussian
log-probabilities (``sde``), group rollouts and the packed replay of their trained steps (``rollout``), the
configuration with RLIR's NFD settings (``config``) and the paradigm the loop runs (``paradigm``: :class:`FlowGRPO`)."""

from __future__ import annotations

from posttrain.flow.config import FlowPostTrainConfig, is_flow_model, load_flow_config
from posttrain.flow.rollout import FlowRolloutBatch, FlowSampling, decode_videos, flow_rollout, replay_logprobs
from posttrain.flow.sde import gaussian_logprob, gaussian_mean_kl, sde_sigma, sde_step, select_train_steps

__all__ = [
    "FlowPostTrainConfig",
    "FlowRolloutBatch",
    "FlowSampling",
    "decode_videos",
    "flow_rollout",
    "gaussian_logprob",
    "gaussian_mean_kl",
    "is_flow_model",
    "load_flow_config",
    "replay_logprobs",
    "sde_sigma",
    "sde_step",
    "select_train_steps",
]
