"""Train agents inside the learned simulator (or the real game) and score them in the real game.

:func:`train_agent` is one recipe for both worlds, so the sim-to-real comparison differs only in where the agent
learns:

1. the training env is ``gym.make_vec(world, num_envs, autoreset_mode=SAME_STEP)`` adapted for stable-baselines3 by
   :class:`~rlir_env.sb3.SB3VecEnv` (one batched world model for ``RLIR-CrafterDream-v0``, a ``SyncVectorEnv`` of
   real games for ``RLIR-CrafterReal-v0``, both at 72 x 72), with ``VecMonitor`` episode statistics and optional
   ``VecFrameStack``;
2. PPO with a ``CnnPolicy`` whose features extractor is :class:`CrafterCNN` (one stride-``cell`` convolution per
   Crafter tile, two 3x3 convolutions over the 9 x 9 tile grid: at 72 px 0.39M parameters and 5.4M multiply-adds
   against ``NatureCNN``'s 0.89M and 5.1M, with its first layer aligned to Crafter's tiles) or SB3's ``NatureCNN``
   (needs frames of at least 36 x 36);
3. every ``eval_every`` env steps and at the end, :func:`evaluate_policy` plays ``eval_episodes`` full episodes of
   the real game ``RLIR-CrafterReal-v0`` and reports the official Crafter score (geometric mean of achievement
   success rates, :func:`rlir_env.crafter.crafter_score`), the return and the success rates; the policy is
   checkpointed at each evaluation;
4. TensorBoard logs (SB3's and ``eval/*``), the final policy (SB3 zip) and a JSON summary (settings, evaluations,
   env steps per second while collecting, wall time, machine) go to ``out``.

Evaluation samples actions from the policy with its own seeded ``torch.Generator`` (``deterministic=True`` takes
the most probable action), so a policy, a seed and an episode count give the same score on the same machine.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from rlir_env.crafter.env import ACHIEVEMENTS, CrafterEnv
from rlir_env.crafter.score import crafter_score, success_rates
from rlir_env.sb3 import SB3VecEnv
from worldmodels.errors import ConfigError, MissingFileError
from worldmodels.runtime.files import write_json
from worldmodels.training.common import machine_info
from worldmodels.training.report import check_report_to

__all__ = [
    "DREAM_WORLD",
    "EXTRACTORS",
    "REAL_WORLD",
    "CrafterCNN",
    "PPO_DEFAULTS",
    "evaluate_policy",
    "load_policy",
    "make_training_env",
    "train_agent",
]

DREAM_WORLD = "RLIR-CrafterDream-v0"
REAL_WORLD = "RLIR-CrafterReal-v0"
FRAME_SIZE = 72
"""Frames the agent sees in both worlds: the bundled world model's native size."""
EXTRACTORS = ("crafter", "nature")
PPO_DEFAULTS: dict[str, Any] = {
    "n_steps": 256, "batch_size": 256, "n_epochs": 4, "learning_rate": 3e-4, "gamma": 0.99, "gae_lambda": 0.95,
    "clip_range": 0.2, "ent_coef": 0.01, "vf_coef": 0.5, "max_grad_norm": 0.5,
}  # fmt: skip
"""PPO settings of the recipe (SB3 names); ``n_steps`` is per environment."""
_NATURE_MIN_SIZE = 36  # NatureCNN's 8/4, 4/2, 3/1 convolutions need at least 36 x 36 input


class CrafterCNN(BaseFeaturesExtractor):
    """Features of Crafter frames: a stride-``cell`` convolution embeds each tile, 3x3 convolutions mix neighbouring
    tiles, a 1x1 convolution narrows them before the linear layer.

    SB3 builds it as ``features_extractor_class``; observations are channel-first ``[B, 3 * stack, H, W]`` in
    [0, 1] (SB3 transposes and scales them).

    Args:
        observation_space: Channel-first image space; ``H == W`` and a multiple of ``grid``.
        features_dim: Output features.
        grid: Tiles per side (Crafter's 9 x 9 view).
    """

    def __init__(self, observation_space: gym.spaces.Box, features_dim: int = 256, grid: int = 9):
        channels, height, width = observation_space.shape
        if height != width or height % grid:
            raise ConfigError(
                f"CrafterCNN needs square frames made of {grid} x {grid} Crafter tiles, got {height} x {width}; use "
                "72 x 72 (or 36 x 36) frames, or extractor='nature'"
            )
        super().__init__(observation_space, features_dim)
        cell = height // grid
        self.net = nn.Sequential(
            nn.Conv2d(channels, 32, cell, stride=cell), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, 16, 1), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(16 * grid * grid, features_dim), nn.ReLU(),
        )  # fmt: skip

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.net(observations)


# -- environments -----------------------------------------------------------------------------------------------------


def make_training_env(
    world: str, num_envs: int, *, seed: int = 0, frame_stack: int = 1, env_kwargs: Mapping[str, Any] | None = None
):
    """The SB3 ``VecEnv`` the recipe trains on: ``world``'s native vector env (or a ``SyncVectorEnv`` when it has
    none) with ``SAME_STEP`` autoreset, :class:`~rlir_env.sb3.SB3VecEnv`, ``VecMonitor`` and ``VecFrameStack``.

    ``env_kwargs`` go to ``gym.make_vec``; the real game defaults to ``size=72``.
    """
    import rlir_env  # noqa: F401  (registers the ids)
    from gymnasium.vector import AutoresetMode
    from stable_baselines3.common.vec_env import VecFrameStack, VecMonitor

    if num_envs < 1 or frame_stack < 1:
        raise ConfigError(f"num_envs and frame_stack must be >= 1, got {num_envs} and {frame_stack}")
    try:
        spec = gym.spec(world)
    except gym.error.Error as error:
        raise ConfigError(f"unknown world {world!r} ({error}); use {DREAM_WORLD} or {REAL_WORLD}") from None
    kwargs = dict(env_kwargs or {})
    if world == REAL_WORLD:
        kwargs.setdefault("size", FRAME_SIZE)
    if spec.vector_entry_point is not None:
        venv = gym.make_vec(world, num_envs=num_envs, vectorization_mode="vector_entry_point",
                            autoreset_mode=AutoresetMode.SAME_STEP, **kwargs)  # fmt: skip
    else:
        venv = gym.make_vec(world, num_envs=num_envs, vectorization_mode="sync",
                            vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP}, **kwargs)  # fmt: skip
    env = SB3VecEnv(venv)
    env.seed(seed)
    env = VecMonitor(env)
    return VecFrameStack(env, frame_stack) if frame_stack > 1 else env


# -- evaluation in the real game --------------------------------------------------------------------------------------


def load_policy(policy: Any, *, device: str = "cpu"):
    """An SB3 PPO model from a ``.zip`` path (or the model itself). SB3 zips hold pickled settings: load only
    policies you trained or trust."""
    from stable_baselines3 import PPO

    if not isinstance(policy, (str, Path)):
        return policy
    path = Path(policy)
    if not path.is_file():
        raise MissingFileError(f"no policy at {str(path)!r}; pass the .zip written by `rlir agents train`")
    return PPO.load(str(path), device=device)


def _policy_kwargs(extractor: str) -> dict[str, Any]:
    if extractor not in EXTRACTORS:
        raise ConfigError(f"unknown features extractor {extractor!r}; choose one of {', '.join(EXTRACTORS)}")
    if extractor == "crafter":
        return {"features_extractor_class": CrafterCNN, "features_extractor_kwargs": {"features_dim": 256}}
    from stable_baselines3.common.torch_layers import NatureCNN

    return {"features_extractor_class": NatureCNN, "features_extractor_kwargs": {"features_dim": 512}}


def _policy_frame_shape(model: Any) -> tuple[int, int, int]:
    """``(height, width, channels)`` of the observations a policy takes (SB3 keeps images channel-first)."""
    from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first

    space = model.observation_space
    if not is_image_space(space, check_channels=False):
        raise ConfigError(f"the policy takes observations {space}, not images; it is not a Crafter frame policy")
    if is_image_space_channels_first(space):
        channels, height, width = space.shape
        return height, width, channels
    return tuple(space.shape)


def evaluate_policy(
    policy: Any,
    *,
    episodes: int = 10,
    seed: int = 0,
    max_steps: int | None = None,
    deterministic: bool = False,
    parallel: int = 8,
    frame_stack: int | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Play ``episodes`` episodes of the real game with ``policy`` and score them.

    Args:
        policy: An SB3 policy ``.zip`` / model, or ``"random"`` (uniform over the 17 actions).
        episodes: Episodes played (episode ``j`` draws its world and its actions from ``SeedSequence(seed)``'s child
            ``j``, so the first ``n`` episodes are the same whatever the count).
        seed: Seeds the worlds and the action sampling.
        max_steps: Crafter's episode ``length`` (default 10000, the official setting; a shorter one truncates).
        deterministic: Take the most probable action instead of sampling.
        parallel: Episodes played in lockstep (one batched policy call per step).
        frame_stack: Frames stacked per observation (default: read from the policy's channels).
        env_kwargs: Further ``CrafterEnv`` options; ``size`` defaults to the policy's frame size.
        device: Where the policy runs.

    Returns:
        ``crafter_score`` (percent), ``success_rates`` (percent per achievement), ``return_mean`` / ``return_std``,
        ``length_mean``, per-episode ``episodes`` (return, length, achievements unlocked), ``env_steps`` and
        ``steps_per_s``.

    Raises:
        ConfigError: the policy's observations do not match the env's frames (size or frame stack).
    """
    if episodes < 1 or parallel < 1:
        raise ConfigError(f"episodes and parallel must be >= 1, got {episodes} and {parallel}")
    random_policy = isinstance(policy, str) and policy == "random"
    model = None if random_policy else load_policy(policy, device=device)
    kwargs = dict(env_kwargs or {})
    if model is not None:
        height, width, channels = _policy_frame_shape(model)
        kwargs.setdefault("size", height)
        stack = channels // 3 if frame_stack is None else frame_stack
    else:
        kwargs.setdefault("size", FRAME_SIZE)
        stack = 1 if frame_stack is None else frame_stack
    if max_steps is not None:
        kwargs["length"] = max_steps
    probe = CrafterEnv(**kwargs)
    env_shape = (*probe.observation_space.shape[:2], 3 * stack)
    if model is not None and env_shape != (height, width, channels):
        raise ConfigError(
            f"the policy takes {height} x {width} x {channels} observations but the real game gives {env_shape[0]} x "
            f"{env_shape[1]} frames x {stack} stacked = {env_shape}; evaluate at size={height} with frame_stack="
            f"{channels // 3} (the policy's training settings)"
        )
    # Episode j has its own world seed and action-sampling stream (SeedSequence child j), so neither how many
    # episodes are played nor how many run in lockstep (parallel) changes any episode.
    world_seeds, action_seeds = np.stack(
        [child.generate_state(2, np.uint32) for child in np.random.SeedSequence(seed).spawn(episodes)], axis=1
    )
    results: list[dict[str, Any]] = []
    began = time.perf_counter()
    env_steps = 0
    envs = [probe] + [CrafterEnv(**kwargs) for _ in range(min(parallel, episodes) - 1)]
    for first in range(0, episodes, len(envs)):
        batch = list(range(first, min(first + len(envs), episodes)))
        frames = np.stack([envs[k].reset(seed=int(world_seeds[j]))[0] for k, j in enumerate(batch)])
        generators = [torch.Generator().manual_seed(int(action_seeds[j])) for j in batch]
        rngs = [np.random.default_rng(int(action_seeds[j])) for j in batch]
        stacked = np.zeros((len(batch), *frames.shape[1:3], 3 * stack), dtype=np.uint8)
        stacked[..., -3:] = frames  # as VecFrameStack: zeros, newest frame last
        alive = np.ones(len(batch), dtype=bool)
        returns = np.zeros(len(batch))
        lengths = np.zeros(len(batch), dtype=np.int64)
        taken: list[list[int]] = [[] for _ in batch]
        final: list[dict[str, int] | None] = [None] * len(batch)
        while alive.any():
            active = np.flatnonzero(alive)
            if model is None:
                actions = [int(rngs[k].integers(0, 17)) for k in active]
            else:
                actions = _policy_actions(model, stacked[active], deterministic, [generators[k] for k in active])
            for a, k in zip(actions, active):
                obs, reward, terminated, truncated, info = envs[k].step(int(a))
                taken[k].append(int(a))
                returns[k] += reward
                lengths[k] += 1
                env_steps += 1
                stacked[k] = np.roll(stacked[k], -3, axis=-1)
                stacked[k, ..., -3:] = obs
                if terminated or truncated:
                    alive[k] = False
                    final[k] = dict(info["achievements"])
        for k, j in enumerate(batch):
            results.append({"episode": j, "return": float(returns[k]), "length": int(lengths[k]),
                            "unlocked": sorted(name for name, n in final[k].items() if n > 0),
                            "actions_sha256": hashlib.sha256(np.array(taken[k], np.int8).tobytes()).hexdigest(),
                            "achievements": final[k]})  # fmt: skip
    seconds = time.perf_counter() - began
    rates = success_rates([r["achievements"] for r in results], ACHIEVEMENTS)
    returns_all = np.array([r["return"] for r in results])
    return {
        "policy": "random" if random_policy else str(policy) if isinstance(policy, (str, Path)) else "model",
        "episodes": len(results),
        "seed": seed,
        "deterministic": deterministic,
        "frame_size": int(kwargs["size"]),
        "frame_stack": stack,
        "max_steps": probe.length,
        "crafter_score": float(crafter_score(list(rates.values()))),
        "success_rates": rates,
        "return_mean": float(returns_all.mean()),
        "return_std": float(returns_all.std(ddof=1)) if len(results) > 1 else 0.0,
        "length_mean": float(np.mean([r["length"] for r in results])),
        "env_steps": env_steps,
        "steps_per_s": env_steps / seconds if seconds > 0 else None,
        "episode_results": [{k: v for k, v in r.items() if k != "achievements"} for r in results],
    }


@torch.no_grad()
def _policy_actions(model: Any, obs: np.ndarray, deterministic: bool, generators: list[torch.Generator]) -> list[int]:
    model.policy.set_training_mode(False)
    tensor, _ = model.policy.obs_to_tensor(obs)
    probs = model.policy.get_distribution(tensor).distribution.probs.cpu()
    if deterministic:
        return probs.argmax(-1).tolist()
    return [int(torch.multinomial(p, 1, generator=g)) for p, g in zip(probs, generators)]


# -- training ---------------------------------------------------------------------------------------------------------


def _wandb_logger(out: Path):
    """An SB3 logger whose scalars go to Weights & Biases (SB3 has no W&B output format of its own)."""
    import wandb
    from stable_baselines3.common.logger import KVWriter, Logger

    run = wandb.init(project="rlir", name=out.name, dir=str(out), resume="allow")

    class WandbWriter(KVWriter):
        def write(self, key_values, key_excluded, step=0) -> None:
            run.log({k: v for k, v in key_values.items() if isinstance(v, (int, float))}, step=step)

        def close(self) -> None:
            run.finish()

    return Logger(folder=None, output_formats=[WandbWriter()])


def train_agent(
    world: str,
    *,
    steps: int,
    out: str | Path,
    num_envs: int = 8,
    seed: int = 0,
    eval_every: int | None = None,
    eval_episodes: int = 10,
    eval_max_steps: int | None = None,
    eval_parallel: int = 8,
    frame_stack: int = 1,
    extractor: str = "crafter",
    ppo: Mapping[str, Any] | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    device: str = "cpu",
    progress: bool = False,
    report_to: str = "none",
) -> dict[str, Any]:
    """Train PPO for ``steps`` env steps in ``world`` and evaluate it in the real game (see the module docstring).

    Args:
        world: ``"RLIR-CrafterDream-v0"`` (the learned simulator) or ``"RLIR-CrafterReal-v0"`` (the real game), or
            any registered id with 72 x 72 Crafter frames.
        steps: Env steps of training (rounded up to whole PPO rollouts of ``n_steps * num_envs``).
        out: Output directory: ``policy.zip``, ``checkpoints/``, ``tb/`` (with report_to tensorboard), ``evals.jsonl``, ``summary.json``.
        num_envs: Environments stepped together.
        seed: Seeds PPO, the environments and the evaluations.
        eval_every: Evaluate (and checkpoint) every this many env steps; None: only at the end.
        eval_episodes, eval_max_steps, eval_parallel: :func:`evaluate_policy` settings.
        frame_stack: Frames stacked per observation (``VecFrameStack``).
        extractor: ``"crafter"`` (:class:`CrafterCNN`) or ``"nature"`` (SB3's ``NatureCNN``).
        ppo: Overrides of :data:`PPO_DEFAULTS`.
        env_kwargs: ``gym.make_vec`` options of the training world (``model=``, ``heads=``, ``scenes=``, ...).
        device: Where PPO runs (the world model's device goes in ``env_kwargs``).
        progress: Show SB3's progress bar.
        report_to: SB3's training scalars also to ``"tensorboard"`` (``out/tb``) or ``"wandb"``; ``"none"``: only
            ``evals.jsonl`` and the summary (:mod:`worldmodels.training.report`).

    Returns:
        The summary written to ``out/summary.json``.
    """
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback

    check_report_to(report_to)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be a positive integer, got {steps!r}")
    if eval_every is not None and eval_every < 1:
        raise ConfigError(f"eval_every must be a positive number of env steps or None, got {eval_every!r}")
    policy_kwargs = _policy_kwargs(extractor)
    settings = dict(PPO_DEFAULTS, **(ppo or {}))
    unknown = sorted(set(settings) - set(PPO_DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown PPO settings {unknown}; known: {sorted(PPO_DEFAULTS)}")
    # A rollout never exceeds the budget by more than one environment step each, and mini-batches divide it.
    settings["n_steps"] = max(1, min(int(settings["n_steps"]), math.ceil(steps / num_envs)))
    settings["batch_size"] = max(1, min(int(settings["batch_size"]), settings["n_steps"] * num_envs))
    out = Path(out)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()

    env = make_training_env(world, num_envs, seed=seed, frame_stack=frame_stack, env_kwargs=env_kwargs)
    height, width, _ = env.observation_space.shape
    if extractor == "nature" and min(height, width) < _NATURE_MIN_SIZE:
        raise ConfigError(f"NatureCNN needs frames of at least {_NATURE_MIN_SIZE} x {_NATURE_MIN_SIZE}, the world "
                          f"gives {height} x {width}; use extractor='crafter'")  # fmt: skip
    tensorboard_log = str(out / "tb") if report_to == "tensorboard" else None
    model = PPO("CnnPolicy", env, seed=seed, device=device, verbose=0, tensorboard_log=tensorboard_log,
                policy_kwargs=policy_kwargs, **settings)  # fmt: skip
    if report_to == "wandb":
        model.set_logger(_wandb_logger(out))
    evaluations: list[dict[str, Any]] = []
    timing = {"rollout_s": 0.0, "eval_s": 0.0, "rollout_env_steps": 0}
    eval_kwargs = dict(episodes=eval_episodes, seed=seed, max_steps=eval_max_steps, parallel=eval_parallel,
                       frame_stack=frame_stack, device=device)  # fmt: skip

    def save(path: Path) -> None:
        model.save(str(path))

    class Periodic(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.next_eval = eval_every if eval_every is not None else None
            self._rollout_began = 0.0
            self._eval_in_rollout = 0.0

        def evaluate(self) -> None:
            t0 = time.perf_counter()
            checkpoint = out / "checkpoints" / f"policy_{self.num_timesteps}.zip"
            save(checkpoint)
            result = evaluate_policy(model, **eval_kwargs)
            result.update(policy=str(checkpoint), train_env_steps=int(self.num_timesteps))
            evaluations.append(result)
            with (out / "evals.jsonl").open("a", encoding="utf-8") as f:
                f.write(json.dumps({k: v for k, v in result.items() if k != "episode_results"}) + "\n")
            for key in ("crafter_score", "return_mean", "length_mean"):
                self.logger.record(f"eval/{key}", result[key])
            self.logger.dump(self.num_timesteps)
            spent = time.perf_counter() - t0
            timing["eval_s"] += spent
            self._eval_in_rollout += spent

        def _on_rollout_start(self) -> None:
            self._rollout_began, self._eval_in_rollout = time.perf_counter(), 0.0

        def _on_rollout_end(self) -> None:
            timing["rollout_s"] += time.perf_counter() - self._rollout_began - self._eval_in_rollout
            timing["rollout_env_steps"] += settings["n_steps"] * num_envs

        def _on_step(self) -> bool:
            if self.next_eval is not None and self.num_timesteps >= self.next_eval:
                self.evaluate()
                while self.next_eval <= self.num_timesteps:
                    self.next_eval += eval_every
            return True

        def _on_training_end(self) -> None:
            if not evaluations or evaluations[-1]["train_env_steps"] != self.num_timesteps:
                self.evaluate()

    (out / "evals.jsonl").write_text("", encoding="utf-8")
    model.learn(total_timesteps=steps, callback=Periodic(), progress_bar=progress, tb_log_name="ppo")
    save(out / "policy.zip")
    env.close()
    final = evaluations[-1]
    summary = {
        "kind": "rlir.agent-training",
        "world": world,
        "algo": "ppo",
        "steps": steps,
        "env_steps_done": int(model.num_timesteps),
        "num_envs": num_envs,
        "seed": seed,
        "frame_stack": frame_stack,
        "extractor": extractor,
        "observation_shape": [int(s) for s in env.observation_space.shape],
        "ppo": settings,
        "env_kwargs": {k: v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)
                       for k, v in (env_kwargs or {}).items()},  # fmt: skip
        "policy": str(out / "policy.zip"),
        "tensorboard": tensorboard_log,
        "evaluations": [{k: v for k, v in e.items() if k != "episode_results"} for e in evaluations],
        "final": final,
        "train_env_steps_per_s": timing["rollout_env_steps"] / timing["rollout_s"] if timing["rollout_s"] else None,
        "wall_time_s": round(time.perf_counter() - began, 3),
        "eval_time_s": round(timing["eval_s"], 3),
        "machine": machine_info(),
    }
    write_json(out / "summary.json", summary)
    return summary
