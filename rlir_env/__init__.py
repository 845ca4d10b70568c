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
_register("RLIR-CrafterReal-v0", entry_point="rlir_env.crafter.env:CrafterEnv")

__all__: list[str] = []
