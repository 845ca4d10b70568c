"""Gymnasium environments backed by video world models.

Importing this package registers the ``RLIR-*`` environment ids (Gymnasium >= 1.0 loads no plugin entry points), so
``import rlir_env; gym.make("RLIR-Crafter-v0")`` works, as does ``gym.make("rlir_env:RLIR-Crafter-v0")``, and the
named start scenes those ids use (``scenes="crafter"``). Registration is cheap: nothing heavy is imported until an
env is made, and the public names below load on first use.
"""

from __future__ import annotations

import gymnasium

from rlir_env.scenes import register_scenes
from worldmodels.runtime.exports import lazy_exports

_WORLD_MODEL_ENV = "rlir_env.env:WorldModelEnv"
_WORLD_MODEL_VECTOR_ENV = "rlir_env.vector:WorldModelVectorEnv"

WORLD_MODEL_MAX_EPISODE_STEPS = 1000
"""Default episode limit of every world-model env id. A video world model never ends an episode by itself, so without
a limit an agent's first episode never finishes (no episode statistics, no resets to fresh start scenes), and the
picture drifts the longer a rollout runs; the bundled Crafter models learned from episodes of at most ~1150 frames.
Override it per env: ``gym.make(id, max_episode_steps=N)`` / ``gym.make_vec(id, n, max_episode_steps=N)``; ``None``
for the vector env (or ``-1`` for ``gym.make``) removes it."""


def _register(env_id: str, **kwargs) -> None:
    if env_id not in gymnasium.registry:
        gymnasium.register(id=env_id, **kwargs)


_register(
    "RLIR-MineWorld-v0",
    entry_point=_WORLD_MODEL_ENV,
    vector_entry_point=_WORLD_MODEL_VECTOR_ENV,
    kwargs={"checkpoint": "mineworld-300m-16f"},
    max_episode_steps=WORLD_MODEL_MAX_EPISODE_STEPS,
)
# The real game, as ground truth; Crafter's own `length` truncates episodes.
_register("RLIR-CrafterReal-v0", entry_point="rlir_env.crafter.env:CrafterEnv",
          vector_entry_point="rlir_env.crafter.env:CrafterVectorEnv")
# A next-frame diffusion world model: pass checkpoint=<an NFD .safetensors from `rlir train nfd`> (no default).
_register("RLIR-NFD-v0", entry_point=_WORLD_MODEL_ENV, vector_entry_point=_WORLD_MODEL_VECTOR_ENV,
          max_episode_steps=WORLD_MODEL_MAX_EPISODE_STEPS)
# The Crafter world model with Crafter's reward and death predicted from frames (rlir_env/dream/env.py explains the
# 1000-step default: the model learned from episodes of at most ~1150 frames).
_register(
    "RLIR-CrafterDream-v0",
    entry_point="rlir_env.dream.env:make_dream_env",
    vector_entry_point="rlir_env.dream.env:make_dream_vector_env",
    max_episode_steps=WORLD_MODEL_MAX_EPISODE_STEPS,
)
# Real frames of the game for Crafter models: the bundled scene pool (fresh worlds at other frame sizes).
register_scenes("crafter", "rlir_env.crafter.scenes:crafter_scenes", domain="crafter")
# The bundled world model trained on real Crafter; episodes start from real frames of the bundled scene pool.
_register(
    "RLIR-Crafter-v0",
    entry_point=_WORLD_MODEL_ENV,
    vector_entry_point=_WORLD_MODEL_VECTOR_ENV,
    kwargs={"checkpoint": "crafter-mineworld", "scenes": "crafter"},
    max_episode_steps=WORLD_MODEL_MAX_EPISODE_STEPS,
)
# The bundled next-frame diffusion model trained on the same recording (the paper's second paradigm).
_register(
    "RLIR-CrafterNFD-v0",
    entry_point=_WORLD_MODEL_ENV,
    vector_entry_point=_WORLD_MODEL_VECTOR_ENV,
    kwargs={"checkpoint": "crafter-nfd", "scenes": "crafter"},
    max_episode_steps=WORLD_MODEL_MAX_EPISODE_STEPS,
)

_EXPORTS = {
    "WorldModelEnv": "rlir_env.env",
    "WorldModelVectorEnv": "rlir_env.vector",
    "Scene": "rlir_env.scenes",
    **{name: "rlir_env.wrappers" for name in (
        "MineRLDictActions", "VectorMineRLDictActions", "NamedDiscreteActions", "VectorNamedDiscreteActions",
        "ActionRepeat", "ResizeFrames", "VectorResizeFrames", "preset_actions", "domain_of", "resize_frames",
    )},  # fmt: skip
    "SB3VecEnv": "rlir_env.sb3",
    "make_sb3_env": "rlir_env.sb3",
    "CrafterEnv": "rlir_env.crafter.env",
    "CrafterVectorEnv": "rlir_env.crafter.env",
    **{name: "rlir_env.dream.wrappers" for name in (
        "FrameReward", "FrameTermination", "VectorFrameReward", "VectorFrameTermination",
        "LearnedCrafterReward", "LearnedCrafterTermination",
    )},  # fmt: skip
}

__all__ = ["WORLD_MODEL_MAX_EPISODE_STEPS", "register_scenes", *sorted(_EXPORTS)]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
