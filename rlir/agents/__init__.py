"""Agents in the learned simulator: recipes that consume the envs of :mod:`rlir_env`.

* :mod:`rlir.agents.ppo`: PPO (stable-baselines3) in the dream or the real game, evaluation in the real game
  (``rlir agents train`` / ``rlir agents eval``).
* :mod:`rlir.agents.reward_heads`: train the learned Crafter reward and termination heads that the dream env reads
  from its frames (``rlir train reward-head``).

Modules are imported on use; they pull in torch and stable-baselines3.
"""
