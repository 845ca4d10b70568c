"""``WorldModelEnv``: one environment backed by a world model (a batch-1 :class:`WorldModelVectorEnv`).

All behaviour lives in the vector env so that single and batched envs cannot drift apart: ``WorldModelEnv(seed=s)``
produces exactly the rollout of env 0 of a vector env reset with ``seed=s`` on the same device.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from rlir_env.vector import WorldModelVectorEnv
from worldmodels.errors import ConfigError


class WorldModelEnv(gym.Env):
    """A Gymnasium env whose next frame comes from a world model.

    Takes the keyword arguments of :class:`~rlir_env.vector.WorldModelVectorEnv` (``checkpoint``, ``model``,
    ``device``, ``dtype``, ``decoding``, ``top_p``, ``context_frames``, ``max_episode_steps``,
    ``scenes``, ...). ``reset(options={"frames": ..., "actions": ...})`` starts from a given scene.
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, render_mode: str | None = None, **kwargs: Any):
        if render_mode not in (None, "rgb_array"):
            raise ConfigError(f"render_mode={render_mode!r} is not supported; use 'rgb_array' (or make(..., 'human'))")
        for key in ("num_envs", "autoreset_mode"):
            if key in kwargs:
                raise ConfigError(f"{key!r} is a vector-env option; use gym.make_vec(...) for batched envs")
        self.vector_env = WorldModelVectorEnv(1, render_mode="rgb_array", **kwargs)
        self.render_mode = render_mode
        self.observation_space = self.vector_env.single_observation_space
        self.action_space = self.vector_env.single_action_space
        self.metadata = dict(self.metadata, render_fps=self.vector_env.metadata["render_fps"])
        self._needs_reset = True

    @property
    def model(self):
        return self.vector_env.model

    @property
    def decode_stats(self) -> Any:
        """The world model's decoding counters (see :attr:`WorldModelVectorEnv.decode_stats`)."""
        return self.vector_env.decode_stats

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if options is not None and "frames" in options:
            options = dict(options, frames=np.asarray(options["frames"])[None])
            if options.get("actions") is not None:
                options["actions"] = np.asarray(options["actions"])[None]
        obs, _ = self.vector_env.reset(seed=None if seed is None else [seed], options=options)
        self._needs_reset = False
        return obs[0], {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._needs_reset:
            raise ConfigError("call reset() before step(), and again after an episode ends")
        obs, rewards, terminated, truncated, _ = self.vector_env.step(np.asarray(action)[None])
        self._needs_reset = bool(terminated[0] or truncated[0])
        return obs[0], float(rewards[0]), bool(terminated[0]), bool(truncated[0]), {}

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            return None
        frames = self.vector_env.render()
        return None if frames is None else frames[0]

    def close(self) -> None:
        self.vector_env.close()
