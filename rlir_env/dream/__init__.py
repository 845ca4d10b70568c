"""The learned simulator around a world model: learned Crafter reward and termination read from frames.

* :mod:`rlir_env.dream.heads`: :class:`CrafterHeads` (reward and death read from frames) and the frame functions
  :class:`CrafterReward` / :class:`CrafterDeath`.
* :mod:`rlir_env.dream.wrappers`: ``FrameReward`` / ``FrameTermination`` (single and vector) for any frame
  classifier, and the learned Crafter versions.
* :mod:`rlir_env.dream.env`: ``RLIR-CrafterDream-v0`` (world model + learned reward + learned termination).

Training the heads and agents in the dream are recipes of the application (:mod:`rlir.agents`). Nothing heavy is imported here; import the submodules.
"""

from __future__ import annotations
