"""The start of a post-training run, shared by every paradigm: validate the config, join the process group, create
the run directory, load the model, the suites, the reward and the prompt sampler."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from evaluation.suites import load_suite
from posttrain.data import PromptSampler
from posttrain.rewards import build_reward
from worldmodels.errors import ConfigError
from worldmodels.registry import load_world_model
from worldmodels.runtime.distributed import Distributed

OUTPUT_NAME = "model.safetensors"
"""The post-trained model in the run directory."""


@dataclass
class Run:
    """Where a run writes and who it is among its ranks."""

    config: Any
    """A :class:`~posttrain.config.PostTrainConfig` (GRPO) or :class:`~posttrain.flow.config.FlowPostTrainConfig`."""
    dist: Distributed
    dir: Path


@dataclass
class RunData:
    """What a run trains on."""

    suite: Any
    """The training suite: each item is a prompt (context frames, their actions, the commanded actions)."""
    eval_suite: Any | None
    n_frames: int
    """Frames generated per rollout."""
    reward_fn: Any
    """Per-frame reward ``(frames, actions[, items=]) -> float[B, F]``."""
    probe_rewards: list[Any]
    """The reward read by each IDM of ``logging.probe_idm``, scored on the probe but never optimised."""
    sampler: PromptSampler
    """This rank's prompts of every iteration."""


def open_run(config: Any, model: nn.Module | None, suite: Any | None) -> tuple[Run, nn.Module]:
    """Validate ``config`` (GRPO or Flow-GRPO), join the process group, create the run directory and load
    ``config.model.path`` unless ``model`` is given (on this rank's GPU under torchrun)."""
    config.validate(require_paths=False)
    missing = [name for name, ok in (("out", config.out), ("model.path", model is not None or config.model.path),
                                     ("data.suite", suite is not None or config.data.suite)) if not ok]  # fmt: skip
    if missing:
        raise ConfigError(f"config {missing} empty: pass the run directory, the world model and the training suite")
    dist = Distributed.from_env(config.model.device)
    device = config.model.device
    if device.startswith("cuda") and dist.world > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    run_dir = Path(config.out)
    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
    if model is None:
        options = {} if config.model.reference_frames is None else {"reference_frames": config.model.reference_frames}
        if getattr(config.model, "compile", False):  # autoregressive models only (Flow-GRPO's has no such field)
            options["compile"] = True
        model = load_world_model(config.model.path, device=device, **options)
    return Run(config, dist, run_dir), model


def load_data(run: Run, policy: nn.Module, *, suite=None, eval_suite=None, reward_fn=None) -> RunData:
    """The suites (given, or loaded from ``config.data``; checked against the model), the frames per rollout, the
    per-frame reward (given, or built from ``config.reward``) and this rank's prompt sampler."""
    config = run.config
    suite = suite if suite is not None else load_suite(config.data.suite)
    if suite.domain != policy.spec.domain or tuple(suite.frame_size) != tuple(policy.spec.frame_size):
        raise ConfigError(
            f"suite {suite.name!r} ({suite.domain}, {tuple(suite.frame_size)}) does not fit model {policy.spec.name!r} "
            f"({policy.spec.domain}, {tuple(policy.spec.frame_size)})"
        )
    if eval_suite is None and config.data.eval_suite:
        eval_suite = load_suite(config.data.eval_suite)
    n_frames = config.data.n_frames or suite.n_frames
    if n_frames > suite.n_frames:
        raise ConfigError(f"data.n_frames={n_frames} exceeds the {suite.n_frames} actions of suite {suite.name!r}")
    if reward_fn is None:
        reward_fn = build_reward(config.reward, suite, device=str(policy.device))
    probe_rewards = []
    if config.logging.eval_every and eval_suite is not None:
        # each watching IDM reads the probe in the training reward's form (and class weights, from the training
        # prompts); an idm reward even when the run trains on pixels
        watching = dataclasses.replace(config.reward, kind="idm")
        probe_rewards = [build_reward(dataclasses.replace(watching, idm=[name]), suite, device=str(policy.device))
                         for name in config.logging.probe_idm]  # fmt: skip
    sampler = PromptSampler(len(suite), config.rollout.prompts_per_iter, config.seed, world_size=run.dist.world,
                            rank=run.dist.rank, shuffle=config.data.shuffle)  # fmt: skip
    return RunData(suite, eval_suite, n_frames, reward_fn, probe_rewards, sampler)
