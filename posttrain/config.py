"""The post-training configuration: nested dataclasses, loadable from YAML with dotted overrides.

    config = load_config("run.yaml", ["algo.beta=1e-4", "rollout.group_size=8"])
    save_config(config, "runs/x/config.yaml")

Defaults are RLIR's MineWorld settings (arXiv 2509.23958, Appendix A.3): AdamW, lr 3e-5 with a cosine schedule,
group size 24, clip ratio 0.2, no KL (beta 0; the paper's optional value is 1e-4), temperature 1. The paper's
"32 samples per iteration" is read as 32 prompts (groups) per iteration: 32 single rollouts cannot form groups of
24. Unknown keys and impossible values raise :class:`~worldmodels.errors.ConfigError` naming them.

NFD (next-frame diffusion) models post-train with Flow-GRPO and have their own config with RLIR's NFD settings,
:class:`posttrain.flow.config.FlowPostTrainConfig` (same data, reward, logging and checkpoint sections); ``rlir
posttrain`` picks it when the model is an NFD checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from posttrain.grpo.core import ADVANTAGE_SCALES
from worldmodels.errors import ConfigError, MissingFileError
from worldmodels.runtime.files import atomic_output
from worldmodels.training.report import REPORT_TO

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DECODINGS = ("naive", "speculative", "diagonal")
REWARDS = ("idm", "pixel", "idm+pixel")
REWARD_FORMS: dict[str, str] = {
    "agreement": "the fraction of the taxonomy's tasks whose IDM class is the commanded one (the default; a Crafter "
                 "frame scores 0.6, 0.8 or 1.0 because its 'none' columns match almost always)",
    "exact": "1 if the IDM reads every task as commanded, else 0 (the paper's 1[a_hat = a])",
    "soft": "the IDM's probability of the commanded action (the Crafter IDMs, whose logits score every action)",
    "task-weighted": "each task's match weighted by 1 / the frequency of its commanded class among the training "
                     "prompts, so a frame's reward is about its action's task rather than its many 'none' columns",
}
"""The per-frame forms of RLIR's inverse reward (``reward.form``); an ensemble averages its members' values."""


@dataclass
class ModelConfig:
    path: str = ""
    """Registered world-model name or a MineWorld checkpoint path (``.safetensors`` / official ``.ckpt``)."""
    device: str = "cpu"
    reference_frames: int | None = None
    """Frames kept when a rollout outgrows the context (``None``: the model's default)."""
    compile: bool = False
    """Sample rollouts with the compiled static decode step (the same tokens as eager; docs/benchmarks.md)."""
    gradient_checkpointing: bool = False
    """Recompute each decoder layer in the backward pass (less activation memory, ~30% more compute)."""
    lora_rank: int = 0
    """0: train every transformer weight; > 0: train LoRA adapters of this rank only."""
    lora_alpha: float = 16.0
    lora_targets: list[str] = field(default_factory=lambda: list(LORA_TARGETS))


@dataclass
class DataConfig:
    suite: str = ""
    """Training prompts: a registered suite name or a suite directory (context frames + action scripts)."""
    eval_suite: str | None = None
    """Optional held-out suite scored every ``logging.eval_every`` iterations (fixed seeds)."""
    eval_items: int = 16
    n_frames: int | None = None
    """Generated frames per rollout (the first actions of each script); ``None``: all of the suite's."""
    shuffle: bool = True


@dataclass
class RolloutConfig:
    group_size: int = 24
    prompts_per_iter: int = 32
    """Prompts (groups) per iteration over all ranks; ``prompts_per_iter * group_size`` rollouts per iteration."""
    prompts_per_state: int | None = None
    """Prompts decoded together in one batched KV-cache state (``None``: all of a rank's prompts)."""
    temperature: float = 1.0
    top_p: float | None = None
    """Truncated sampling makes the run off-policy (logged and stored in checkpoints)."""
    top_k: int | None = None
    decoding: str = "naive"
    """``naive`` or ``speculative`` (the same tokens, fewer forwards); ``diagonal`` is off-policy."""


@dataclass
class AlgoConfig:
    scale: str = "group"
    """Advantage scaling: ``group`` (GRPO), ``batch`` (Lite-PPO) or ``none`` (Dr. GRPO)."""
    adv_eps: float = 1e-4
    adv_clip: float | None = 5.0
    eps_low: float = 0.2
    eps_high: float = 0.2
    beta: float = 0.0
    """k3 KL weight; 0 builds no reference model at all."""
    micro_batch: int = 4
    """Rollouts per forward/backward of the replay."""
    minibatches: int = 1
    """Optimizer steps per iteration (each on a slice of the rollouts; >1 makes the later steps off-policy)."""


@dataclass
class OptimConfig:
    lr: float = 3e-5
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup: int = 0
    """Optimizer steps of linear warm-up."""
    min_lr_ratio: float = 0.0
    """The cosine schedule ends at ``min_lr_ratio * lr``."""
    max_grad_norm: float | None = 1.0


@dataclass
class RewardConfig:
    kind: str = "idm"
    """``idm`` (RLIR's inverse reward), ``pixel`` (RLVR-World's -(L1 + perceptual) against ground truth), or
    ``idm+pixel``: per frame, the idm reward plus ``pixel_weight`` x the pixel reward (as TRL's ``reward_weights``)."""
    idm: list[str] = field(default_factory=list)
    """IDM names or files (several: an ensemble whose members' rewards are averaged, e.g. ``--idm a,b,c``); default:
    ``vpt-4x-idm`` for Minecraft, ``crafter-idm-reward`` for Crafter."""
    include_camera: bool = True
    form: str = "agreement"
    """The per-frame form of the IDM reward, one of :data:`REWARD_FORMS`: ``agreement`` (fraction of
    tasks matched), ``exact`` (all tasks, the paper's 1[a_hat = a]), ``soft`` (the IDM's probability of the commanded
    action; Crafter), ``task-weighted`` (matches weighted by the rarity of the commanded class)."""
    lpips_backbone: str | None = None
    lpips_linear: str | None = None
    l1_weight: float = 1.0
    perceptual_weight: float = 1.0
    pixel_weight: float = 1.0
    """The pixel term's weight in ``kind: idm+pixel`` (the idm term's is 1); only that kind reads it."""


@dataclass
class LoggingConfig:
    report_to: str = "none"
    """Also send the scalars of ``log.jsonl`` to ``tensorboard`` (``<out>/tensorboard``), ``wandb`` or ``none``
    (:mod:`worldmodels.training.report`; a missing package is an error)."""
    video_every: int = 10
    """Write sample videos (``videos/iter_*.mp4``) every this many iterations and at the last one (0: never)."""
    videos: int = 2
    eval_every: int = 0
    """Probe ``data.eval_suite`` every this many iterations and before the first (0: never): the training reward, the
    ``probe_idm`` rewards and PSNR with standard errors, on fixed items and seeds (:mod:`posttrain.probe`)."""
    probe_idm: list[str] = field(default_factory=list)
    """IDMs that read the probe's videos in the training reward's form but are never optimised (e.g. the held-out
    IDM: does a gain in the reward IDM's eyes hold in another's?)."""
    samples: bool = False
    """Also write every rollout's reward and advantage to ``samples.jsonl`` (one line per iteration)."""
    progress: bool = True


@dataclass
class CheckpointConfig:
    every: int = 10
    keep: int = 2
    resume: str = "never"
    """``never`` (refuses a run directory that already holds checkpoints), ``auto`` (the latest, if any) or a path."""


@dataclass
class PostTrainConfig:
    out: str = ""
    """Run directory (config, logs, checkpoints, videos, the final ``model.safetensors``)."""
    seed: int = 0
    iterations: int = 100
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    @property
    def off_policy(self) -> bool:
        """True when rollouts are not drawn from the policy's own distribution (truncation or diagonal decoding):
        the importance ratios are then taken against the full-softmax replay, not the sampler."""
        r = self.rollout
        return r.top_p is not None or r.top_k is not None or r.decoding == "diagonal"

    def validate(self, *, require_paths: bool = True) -> PostTrainConfig:
        """Raise ConfigError for impossible values; returns ``self``."""
        problems = []

        def check(ok: bool, message: str) -> None:
            if not ok:
                problems.append(message)

        if require_paths:
            check(bool(self.model.path), "model.path is empty: pass a world model name or checkpoint path")
            check(bool(self.data.suite), "data.suite is empty: pass a suite name or directory of training prompts")
            check(bool(self.out), "out is empty: pass the run directory")
        check(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        check(self.iterations >= 1, f"iterations must be >= 1, got {self.iterations}")
        m, r, a, o = self.model, self.rollout, self.algo, self.optim
        check(m.reference_frames is None or m.reference_frames >= 1,
              f"model.reference_frames must be >= 1, got {m.reference_frames}")
        check(m.lora_rank >= 0, f"model.lora_rank must be >= 0, got {m.lora_rank}")
        check(m.lora_alpha > 0, f"model.lora_alpha must be > 0, got {m.lora_alpha}")
        bad = sorted(set(m.lora_targets) - set(LORA_TARGETS))
        check(not bad and bool(m.lora_targets),
              f"model.lora_targets {bad or '[]'} invalid; choose from {list(LORA_TARGETS)}")
        check(r.group_size >= 2,
              f"rollout.group_size must be >= 2 (GRPO compares rollouts of a prompt), got {r.group_size}")
        check(r.prompts_per_iter >= 1, f"rollout.prompts_per_iter must be >= 1, got {r.prompts_per_iter}")
        check(r.prompts_per_state is None or r.prompts_per_state >= 1,
              f"rollout.prompts_per_state must be >= 1, got {r.prompts_per_state}")
        check(0 < r.temperature < float("inf"),
              f"rollout.temperature must be a finite number > 0 (training samples), got {r.temperature}")
        check(r.top_p is None or 0 < r.top_p <= 1, f"rollout.top_p must lie in (0, 1], got {r.top_p}")
        check(r.top_k is None or r.top_k >= 2, f"rollout.top_k must be >= 2 (1 is greedy), got {r.top_k}")
        check(r.top_p is None or r.top_k is None, "rollout.top_p and rollout.top_k are mutually exclusive")
        check(r.decoding in DECODINGS, f"rollout.decoding must be one of {DECODINGS}, got {r.decoding!r}")
        check(a.scale in ADVANTAGE_SCALES, f"algo.scale must be one of {ADVANTAGE_SCALES}, got {a.scale!r}")
        check(a.adv_eps >= 0, f"algo.adv_eps must be >= 0, got {a.adv_eps}")
        check(a.adv_clip is None or a.adv_clip > 0, f"algo.adv_clip must be > 0 (or null), got {a.adv_clip}")
        check(0 < a.eps_low < 1, f"algo.eps_low must lie in (0, 1), got {a.eps_low}")
        check(a.eps_high > 0, f"algo.eps_high must be > 0, got {a.eps_high}")
        check(a.beta >= 0, f"algo.beta must be >= 0, got {a.beta}")
        check(a.micro_batch >= 1, f"algo.micro_batch must be >= 1, got {a.micro_batch}")
        check(a.minibatches >= 1, f"algo.minibatches must be >= 1, got {a.minibatches}")
        check(o.lr > 0, f"optim.lr must be > 0, got {o.lr}")
        check(o.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {o.weight_decay}")
        check(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas),
              f"optim.betas must be two numbers in [0, 1), got {o.betas}")
        check(o.warmup >= 0, f"optim.warmup must be >= 0, got {o.warmup}")
        check(0 <= o.min_lr_ratio <= 1, f"optim.min_lr_ratio must lie in [0, 1], got {o.min_lr_ratio}")
        check(o.max_grad_norm is None or o.max_grad_norm > 0,
              f"optim.max_grad_norm must be > 0 (or null), got {o.max_grad_norm}")
        problems += shared_section_problems(self)
        if problems:
            raise ConfigError("invalid post-training config: " + "; ".join(problems))
        return self


def shared_section_problems(config: Any) -> list[str]:
    """The impossible values of the sections GRPO and Flow-GRPO share (data, reward, logging, checkpoint)."""
    d, w, lg, c = config.data, config.reward, config.logging, config.checkpoint
    checks = [
        (d.eval_items >= 1, f"data.eval_items must be >= 1, got {d.eval_items}"),
        (d.n_frames is None or d.n_frames >= 1, f"data.n_frames must be >= 1, got {d.n_frames}"),
        (w.kind in REWARDS, f"reward.kind must be one of {REWARDS}, got {w.kind!r}"),
        (w.form in REWARD_FORMS, f"reward.form must be one of {list(REWARD_FORMS)}, got {w.form!r}"),
        ((w.lpips_backbone is None) == (w.lpips_linear is None),
         "reward.lpips_backbone and reward.lpips_linear go together"),
        (w.l1_weight >= 0 and w.perceptual_weight >= 0, "reward.l1_weight and reward.perceptual_weight must be >= 0"),
        (math.isfinite(w.pixel_weight) and w.pixel_weight > 0,
         f"reward.pixel_weight must be a finite number > 0, got {w.pixel_weight}"),
        (lg.video_every >= 0 and lg.eval_every >= 0, "logging.video_every and logging.eval_every must be >= 0"),
        (lg.videos >= 1, f"logging.videos must be >= 1, got {lg.videos}"),
        (lg.report_to in REPORT_TO, f"logging.report_to must be one of {list(REPORT_TO)}, got {lg.report_to!r}"),
        (c.every >= 1, f"checkpoint.every must be >= 1, got {c.every}"),
        (c.keep >= 1, f"checkpoint.keep must be >= 1, got {c.keep}"),
        (bool(c.resume), "checkpoint.resume must be 'never', 'auto' or a checkpoint path"),
    ]  # fmt: skip
    return [message for ok, message in checks if not ok]


# -- dict <-> dataclass --------------------------------------------------------------------------------------------


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict of a (nested) config dataclass."""
    return dataclasses.asdict(config)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        is_null = value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~"))
        if type(None) in args and is_null:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{key}: cannot be {value!r}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads "1e-4" as a string
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key} must be a string, got {value!r}")
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.strip("[]").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    raise ConfigError(f"{key}: unsupported field type {annotation!r}")


def dataclass_from_dict(cls: type, data: Any, prefix: str) -> Any:
    """The dataclass ``cls`` from nested ``data`` (keys and types checked; ``prefix`` names the section in errors)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        full = [f"{prefix}{k}" for k in unknown]
        raise ConfigError(f"unknown config keys {full}; valid keys under {prefix or 'the top level'}: {names}")
    values = {}
    for name in names:
        if name not in data:
            continue
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            values[name] = dataclass_from_dict(annotation, data[name], f"{prefix}{name}.")
        else:
            values[name] = _coerce(data[name], annotation, f"{prefix}{name}")
    return cls(**values)


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """``data["a"]["b"] = value`` for ``dotted="a.b"``, creating sections on the way."""
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["algo.beta=1e-4", "rollout.top_p=null"]`` -> nested dict (values parsed as YAML scalars/lists)."""
    import yaml

    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value (e.g. algo.beta=1e-4)")
        key, text = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        set_dotted(nested, key, value)
    return nested


def merge_nested(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated with ``extra``, section by section (``extra`` wins)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_nested(out[key], value)
        else:
            out[key] = value
    return out


def config_from_dict(data: dict[str, Any]) -> PostTrainConfig:
    """Build (without validating) from a nested dict; unknown keys or wrong types raise ConfigError."""
    return dataclass_from_dict(PostTrainConfig, data, "")


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    values: dict[str, Any] | None = None,
    validate: bool = True,
) -> PostTrainConfig:
    """Defaults, then the YAML file ``path`` (if given), then ``values`` (dotted keys -> values taken as they are,
    e.g. from command-line flags), then the dotted ``overrides`` (``key=value`` strings, values parsed as YAML);
    validated unless ``validate=False``."""
    import yaml

    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"config file {str(path)!r} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise ConfigError(f"{path} is not valid YAML: {err}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of config sections, got {type(loaded).__name__}")
        data = loaded or {}
    for key, value in (values or {}).items():
        nested: dict[str, Any] = {}
        set_dotted(nested, key, value)
        data = merge_nested(data, nested)
    data = merge_nested(data, parse_overrides(list(overrides)))
    config = config_from_dict(data)
    return config.validate() if validate else config


def save_config(config: PostTrainConfig, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomically)."""
    import yaml

    path = Path(path)
    with atomic_output(path) as tmp:
        tmp.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False), encoding="utf-8")
    return path
