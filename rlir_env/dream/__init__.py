"""Agents inside the learned simulator: learned Crafter reward and termination, frame wrappers, PPO recipes.

* :mod:`rlir_env.dream.heads`: :class:`CrafterHeads` (reward and death read from frames) and the frame functions
  :class:`CrafterReward` / :class:`CrafterDeath`.
* :mod:`rlir_env.dream.train`: train the heads on recorded trajectories (``rlir train reward-head``).
* :mod:`rlir_env.dream.wrappers`: ``FrameReward`` / ``FrameTermination`` (single and vector) for any frame
  classifier, and the learned Crafter versions.
* :mod:`rlir_env.dream.env`: ``RLIR-CrafterDream-v0`` (world model + learned reward + learned termination).
* :mod:`rlir_env.dream.agents`: PPO in the dream or the real game, evaluation in the real game
  (``rlir agents train`` / ``rlir agents eval``).

Nothing heavy is imported here; import the submodules.
"""

from __future__ import annotations
