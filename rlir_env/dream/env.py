"""``RLIR-CrafterDream-v0``: the Crafter world model with Crafter's reward and death predicted from its frames.

``gym.make("RLIR-CrafterDream-v0")`` gives :func:`make_dream_env` (one environment), ``gym.make_vec(...)`` gives
:func:`make_dream_vector_env` (one batched model). Both are the world-model env (:mod:`rlir_env.env`,
:mod:`rlir_env.vector`) wrapped by :class:`~rlir_env.dream.wrappers.LearnedCrafterReward` and
:class:`~rlir_env.dream.wrappers.LearnedCrafterTermination` sharing one :class:`~rlir_env.dream.heads.CrafterHeads`.

Episodes start from real Crafter frames (``scenes``: the bundled pool, or a recording directory through
:class:`ShardScenes`) and end in a predicted death or after ``max_episode_steps`` (default
:data:`DREAM_MAX_EPISODE_STEPS`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

from rlir_env.dream.heads import load_heads
from rlir_env.dream.wrappers import (
    LearnedCrafterReward,
    LearnedCrafterTermination,
    VectorLearnedCrafterReward,
    VectorLearnedCrafterTermination,
)
from rlir_env.env import WorldModelEnv
from rlir_env.scenes import Scene
from rlir_env.vector import WorldModelVectorEnv
from worldmodels.data.shards import ShardDataset
from worldmodels.errors import ConfigError

__all__ = ["DREAM_MAX_EPISODE_STEPS", "ShardScenes", "make_dream_env", "make_dream_vector_env"]

DREAM_MAX_EPISODE_STEPS = 1000
"""Default truncation of dream episodes. Crafter's own limit is 10000 steps, but the world model learned from
recorded episodes of at most ~1150 frames (median 210) and its context holds 8 frames, so rollouts far longer than
that drift from anything it saw; every recorded achievement is first unlocked within the first few hundred steps
(median first-unlock steps 7-210). Truncation is not termination (PPO bootstraps the value there), so a shorter
horizon costs no return, and each restart puts the agent back on a real frame."""

DEFAULT_CHECKPOINT = "crafter-mineworld"


class ShardScenes:
    """Start scenes cut from recorded real trajectories (:class:`~worldmodels.data.shards.ShardDataset`).

    ``pool_size`` windows of ``context_frames`` frames are drawn once from ``seed`` and kept in memory, so a reset
    costs an index.

    Args:
        root: A recording directory (``rlir record crafter``).
        context_frames: Frames per scene.
        pool_size: Windows kept.
        seed: Seeds which windows are kept.
    """

    def __init__(self, root: str | Path, *, context_frames: int = 1, pool_size: int = 1024, seed: int = 0):
        if context_frames < 1 or pool_size < 1:
            raise ConfigError(f"ShardScenes needs context_frames >= 1 and pool_size >= 1, got {context_frames}, "
                              f"{pool_size}")  # fmt: skip
        dataset = ShardDataset(root, max_cached_shards=1)
        length = max(context_frames - 1, 1)
        index = dataset.sample_window_index(pool_size, length, np.random.default_rng(seed))
        self.frame_size = tuple(dataset.frame_shape[:2])
        self.frames = np.empty((pool_size, context_frames, *dataset.frame_shape), dtype=np.uint8)
        self.actions = np.empty((pool_size, context_frames - 1), dtype=np.int64)
        shard_of = np.searchsorted(np.cumsum([len(s.episode_lengths) for s in dataset.shards]), index[:, 0], "right")
        for i in np.argsort(shard_of, kind="stable"):  # one shard load per shard
            frames, actions = dataset.window(int(index[i, 0]), int(index[i, 1]), length)
            self.frames[i], self.actions[i] = frames[:context_frames], actions[: context_frames - 1]

    def sample(self, rng: np.random.Generator) -> Scene:
        k = int(rng.integers(len(self.frames)))
        return Scene(frames=self.frames[k], actions=self.actions[k])


def _scenes(scenes: Any, scene_frames: int) -> Any:
    if isinstance(scenes, (str, Path)) and (Path(scenes) / "manifest.json").is_file():
        return ShardScenes(scenes, context_frames=scene_frames)
    return scenes


def _model_kwargs(checkpoint: str | None, model: Any) -> dict[str, Any]:
    if model is not None:
        return {"model": model}
    return {"checkpoint": DEFAULT_CHECKPOINT if checkpoint is None else checkpoint}


def _check_crafter(domain: str) -> None:
    if domain != "crafter":
        raise ConfigError(f"RLIR-CrafterDream needs a Crafter world model, this one speaks {domain!r}; pass a "
                          "Crafter checkpoint (e.g. 'crafter-mineworld')")  # fmt: skip


def make_dream_env(
    *,
    checkpoint: str | None = None,
    model: Any = None,
    heads: Any = None,
    device: str = "cpu",
    scenes: Any = "crafter",
    scene_frames: int = 1,
    render_mode: str | None = None,
    **kwargs: Any,
) -> gym.Env:
    """One dream environment: :class:`~rlir_env.env.WorldModelEnv` + learned reward + learned termination.

    Args:
        checkpoint: World-model registry name or file (default ``"crafter-mineworld"``); ignored when ``model`` is
            given.
        model: An already built Crafter world model.
        heads: A heads file, a loaded :class:`~rlir_env.dream.heads.CrafterHeads`, or None (bundled heads).
        device: Where the model and the heads run.
        scenes: Start scenes: ``"crafter"`` (bundled pool of real frames), a recording directory, or anything
            :func:`rlir_env.scenes.resolve_scenes` takes.
        scene_frames: Real frames per start scene.
        render_mode: ``None`` or ``"rgb_array"``.
        kwargs: Further :class:`~rlir_env.vector.WorldModelVectorEnv` options (``decoding``, ``top_p``, ...).
            Truncation comes from ``gym.make(..., max_episode_steps=...)`` (registered default
            :data:`DREAM_MAX_EPISODE_STEPS`).
    """
    env = WorldModelEnv(render_mode=render_mode, device=device, scenes=_scenes(scenes, scene_frames),
                        scene_frames=scene_frames, **_model_kwargs(checkpoint, model), **kwargs)  # fmt: skip
    _check_crafter(env.vector_env.domain.name)
    loaded = load_heads(heads, device=device)
    return LearnedCrafterTermination(LearnedCrafterReward(env, loaded), loaded)


def make_dream_vector_env(
    num_envs: int = 1,
    *,
    checkpoint: str | None = None,
    model: Any = None,
    heads: Any = None,
    device: str = "cpu",
    scenes: Any = "crafter",
    scene_frames: int = 1,
    max_episode_steps: int | None = DREAM_MAX_EPISODE_STEPS,
    autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
    **kwargs: Any,
) -> VectorEnv:
    """``num_envs`` dream environments on one batched model (arguments as :func:`make_dream_env`, plus
    ``max_episode_steps`` and the Gymnasium ``autoreset_mode``; ``SAME_STEP`` for SB3)."""
    env = WorldModelVectorEnv(num_envs, device=device, scenes=_scenes(scenes, scene_frames),
                              scene_frames=scene_frames, max_episode_steps=max_episode_steps,
                              autoreset_mode=autoreset_mode, **_model_kwargs(checkpoint, model), **kwargs)  # fmt: skip
    _check_crafter(env.domain.name)
    loaded = load_heads(heads, device=device)
    return VectorLearnedCrafterTermination(VectorLearnedCrafterReward(env, loaded), loaded)
