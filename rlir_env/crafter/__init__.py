"""The real game Crafter: the ground-truth environment, behaviour policies, a trajectory recorder and the score.

* :class:`CrafterEnv` (``RLIR-CrafterReal-v0``): ``crafter.Env`` with the Gymnasium API, deterministic per seed.
* :mod:`rlir_env.crafter.policies`: persistent-random, scripted-explorer and mixture behaviour policies.
* :func:`record`: multiprocess, deterministic recording of episodes into trajectory shards
  (:mod:`worldmodels.data.shards`).
* :func:`crafter_score`: the official geometric-mean Crafter score.
"""

from __future__ import annotations

from rlir_env.crafter.env import ACHIEVEMENTS, CRAFTER_FPS, INVENTORY_ITEMS, SEMANTIC_IDS, SEMANTIC_NAMES, CrafterEnv
from rlir_env.crafter.policies import MixturePolicy, PersistentRandomPolicy, Policy, ScriptedExplorer, make_policy
from rlir_env.crafter.record import record
from rlir_env.crafter.score import crafter_score, success_rates

__all__ = [
    "ACHIEVEMENTS",
    "CRAFTER_FPS",
    "INVENTORY_ITEMS",
    "SEMANTIC_IDS",
    "SEMANTIC_NAMES",
    "CrafterEnv",
    "MixturePolicy",
    "PersistentRandomPolicy",
    "Policy",
    "ScriptedExplorer",
    "crafter_score",
    "make_policy",
    "record",
    "success_rates",
]
