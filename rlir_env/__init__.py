"""Gymnasium environments backed by video world models.

Importing this package registers the ``RLIR-*`` environment ids (Gymnasium >= 1.0 loads no plugin entry points), so
``import rlir_env; gym.make("RLIR-Crafter-v0")`` works, as does ``gym.make("rlir_env:RLIR-Crafter-v0")``.
Registration is cheap: nothing heavy is imported until an env is made.
"""

from __future__ import annotations

import gymnasium

_WORLD_MODEL_ENV = "rlir_env.env:WorldModelEnv"
_WORLD_MODEL_VECTOR_ENV = "rlir_env.vector:WorldModelVectorEnv"


def _register(env_id: str, **kwargs) -> None:
    if env_id not in gymnasium.registry:
        gymnasium.register(id=env_id, **kwargs)


_register(
    "RLIR-MineWorld-v0",
    entry_point=_WORLD_MODEL_ENV,
    vector_entry_point=_WORLD_MODEL_VECTOR_ENV,
    kwargs={"checkpoint": "mineworld-300m-16f"},
)
# The real game, as ground truth; Crafter's own `length` truncates episodes.
_register("RLIR-CrafterReal-v0", entry_point="rlir_env.crafter.env:CrafterEnv",
          vector_entry_point="rlir_env.crafter.env:CrafterVectorEnv")
# A next-frame diffusion world model: pass checkpoint=<an NFD .safetensors from `rlir train nfd`> (no default).
_register("RLIR-NFD-v0", entry_point=_WORLD_MODEL_ENV, vector_entry_point=_WORLD_MODEL_VECTOR_ENV)
# The Crafter world model with Crafter's reward and death predicted from frames (rlir_env/dream/env.py explains the
# 1000-step default: the model learned from episodes of at most ~1150 frames).
_register(
    "RLIR-CrafterDream-v0",
    entry_point="rlir_env.dream.env:make_dream_env",
    vector_entry_point="rlir_env.dream.env:make_dream_vector_env",
    max_episode_steps=1000,
)
# The bundled world model trained on real Crafter; episodes start from real frames of the bundled scene pool.
_register(
    "RLIR-Crafter-v0",
    entry_point=_WORLD_MODEL_ENV,
    vector_entry_point=_WORLD_MODEL_VECTOR_ENV,
    kwargs={"checkpoint": "crafter-mineworld", "scenes": "crafter"},
)
# The bundled next-frame diffusion model trained on the same recording (the paper's second paradigm).
_register(
    "RLIR-CrafterNFD-v0",
    entry_point=_WORLD_MODEL_ENV,
    vector_entry_point=_WORLD_MODEL_VECTOR_ENV,
    kwargs={"checkpoint": "crafter-nfd", "scenes": "crafter"},
)

__all__: list[str] = []
