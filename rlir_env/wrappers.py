"""Composable wrappers: how agents and scripts speak to world-model envs.

* :class:`MineRLDictActions` / :class:`VectorMineRLDictActions` — act with the 24-key MineRL 1.0 dict.
* :class:`NamedDiscreteActions` / :class:`VectorNamedDiscreteActions` — a ``Discrete(n)`` of named macros (for DQN and
  simple agents), e.g. the Minecraft ``"basic"`` preset.
* :class:`ActionRepeat` — hold each action for ``k`` steps, summing rewards.
* :class:`ResizeFrames` / :class:`VectorResizeFrames` — observations at another size (``render()`` stays native).

Episode length is Gymnasium's ``TimeLimit`` for single envs (``gym.make(..., max_episode_steps=N)``); a vector env
truncates by itself (``max_episode_steps``) because its autoreset has to know which slots ended.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from gymnasium.vector import VectorActionWrapper, VectorEnv, VectorWrapper
from gymnasium.vector.utils import batch_space

from worldmodels.actions import get_domain, minecraft
from worldmodels.errors import ActionError, ConfigError


def _domain_of(env: gym.Env | VectorEnv) -> str:
    vector = getattr(env.unwrapped, "vector_env", env.unwrapped)
    domain = getattr(vector, "domain", None)
    if domain is None:
        raise ConfigError(f"{type(env.unwrapped).__name__} is not a world-model env (no action domain)")
    return domain.name


def _require_minecraft(env: gym.Env | VectorEnv, wrapper: str) -> None:
    if _domain_of(env) != "minecraft":
        raise ConfigError(f"{wrapper} needs a Minecraft world model; this env speaks {_domain_of(env)!r}")


class MineRLDictActions(gym.ActionWrapper):
    """Accept MineRL 1.0 dict actions (``worldmodels.actions.minecraft.ACTION_SPACE``).

    Buttons map to MineWorld's compact slots (both keys of a pair -> none; lowest hotbar wins) and the camera to the
    nearest of MineWorld's 21 mu-law bins per axis. ``inventory``, ``ESC`` and ``swapHands`` have no effect on
    MineWorld models.
    """

    def __init__(self, env: gym.Env):
        _require_minecraft(env, "MineRLDictActions")
        super().__init__(env)
        self.action_space = minecraft.ACTION_SPACE

    def action(self, action: Mapping[str, Any]) -> np.ndarray:
        return minecraft.to_compact(action)


class VectorMineRLDictActions(VectorActionWrapper):
    """Vector version of :class:`MineRLDictActions`: a dict of batched arrays, or a list of ``num_envs`` dicts."""

    def __init__(self, env: VectorEnv):
        _require_minecraft(env, "VectorMineRLDictActions")
        super().__init__(env)
        self.single_action_space = minecraft.ACTION_SPACE
        self.action_space = batch_space(minecraft.ACTION_SPACE, env.num_envs)

    def actions(self, actions: Any) -> np.ndarray:
        return minecraft.to_compact(actions)


def _turn(pitch: float = 0.0, yaw: float = 0.0) -> dict[str, Any]:
    return {"camera": [pitch, yaw]}


PRESETS: dict[str, dict[str, dict[str, dict[str, Any]]]] = {
    "minecraft": {
        # DreamerV3's flat Minecraft controls, extended with use/sneak/sprint; 15 degree turns land in MineWorld's
        # 13.67 degree bin (the nearest centre).
        "basic": {
            "noop": {},
            "attack": {"attack": 1},
            "use": {"use": 1},
            "forward": {"forward": 1},
            "back": {"back": 1},
            "left": {"left": 1},
            "right": {"right": 1},
            "jump_forward": {"jump": 1, "forward": 1},
            "sprint_forward": {"sprint": 1, "forward": 1},
            "sneak": {"sneak": 1},
            "look_up": _turn(pitch=-15.0),
            "look_down": _turn(pitch=15.0),
            "turn_left": _turn(yaw=-15.0),
            "turn_right": _turn(yaw=15.0),
        },
    },
}


def preset_actions(domain: str, preset: str) -> tuple[tuple[str, ...], np.ndarray]:
    """Names and compact actions of a named preset."""
    try:
        table = PRESETS[domain][preset]
    except KeyError:
        known = {d: sorted(p) for d, p in PRESETS.items()}
        raise ConfigError(f"no action preset {preset!r} for domain {domain!r}; known presets: {known}") from None
    if domain == "minecraft":
        compact = minecraft.to_compact([minecraft.noop() | overrides for overrides in table.values()])
    else:
        compact = np.array([overrides for overrides in table.values()], dtype=np.int64)
    return tuple(table), compact


class NamedDiscreteActions(gym.ActionWrapper):
    """A ``Discrete(n)`` action space of named macros; ``action_meanings()`` lists the names."""

    def __init__(self, env: gym.Env, preset: str = "basic"):
        super().__init__(env)
        self.names, self._compact = preset_actions(_domain_of(env), preset)
        self.action_space = gym.spaces.Discrete(len(self.names))

    def action_meanings(self) -> tuple[str, ...]:
        return self.names

    def action(self, action: Any) -> np.ndarray:
        index = int(action)
        if not 0 <= index < len(self.names):
            raise ActionError(f"action {action!r} is outside Discrete({len(self.names)}) ({', '.join(self.names)})")
        return self._compact[index]


class VectorNamedDiscreteActions(VectorActionWrapper):
    """Vector version of :class:`NamedDiscreteActions`."""

    def __init__(self, env: VectorEnv, preset: str = "basic"):
        super().__init__(env)
        self.names, self._compact = preset_actions(_domain_of(env), preset)
        self.single_action_space = gym.spaces.Discrete(len(self.names))
        self.action_space = batch_space(self.single_action_space, env.num_envs)

    def action_meanings(self) -> tuple[str, ...]:
        return self.names

    def actions(self, actions: Any) -> np.ndarray:
        index = np.asarray(actions, dtype=np.int64)
        if ((index < 0) | (index >= len(self.names))).any():
            raise ActionError(f"actions {index.tolist()} are outside Discrete({len(self.names)})")
        return self._compact[index]


class ActionRepeat(gym.Wrapper):
    """Repeat each action ``k`` times (summing rewards), stopping early when the episode ends."""

    def __init__(self, env: gym.Env, k: int):
        if k < 1:
            raise ConfigError(f"ActionRepeat needs k >= 1, got {k}")
        super().__init__(env)
        self.k = k

    def step(self, action: Any):
        total = 0.0
        for _ in range(self.k):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info


def domain_of(env: gym.Env | VectorEnv) -> str:
    """The action domain (``"minecraft"``, ``"crafter"``) of a world-model env, through any wrappers."""
    return get_domain(_domain_of(env)).name


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``uint8[..., H, W, 3]`` frames to ``size = (height, width)`` (antialiased bilinear, rounded to uint8)."""
    batch_shape = frames.shape[:-3]
    x = torch.from_numpy(np.ascontiguousarray(frames)).reshape(-1, *frames.shape[-3:]).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    x = x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return x.reshape(*batch_shape, *size, 3).numpy()


def _frame_size(size: tuple[int, int], wrapper: str) -> tuple[int, int]:
    if len(size) != 2 or any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1 for n in size):
        raise ConfigError(f"{wrapper} size must be (height, width) in pixels, got {size!r}")
    return int(size[0]), int(size[1])


class ResizeFrames(gym.ObservationWrapper):
    """Observations resized to ``size = (height, width)`` (antialiased bilinear); ``render()`` stays native.

    A policy trained at 64x64 acts in a 72x72 world model through ``ResizeFrames(env, (64, 64))``.
    """

    def __init__(self, env: gym.Env, size: tuple[int, int]):
        super().__init__(env)
        self.size = _frame_size(size, "ResizeFrames")
        self.observation_space = gym.spaces.Box(0, 255, (*self.size, 3), dtype=np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return resize_frames(observation, self.size)


class VectorResizeFrames(VectorWrapper):
    """Vector :class:`ResizeFrames`; in ``SAME_STEP`` autoreset the ``final_obs`` of ended slots are resized too."""

    def __init__(self, env: VectorEnv, size: tuple[int, int]):
        super().__init__(env)
        self.size = _frame_size(size, "VectorResizeFrames")
        self.single_observation_space = gym.spaces.Box(0, 255, (*self.size, 3), dtype=np.uint8)
        self.observation_space = batch_space(self.single_observation_space, env.num_envs)

    def reset(self, *, seed: Any = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        observations, infos = self.env.reset(seed=seed, options=options)
        return resize_frames(observations, self.size), infos

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        observations, rewards, terminated, truncated, infos = self.env.step(actions)
        if "final_obs" in infos:
            final = infos["final_obs"].copy()
            for i in np.flatnonzero(infos["_final_obs"]):
                final[i] = resize_frames(final[i], self.size)
            infos = {**infos, "final_obs": final}
        return resize_frames(observations, self.size), rewards, terminated, truncated, infos

