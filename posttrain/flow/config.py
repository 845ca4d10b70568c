"""The Flow-GRPO post-training configuration for NFD models: nested dataclasses, loadable from YAML with dotted
overrides, sharing the data, reward, logging and checkpoint sections of :mod:`posttrain.config`.

Defaults are RLIR's NFD settings (arXiv 2509.23958, Appendix A.3): AdamW, lr 1e-5 with a cosine schedule, group size
24, 16 prompts per iteration (the paper's "16 samples per iteration", read as for MineWorld: groups, since 16 single
rollouts cannot form groups of 24), 10 sampling steps, SDE noise level 0.75, timestep selection 0.6.

**Clip range** (``algo.clip_range``, default ``1e-4``, symmetric: the ratio is clipped to ``[1 - 1e-4, 1 + 1e-4]``).
The PPO ratio is taken per trained denoising step, ``r = exp(logp - old_logp)``, where ``logp`` is the Gaussian
log-density of the step's sample *averaged* over the latent dimensions (as Flow-GRPO and DanceGRPO compute it), so
``log r`` is the mean of the per-dimension log-ratios and one optimizer step moves it very little: on the tiny test
model one AdamW step at RLIR's lr 1e-5 leaves every step ratio within ``[0.99991, 1.00009]`` (1e-3: within about
+-0.008). RLIR's table lists a clip ratio of 0.2 for both paradigms; on this scale 0.2 would never bind, so a second
optimizer step on the same rollouts would be unconstrained. ``1e-4`` (Flow-GRPO's base ``clip_range``, DanceGRPO's
hard-coded value) keeps later steps of an iteration within the neighbourhood the sampled transitions describe. With
the default single optimizer step per iteration (``algo.minibatches = 1``) every micro-step runs at the sampling
weights: the ratio is exactly 1 and no clip value changes the update; the clip only matters for ``minibatches > 1``.
RLIR's value is one override away (``algo.clip_range=0.2``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posttrain.config import (
    CheckpointConfig,
    DataConfig,
    LoggingConfig,
    OptimConfig,
    RewardConfig,
    config_to_dict,
    dataclass_from_dict,
    merge_nested,
    parse_overrides,
    set_dotted,
    shared_section_problems,
)
from posttrain.grpo.core import ADVANTAGE_SCALES
from worldmodels.errors import ConfigError, MissingFileError
from worldmodels.nfd import is_nfd_checkpoint
from worldmodels.registry import resolve_checkpoint_path


@dataclass
class FlowModelConfig:
    path: str = ""
    """An NFD checkpoint (``.safetensors`` written by ``rlir train nfd`` / ``save_nfd``) or a registered name."""
    device: str = "cpu"
    reference_frames: int | None = None


@dataclass
class FlowRolloutConfig:
    group_size: int = 24
    prompts_per_iter: int = 16
    """Prompts (groups) per iteration over all ranks (RLIR's "16 samples per iteration")."""
    prompts_per_state: int | None = None
    """Prompts denoised together in one batched KV-cache state (``None``: all of a rank's prompts)."""
    steps: int = 10
    """SDE sampling steps per frame (RLIR: 10)."""
    noise_level: float = 0.75
    """``a`` in ``sigma_t = a sqrt(t / (1 - t))`` (RLIR's SDE noise level 0.75)."""
    shift: float = 1.0
    """SD3 time shift of the sampling grid (1: uniform)."""
    timestep_fraction: float = 0.6
    """Share of each frame's ``steps - 1`` non-final SDE steps that is trained (RLIR's timestep selection 0.6)."""
    same_noise: bool = True
    """One initial noise per frame for the whole group (Flow-GRPO's ``same_latent``)."""
    sde_type: str = "flow"
    """``flow`` (Flow-GRPO's sigma_t) or ``dance`` (DanceGRPO's constant sigma_t = noise_level)."""
    eval_sampler: str = "dpmpp2m"
    eval_steps: int = 18
    """Evaluation rollouts use the ODE sampler RLIR evaluates NFD with (DPM-Solver++, 18 steps)."""


@dataclass
class FlowAlgoConfig:
    scale: str = "group"
    adv_eps: float = 1e-4
    adv_clip: float | None = 5.0
    clip_range: float = 1e-4
    """Symmetric PPO clip of the per-step ratio (see the module docstring for why not RLIR's 0.2)."""
    beta: float = 0.0
    """Weight of the closed-form KL between the policy's and a frozen reference's SDE steps (0: no reference)."""
    micro_batch: int = 4
    minibatches: int = 1


@dataclass
class FlowOptimConfig(OptimConfig):
    lr: float = 1e-5


@dataclass
class FlowPostTrainConfig:
    out: str = ""
    seed: int = 0
    iterations: int = 100
    model: FlowModelConfig = field(default_factory=FlowModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: FlowRolloutConfig = field(default_factory=FlowRolloutConfig)
    algo: FlowAlgoConfig = field(default_factory=FlowAlgoConfig)
    optim: FlowOptimConfig = field(default_factory=FlowOptimConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    def validate(self, *, require_paths: bool = True) -> FlowPostTrainConfig:
        """Raise ConfigError listing every impossible value; returns ``self``."""
        problems: list[str] = []

        def check(ok: bool, message: str) -> None:
            if not ok:
                problems.append(message)

        if require_paths:
            check(bool(self.model.path), "model.path is empty: pass an NFD checkpoint")
            check(bool(self.data.suite), "data.suite is empty: pass a suite name or directory of training prompts")
            check(bool(self.out), "out is empty: pass the run directory")
        r, a, o = self.rollout, self.algo, self.optim
        check(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        check(self.iterations >= 1, f"iterations must be >= 1, got {self.iterations}")
        check(r.group_size >= 2, f"rollout.group_size must be >= 2, got {r.group_size}")
        check(r.prompts_per_iter >= 1, f"rollout.prompts_per_iter must be >= 1, got {r.prompts_per_iter}")
        check(r.prompts_per_state is None or r.prompts_per_state >= 1, "rollout.prompts_per_state must be >= 1")
        check(r.steps >= 2, f"rollout.steps must be >= 2 (one trainable SDE step), got {r.steps}")
        check(r.noise_level > 0, f"rollout.noise_level must be > 0, got {r.noise_level}")
        check(r.shift > 0, f"rollout.shift must be > 0, got {r.shift}")
        check(0 < r.timestep_fraction <= 1, f"rollout.timestep_fraction must lie in (0, 1], got {r.timestep_fraction}")
        check(r.sde_type in ("flow", "dance"), f"rollout.sde_type must be 'flow' or 'dance', got {r.sde_type!r}")
        check(r.eval_sampler in ("euler", "dpmpp2m"), "rollout.eval_sampler must be euler or dpmpp2m")
        check(r.eval_steps >= 1, f"rollout.eval_steps must be >= 1, got {r.eval_steps}")
        check(a.scale in ADVANTAGE_SCALES, f"algo.scale must be one of {ADVANTAGE_SCALES}, got {a.scale!r}")
        check(a.adv_eps >= 0, f"algo.adv_eps must be >= 0, got {a.adv_eps}")
        check(a.adv_clip is None or a.adv_clip > 0, f"algo.adv_clip must be > 0 (or null), got {a.adv_clip}")
        check(0 < a.clip_range < 1, f"algo.clip_range must lie in (0, 1), got {a.clip_range}")
        check(a.beta >= 0, f"algo.beta must be >= 0, got {a.beta}")
        check(a.micro_batch >= 1 and a.minibatches >= 1, "algo.micro_batch and algo.minibatches must be >= 1")
        check(o.lr > 0, f"optim.lr must be > 0, got {o.lr}")
        check(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), f"optim.betas must lie in [0, 1), got {o.betas}")
        check(o.warmup >= 0 and 0 <= o.min_lr_ratio <= 1, "optim.warmup must be >= 0, optim.min_lr_ratio in [0, 1]")
        check(o.max_grad_norm is None or o.max_grad_norm > 0, "optim.max_grad_norm must be > 0 (or null)")
        problems += shared_section_problems(self)
        if problems:
            raise ConfigError("invalid Flow-GRPO config: " + "; ".join(problems))
        return self


def is_flow_model(path: str | Path | None) -> bool:
    """Whether ``path`` (a checkpoint path or a registered model name) is an NFD model, i.e. post-trains with
    Flow-GRPO (:func:`posttrain.loop.train` picks the paradigm from the config type; ``rlir posttrain`` picks the config
    type with this)."""
    if not path:
        return False

    try:
        checkpoint = resolve_checkpoint_path(str(path))
    except (ConfigError, MissingFileError):
        return False
    return checkpoint is not None and is_nfd_checkpoint(checkpoint)


def requested_model_path(
    path: str | Path | None, overrides: list[str] | tuple[str, ...] = (), values: dict[str, Any] | None = None
) -> str | None:
    """``model.path`` as :func:`load_flow_config` / :func:`posttrain.config.load_config` would resolve it (YAML, then
    ``values``, then overrides), read before knowing which of the two config types applies."""
    import yaml

    found = None
    if path is not None and Path(path).is_file():
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            data = {}
        model = data.get("model") if isinstance(data, dict) else None
        found = model.get("path") if isinstance(model, dict) else None
    found = (values or {}).get("model.path", found)
    model = parse_overrides(list(overrides)).get("model")
    if isinstance(model, dict) and "path" in model:
        found = model["path"]
    return None if found is None else str(found)


def load_flow_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    values: dict[str, Any] | None = None,
    validate: bool = True,
) -> FlowPostTrainConfig:
    """Defaults, then the YAML file ``path``, then ``values`` (dotted keys), then ``key=value`` overrides."""
    import yaml

    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"config file {str(path)!r} does not exist")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path} is not valid YAML: {err}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a mapping of config sections")
    for key, value in (values or {}).items():
        nested: dict[str, Any] = {}
        set_dotted(nested, key, value)
        data = merge_nested(data, nested)
    data = merge_nested(data, parse_overrides(list(overrides)))
    config = dataclass_from_dict(FlowPostTrainConfig, data, "")
    return config.validate() if validate else config


__all__ = ["FlowAlgoConfig", "FlowModelConfig", "FlowOptimConfig", "FlowPostTrainConfig", "FlowRolloutConfig",
           "config_to_dict", "is_flow_model", "load_flow_config", "requested_model_path"]  # fmt: skip
