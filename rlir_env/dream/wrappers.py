"""Rewards and terminations read from frames: wrappers for any frame classifier, and the learned Crafter ones.

A *frame function* is a callable ``fn(frames, prev_frames)`` taking two ``uint8[B, H, W, 3]`` batches (each
environment's new frame and the frame before it) and returning one value per environment: ``float[B]`` rewards for
:class:`FrameReward`, ``bool[B]`` for :class:`FrameTermination`. A stateful function (one that remembers something
per environment, like :class:`~rlir_env.dream.heads.CrafterReward`) may define ``reset(env_ids)``, called whenever
those environments start an episode; one that only reads frames of one size may define ``frame_size = (H, W)``,
checked against the env when the wrapper is built. The single-env wrappers call it with ``B = 1``.

Vector versions (:class:`VectorFrameReward`, :class:`VectorFrameTermination`) follow the wrapped env's autoreset mode:

* ``SAME_STEP``: an environment that ends is scored on its final frame (``info["final_obs"]``); when the learned
  termination ends an environment the wrapped env did not end, the wrapper resets it at once
  (``reset(options={"reset_mask": ...})``) and reports the final frame in ``info["final_obs"]``, as SB3 expects.
* ``NEXT_STEP``: the step that returns an environment's reset frame scores nothing (reward 0, not terminated); an
  environment the learned termination ended is reset on its next step (the action sent for it is discarded).

Both wrappers keep the wrapped env's value in ``info`` (``env_reward``, ``env_terminated``) so that, on the real
game, the learned values can be compared with the true ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.error import ResetNeeded
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper

from rlir_env.dream.heads import CrafterDeath, CrafterReward, load_heads
from worldmodels.errors import ConfigError, FrameError, NumericalError

__all__ = [
    "FrameFunction",
    "FrameReward",
    "FrameTermination",
    "LearnedCrafterReward",
    "LearnedCrafterTermination",
    "VectorFrameReward",
    "VectorFrameTermination",
    "VectorLearnedCrafterReward",
    "VectorLearnedCrafterTermination",
]

FrameFunction = Callable[[np.ndarray, np.ndarray], Any]
"""``fn(frames uint8[B, H, W, 3], prev_frames uint8[B, H, W, 3]) -> float[B] or bool[B]`` (see the module doc)."""


# -- checks -----------------------------------------------------------------------------------------------------------


def _describe(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def _frame_size(space: gym.Space, wrapper: str) -> tuple[int, int]:
    ok = isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3
    ok = ok and space.shape[-1] == 3
    if not ok:
        raise FrameError(
            f"{wrapper} reads frames, so the env's observations must be a uint8 Box of shape (H, W, 3), got {space}; "
            "apply it directly to the frame env, before frame stacking, resizing or dict wrappers"
        )
    return int(space.shape[0]), int(space.shape[1])


def _check_fn(fn: Any, size: tuple[int, int], wrapper: str) -> None:
    if not callable(fn):
        raise ConfigError(f"{wrapper} needs a callable fn(frames, prev_frames), got {fn!r}")
    wanted = getattr(fn, "frame_size", None)
    if wanted is not None and tuple(wanted) != tuple(size):
        raise FrameError(
            f"{wrapper}: {_describe(fn)} reads {tuple(wanted)[0]} x {tuple(wanted)[1]} frames but the env gives "
            f"{size[0]} x {size[1]}; make the env at {tuple(wanted)[0]} x {tuple(wanted)[1]} (CrafterEnv(size=...), "
            "the ResizeFrames wrapper) or use a classifier trained at the env's size"
        )


def _check_rewards(values: Any, n: int, fn: Any, wrapper: str) -> np.ndarray:
    array = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values)
    if array.shape != (n,) or array.dtype.kind != "f":
        raise ConfigError(
            f"{wrapper}: {_describe(fn)} returned {array.dtype}{list(array.shape)} for {n} frame(s); return a float "
            f"array of shape ({n},), one reward per environment (e.g. np.asarray(r, dtype=np.float32).reshape({n}))"
        )
    bad = ~np.isfinite(array)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise NumericalError(
            f"{wrapper}: {_describe(fn)} returned reward {array[i]} for env {i} (rewards {array.tolist()}); return "
            "finite floats (check the classifier's weights and inputs for NaN / inf)"
        )
    return array.astype(np.float64)


def _check_terminations(values: Any, n: int, fn: Any, wrapper: str) -> np.ndarray:
    array = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values)
    if array.shape != (n,) or array.dtype != np.bool_:
        hint = " (threshold probabilities, e.g. p > 0.5)" if array.dtype.kind == "f" else ""
        raise ConfigError(
            f"{wrapper}: {_describe(fn)} returned {array.dtype}{list(array.shape)} for {n} frame(s); return a bool "
            f"array of shape ({n},), one termination flag per environment{hint}"
        )
    return array


def _reset_fn(fn: Any, env_ids: np.ndarray) -> None:
    reset = getattr(fn, "reset", None)
    if callable(reset) and len(env_ids):
        reset(np.asarray(env_ids, dtype=np.int64))


def _frames(obs: Any) -> np.ndarray:
    return np.array(obs, dtype=np.uint8, copy=True)


# -- single env -------------------------------------------------------------------------------------------------------


class FrameReward(gym.Wrapper):
    """Replace the reward with ``fn(frame, prev_frame)`` (the wrapped env's reward goes to ``info["env_reward"]``).

    Args:
        env: An env whose observations are ``uint8[H, W, 3]`` frames.
        fn: A frame function returning ``float[1]`` (see the module docstring).
    """

    def __init__(self, env: gym.Env, fn: FrameFunction):
        super().__init__(env)
        _check_fn(fn, _frame_size(env.observation_space, type(self).__name__), type(self).__name__)
        self.fn = fn
        self._prev: np.ndarray | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._prev = _frames(obs)
        _reset_fn(self.fn, np.array([0]))
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        if self._prev is None:
            raise ResetNeeded(f"{type(self).__name__}.step called before reset(); call env.reset(seed=...) first")
        obs, reward, terminated, truncated, info = self.env.step(action)
        frame = _frames(obs)
        value = _check_rewards(self.fn(frame[None], self._prev[None]), 1, self.fn, type(self).__name__)[0]
        self._prev = frame
        return obs, float(value), terminated, truncated, {**info, "env_reward": reward}


class FrameTermination(gym.Wrapper):
    """End the episode (``terminated``) when ``fn(frame, prev_frame)`` says so, or when the wrapped env does.

    ``info["env_terminated"]`` holds the wrapped env's own flag. Stepping after a learned termination raises
    ``ResetNeeded``.

    Args:
        env: An env whose observations are ``uint8[H, W, 3]`` frames.
        fn: A frame function returning ``bool[1]`` (see the module docstring).
    """

    def __init__(self, env: gym.Env, fn: FrameFunction):
        super().__init__(env)
        _check_fn(fn, _frame_size(env.observation_space, type(self).__name__), type(self).__name__)
        self.fn = fn
        self._prev: np.ndarray | None = None
        self._ended = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._prev = _frames(obs)
        self._ended = False
        _reset_fn(self.fn, np.array([0]))
        return obs, info

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict]:
        if self._prev is None or self._ended:
            when = "before reset()" if self._prev is None else "after the episode ended"
            raise ResetNeeded(f"{type(self).__name__}.step called {when}; call env.reset()")
        obs, reward, terminated, truncated, info = self.env.step(action)
        frame = _frames(obs)
        ended = bool(_check_terminations(self.fn(frame[None], self._prev[None]), 1, self.fn, type(self).__name__)[0])
        self._prev = frame
        self._ended = ended
        # As in Crafter, a death on the step that also hits the time limit counts as termination only.
        return obs, reward, bool(terminated) or ended, bool(truncated) and not ended, {
            **info, "env_terminated": bool(terminated)}  # fmt: skip


# -- vector envs ------------------------------------------------------------------------------------------------------


class _VectorFrameWrapper(VectorWrapper):
    """Tracks each environment's previous frame and which environments start an episode, in either autoreset mode."""

    def __init__(self, env: VectorEnv, fn: FrameFunction):
        super().__init__(env)
        name = type(self).__name__
        mode = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP):
            raise ConfigError(f"{name} supports autoreset modes NEXT_STEP and SAME_STEP, the env uses {mode}")
        _check_fn(fn, _frame_size(env.single_observation_space, name), name)
        self.fn = fn
        self.same_step = mode == AutoresetMode.SAME_STEP
        self._prev: np.ndarray | None = None
        self._autoreset = np.zeros(env.num_envs, dtype=bool)  # NEXT_STEP: envs whose next obs is a reset frame

    def reset(self, *, seed: Any = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        mask = None if options is None else options.get("reset_mask")
        obs, info = self.env.reset(seed=seed, options=None if options is None else dict(options))
        frames = _frames(obs)
        if mask is None or self._prev is None:
            self._prev = frames
            ids = np.arange(self.num_envs)
        else:
            mask = np.asarray(mask, dtype=bool)
            self._prev[mask] = frames[mask]
            ids = np.flatnonzero(mask)
        self._autoreset[ids] = False
        _reset_fn(self.fn, ids)
        return obs, info

    def _require_reset(self) -> np.ndarray:
        if self._prev is None:
            raise ResetNeeded(f"{type(self).__name__}.step called before reset(); call envs.reset(seed=...) first")
        return self._prev

    @staticmethod
    def _final_frames(obs: np.ndarray, done: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """SAME_STEP: each environment's newest frame of its episode (the final frame for those that ended)."""
        frames = _frames(obs)
        for i in np.flatnonzero(done):
            frames[i] = info["final_obs"][i]
        return frames


class VectorFrameReward(_VectorFrameWrapper):
    """Vector :class:`FrameReward`: one ``fn`` call per step on all ``num_envs`` frames (``float[num_envs]``).

    Steps that return a ``NEXT_STEP`` reset frame keep the wrapped env's reward (0). ``info["env_reward"]`` holds
    the wrapped env's rewards.
    """

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        prev = self._require_reset()
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        done = np.asarray(terminated) | np.asarray(truncated)
        if self.same_step:
            frames, scored, starts = self._final_frames(obs, done, info), np.ones(self.num_envs, bool), done
        else:
            frames, scored, starts = _frames(obs), ~self._autoreset, self._autoreset.copy()
            self._autoreset = done.copy()
        values = _check_rewards(self.fn(frames, prev), self.num_envs, self.fn, type(self).__name__)
        _reset_fn(self.fn, np.flatnonzero(starts))
        self._prev = _frames(obs)
        info = {**info, "env_reward": np.asarray(rewards), "_env_reward": np.ones(self.num_envs, dtype=bool)}
        return obs, np.where(scored, values, rewards), terminated, truncated, info


class VectorFrameTermination(_VectorFrameWrapper):
    """Vector :class:`FrameTermination`: ``terminated |= fn(frames, prev_frames)`` for all ``num_envs`` at once.

    Environments it ends are reset by the wrapper (``reset_mask``): at once with ``SAME_STEP`` autoreset (final frame
    in ``info["final_obs"]``), on their next step with ``NEXT_STEP``. ``info["env_terminated"]`` holds the wrapped
    env's own flags.
    """

    def __init__(self, env: VectorEnv, fn: FrameFunction):
        super().__init__(env, fn)
        self._pending = np.zeros(env.num_envs, dtype=bool)  # NEXT_STEP: ended by us, reset on the next step

    def reset(self, *, seed: Any = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        mask = None if options is None else options.get("reset_mask")
        if mask is None:
            self._pending[:] = False
        else:
            self._pending[np.asarray(mask, dtype=bool)] = False
        return super().reset(seed=seed, options=options)

    def step(self, actions: Any) -> tuple[Any, Any, np.ndarray, np.ndarray, dict]:
        prev = self._require_reset()
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        obs, rewards = _frames(obs), np.array(rewards, copy=True)
        terminated, truncated = np.array(terminated, dtype=bool), np.array(truncated, dtype=bool)
        env_terminated = terminated.copy()
        name = type(self).__name__
        if self.same_step:
            done = terminated | truncated
            ended = _check_terminations(self.fn(self._final_frames(obs, done, info), prev), self.num_envs, self.fn,
                                        name)  # fmt: skip
            new = ended & ~done
            _reset_fn(self.fn, np.flatnonzero(done))
            if new.any():
                final_frames = obs[new].copy()
                reset_obs, _ = self.env.reset(options={"reset_mask": new})
                obs[new] = np.asarray(reset_obs)[new]
                info = dict(info)
                final_obs = info.get("final_obs")
                if final_obs is None:
                    final_obs = np.empty(self.num_envs, dtype=object)
                else:
                    final_obs = np.array(final_obs, dtype=object, copy=True)
                for k, i in enumerate(np.flatnonzero(new)):
                    final_obs[i] = final_frames[k]
                info["final_obs"], info["_final_obs"] = final_obs, done | new
                info.setdefault("final_info", {})
                info["_final_info"] = done | new
                _reset_fn(self.fn, np.flatnonzero(new))
        else:
            pending, fresh = self._pending.copy(), self._autoreset.copy()
            if pending.any():  # ended by us last step: start over now; the frame just generated is discarded
                reset_obs, _ = self.env.reset(options={"reset_mask": pending})
                obs[pending] = np.asarray(reset_obs)[pending]
                rewards[pending], terminated[pending], truncated[pending] = 0, False, False
                env_terminated[pending] = False
            scored = ~(pending | fresh)
            ended = _check_terminations(self.fn(obs, prev), self.num_envs, self.fn, name) & scored
            _reset_fn(self.fn, np.flatnonzero(pending | fresh))
            self._autoreset = (terminated | truncated) & ~pending  # the wrapped env resets these itself
            self._pending = ended & ~(terminated | truncated)
        # As in Crafter, a death on the step that also hits the time limit counts as termination only.
        truncated &= ~ended
        terminated |= ended
        self._prev = obs.copy()
        info = {**info, "env_terminated": env_terminated, "_env_terminated": np.ones(self.num_envs, dtype=bool)}
        return obs, rewards, terminated, truncated, info


# -- learned Crafter reward and termination -----------------------------------------------------------------------


def _crafter_heads(heads: Any, device: str) -> Any:
    return load_heads(heads, device=device)


class LearnedCrafterReward(FrameReward):
    """Crafter's reward predicted by :class:`~rlir_env.dream.heads.CrafterHeads` (unlock bonus + health change).

    Args:
        env: A Crafter frame env (world model or the real game) at the heads' frame size.
        heads: A heads file, a loaded :class:`CrafterHeads`, or None for the bundled heads.
        device: Where the heads run.
    """

    def __init__(self, env: gym.Env, heads: Any = None, *, device: str = "cpu"):
        super().__init__(env, CrafterReward(_crafter_heads(heads, device)))


class LearnedCrafterTermination(FrameTermination):
    """Crafter's death (health 0) predicted by :class:`~rlir_env.dream.heads.CrafterHeads`; arguments as
    :class:`LearnedCrafterReward`."""

    def __init__(self, env: gym.Env, heads: Any = None, *, device: str = "cpu"):
        super().__init__(env, CrafterDeath(_crafter_heads(heads, device)))


class VectorLearnedCrafterReward(VectorFrameReward):
    """Vector :class:`LearnedCrafterReward` (one heads call per step for all environments)."""

    def __init__(self, env: VectorEnv, heads: Any = None, *, device: str = "cpu"):
        super().__init__(env, CrafterReward(_crafter_heads(heads, device)))


class VectorLearnedCrafterTermination(VectorFrameTermination):
    """Vector :class:`LearnedCrafterTermination`."""

    def __init__(self, env: VectorEnv, heads: Any = None, *, device: str = "cpu"):
        super().__init__(env, CrafterDeath(_crafter_heads(heads, device)))
