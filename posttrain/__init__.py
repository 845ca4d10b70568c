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

Modules are imported on use; they pull in torch.
"""
