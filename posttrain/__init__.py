"""RLIR post-training: GRPO on world models with inverse-dynamics (or pixel) rewards.

One loop, two paradigms: :func:`posttrain.loop.train` runs the iteration (prompts -> rollouts -> rewards ->
advantages -> old log-probs -> update -> log/checkpoint) over a :class:`~posttrain.paradigm.Paradigm`;
autoregressive (MineWorld-architecture) models train with token-level GRPO (:mod:`posttrain.grpo`), NFD models (the
diffusion paradigm) with Flow-GRPO (:mod:`posttrain.flow`); ``rlir posttrain`` picks the paradigm from the checkpoint.

* :mod:`posttrain.loop`: the iteration; :mod:`posttrain.paradigm`: what a paradigm implements;
* :mod:`posttrain.grpo`, :mod:`posttrain.flow`: the paradigms (algorithm core, group rollouts, log-prob replay);
* :mod:`posttrain.rewards`: ``IDMReward`` (RLIR) and ``PixelReward`` (RLVR-World's baseline);
* :mod:`posttrain.run` (start of a run), :mod:`posttrain.update` (advantages, micro-batches, optimizer steps),
  :mod:`posttrain.checkpoint` (checkpoints and resume), :mod:`posttrain.metrics` (logs and videos),
  :mod:`posttrain.lora`, :mod:`posttrain.config`, :mod:`posttrain.data`;
  the command is ``rlir posttrain`` (:mod:`rlir.commands.posttrain`).

Public names load on first use (the modules pull in torch)::

    from posttrain import load_config, train
    train(load_config("run.yaml"))
"""

from __future__ import annotations

from worldmodels.runtime.exports import lazy_exports

_EXPORTS = {
    "train": "posttrain.loop",
    "make_paradigm": "posttrain.loop",
    "Paradigm": "posttrain.paradigm",
    "GRPO": "posttrain.grpo.paradigm",
    "FlowGRPO": "posttrain.flow.paradigm",
    "PostTrainConfig": "posttrain.config",
    "load_config": "posttrain.config",
    "FlowPostTrainConfig": "posttrain.flow.config",
    "load_flow_config": "posttrain.flow.config",
    **{name: "posttrain.rewards" for name in ("IDMReward", "PixelReward", "RewardFn", "build_reward")},
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
