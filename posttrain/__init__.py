"""RLIR post-training: GRPO on world models with inverse-dynamics (or pixel) rewards.

Autoregressive (MineWorld-architecture) models train with token-level GRPO; NFD models (the diffusion paradigm) with
Flow-GRPO (:mod:`posttrain.flow`); ``rlir posttrain`` picks the trainer from the checkpoint.

* :mod:`posttrain.grpo`: the algorithm core, group rollouts with a shared-prefix KV cache, log-prob replay;
* :mod:`posttrain.rewards`: ``IDMReward`` (RLIR) and ``PixelReward`` (RLVR-World's baseline);
* :mod:`posttrain.config`, :mod:`posttrain.data`, :mod:`posttrain.trainer`: the run (``rlir posttrain``).

Modules are imported on use; they pull in torch.
"""
