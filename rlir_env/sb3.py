"""A stable-baselines3 ``VecEnv`` over the native batched world-model env.

SB3 does not accept Gymnasium vector envs, and wrapping ``num_envs`` single envs in ``DummyVecEnv`` would load one
model per env. :class:`SB3VecEnv` adapts one :class:`~rlir_env.vector.WorldModelVectorEnv` (same-step autoreset,
``terminal_observation`` and ``TimeLimit.truncated`` in the infos, as SB3 expects), so
``PPO("CnnPolicy", make_sb3_env("RLIR-Crafter-v0", n_envs=16))`` trains on one batched model, and ``VecMonitor``
(on by default) gives SB3 its episode statistics.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from worldmodels.errors import ConfigError


class SB3VecEnv(VecEnv):
    """Expose a Gymnasium vector env with ``SAME_STEP`` autoreset (wrappers allowed) as an SB3 ``VecEnv``."""

    def __init__(self, venv: VectorEnv):
        if venv.metadata.get("autoreset_mode") != AutoresetMode.SAME_STEP:
            raise ConfigError(
                "SB3VecEnv needs a vector env with autoreset_mode=SAME_STEP (SB3 resets finished envs in the same "
                "step); create it with gym.make_vec(..., autoreset_mode='SameStep') or "
                "use make_sb3_env()"
            )
        self.venv = venv
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self.render_mode = getattr(venv, "render_mode", None)
        self._actions: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        seeds = [s for s in self._seeds] if any(s is not None for s in self._seeds) else None
        obs, infos = self.venv.reset(seed=seeds, options=self._options[0] if self._options[0] else None)
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self):
        obs, rewards, terminated, truncated, infos = self.venv.step(self._actions)
        dones = terminated | truncated
        out_infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if dones.any():
            final_obs = infos.get("final_obs")
            for i in np.flatnonzero(dones):
                out_infos[i]["terminal_observation"] = final_obs[i]
                out_infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        return obs, rewards.astype(np.float32), dones, out_infos

    def close(self) -> None:
        self.venv.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        frames = self.venv.render()
        return list(frames) if frames is not None else [None] * self.num_envs

    # The batched env has no per-env sub-objects; attributes are shared by all slots.
    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self.venv, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def _get_indices(self, indices: VecEnvIndices) -> Iterable[int]:
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, int):
            return [indices]
        return indices


def make_sb3_env(
    env_id: str, n_envs: int = 1, *, seed: int | None = None, monitor: bool = True, **kwargs: Any
) -> VecEnv:
    """A stable-baselines3 ``VecEnv`` of ``n_envs`` copies of ``env_id``, wrapped in ``VecMonitor``.

    Envs registered with a ``vector_entry_point`` (world models, the real game) become one natively batched env with
    same-step autoreset (:class:`SB3VecEnv`: one model for all slots). Ids registered without
    one become SB3's own ``DummyVecEnv`` of ``n_envs`` single envs, which is what SB3 would build for them.

    Args:
        env_id: a registered Gymnasium id (``import rlir_env`` registers the ``RLIR-*`` ids).
        n_envs: environments stepped together.
        seed: env ``i`` is reset with ``seed + i`` (None: unseeded).
        monitor: wrap in ``VecMonitor`` so SB3 logs ``ep_rew_mean`` / ``ep_len_mean`` (False: the bare env, e.g.
            to add your own ``VecMonitor(filename=...)``).
        kwargs: passed to the env (``gym.make_vec`` / ``gym.make``), e.g. ``checkpoint``, ``max_episode_steps``.
    """
    from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

    try:
        spec = gym.spec(env_id)
    except gym.error.Error as error:
        raise ConfigError(f"unknown env id {env_id!r} ({error}); `import rlir_env` registers the RLIR-* ids") from None
    if n_envs < 1:
        raise ConfigError(f"n_envs must be >= 1, got {n_envs}")
    env: VecEnv
    if spec.vector_entry_point is not None:
        venv = gym.make_vec(
            env_id, num_envs=n_envs, vectorization_mode="vector_entry_point", autoreset_mode=AutoresetMode.SAME_STEP,
            **kwargs,
        )  # fmt: skip
        env = SB3VecEnv(venv)
    else:
        env = DummyVecEnv([lambda: gym.make(env_id, **kwargs) for _ in range(n_envs)])
    if seed is not None:
        env.seed(seed)
    return VecMonitor(env) if monitor else env
