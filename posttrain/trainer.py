"""GRPO post-training of a MineWorld-architecture world model with inverse-dynamics rewards (RLIR,
arXiv 2509.23958), or any per-frame reward.

One iteration of :func:`train`, top to bottom:

1. **prompts**: ``P`` suite items (:class:`~posttrain.data.PromptSampler`); each rank takes whole groups;
2. **rollout**: ``G`` rollouts per prompt, the context prefilled once and copied to the group's cache slots
   (:func:`~posttrain.grpo.rollout.rollout`);
3. **reward**: decode the frames, per-frame rewards (:mod:`posttrain.rewards`), trajectory reward = mean over
   frames; rewards of every rank are gathered, then normalised per group
   (:func:`~posttrain.grpo.core.group_advantages`); groups whose rewards are all equal are dropped from the update;
4. **old log-probs**: the kept rollouts are replayed without gradients, in the micro-batches the update will use
   (:func:`~posttrain.grpo.replay.replay_logprobs`), so the first micro-step's ratio is exactly 1 (logged as
   ``ratio_first_microstep_min/max``); the reference's log-probs too when ``beta > 0``;
5. **update**: token-level PPO clipped loss (+ ``beta`` k3 KL), token-mean over the whole accumulated batch,
   gradients summed over ranks (one flat all-reduce), clipped, AdamW step, cosine schedule;
6. **log** (jsonl + TensorBoard), sample videos, evaluation, atomic **checkpoint**.

Everything random is drawn from generators seeded by ``(seed, iteration, prompt slot, member)``, and a checkpoint
holds weights, optimizer, scheduler, RNG states and the sampler position, so a run killed at any point and resumed
with ``checkpoint.resume=auto`` ends with the same weights as an uninterrupted run. The result is
``<out>/model.safetensors`` (LoRA merged), loadable with ``MineWorld.from_checkpoint`` / ``rlir eval --model``.

NFD (next-frame diffusion) models post-train with Flow-GRPO: :func:`train` hands a
:class:`~posttrain.flow.config.FlowPostTrainConfig` to :func:`posttrain.flow.trainer.train_flow`, which runs the same
loop with SDE rollouts and per-step ratios, built from the shared pieces below (:func:`load_data`,
:func:`resume_run`, :func:`plan_update`, :func:`update_steps`, :func:`reward_metrics`, :func:`checkpoint_if_due`).
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import resource
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from posttrain.config import PostTrainConfig, config_to_dict, save_config
from posttrain.curves import draw_curves
from posttrain.data import PromptSampler
from posttrain.grpo.core import LossStats, group_advantages, grpo_loss
from posttrain.grpo.replay import replay_logprobs, replay_mode
from posttrain.grpo.rollout import EVAL_STREAM, decode_videos, prompts_from_suite, rollout
from posttrain.rewards import compute_rewards, reward_name
from worldmodels.errors import CheckpointError, ConfigError, MissingFileError
from worldmodels.hashing import sha256_file
from worldmodels.mineworld.sampling import SamplingConfig
from worldmodels.training.common import (
    JsonlLogger,
    Progress,
    Stopwatch,
    cosine_with_warmup,
    load_checkpoint,
    machine_info,
    make_adamw,
    save_checkpoint,
    write_json,
)

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.json"
OUTPUT_NAME = "model.safetensors"


# -- data parallel ----------------------------------------------------------------------------------------------------


@dataclass
class Dist:
    """The data-parallel layout (``torchrun``: gloo on CPU, nccl on GPU); a no-op for one process."""

    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls, device: str) -> Dist:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        return cls(rank=dist.get_rank(), world=dist.get_world_size())

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather_rows(self, array: np.ndarray) -> np.ndarray:
        """Concatenate every rank's equally shaped ``array`` in rank order."""
        if self.world == 1:
            return array
        import torch.distributed as dist

        local = torch.as_tensor(np.ascontiguousarray(array))
        parts = [torch.empty_like(local) for _ in range(self.world)]
        dist.all_gather(parts, local)
        return torch.cat(parts).numpy()

    def reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        if self.world > 1:
            import torch.distributed as dist

            ops = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
            dist.all_reduce(tensor, op=ops[op])
        return tensor

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


def sum_gradients(params: list[nn.Parameter], dist: Dist) -> None:
    """Sum gradients over ranks (one flat all-reduce). The loss is normalised by the global token count, so the
    sum is the gradient of the global token-mean; parameters without a gradient contribute zeros."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if dist.world == 1:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.reduce(flat)
    offset = 0
    for p in params:
        p.grad.copy_(flat[offset : offset + p.numel()].view_as(p))
        offset += p.numel()


# -- LoRA -------------------------------------------------------------------------------------------------------------


class LoRAWeight(nn.Module):
    """Weight parametrization ``W -> W + (alpha / r) B A`` (``A`` Kaiming-uniform, ``B`` zero: the adapted model
    starts equal to the base). A parametrization rather than a wrapper module, because MineWorld's attention and MLP
    read ``linear.weight`` directly (fused projections)."""

    def __init__(self, out_features: int, in_features: int, rank: int, alpha: float, generator: torch.Generator):
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        a = (torch.rand(rank, in_features, generator=generator) * 2 - 1) * bound
        self.lora_A = nn.Parameter(a)
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        self.scale = alpha / rank
        self.enabled = True

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return weight
        return weight + self.scale * (self.lora_B @ self.lora_A).to(weight.dtype)


def add_lora(transformer: nn.Module, *, rank: int, alpha: float, targets: list[str], seed: int) -> list[nn.Parameter]:
    """Freeze ``transformer`` and add LoRA adapters to its ``targets`` projections; returns the adapter parameters."""
    transformer.requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    params: list[nn.Parameter] = []
    for name, module in transformer.named_modules():
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in targets:
            weight = module.weight
            lora = LoRAWeight(weight.shape[0], weight.shape[1], rank, alpha, generator).to(weight.device)
            parametrize.register_parametrization(module, "weight", lora)
            params += [lora.lora_A, lora.lora_B]
    if not params:
        raise ConfigError(f"no LoRA target {targets} found in the transformer")
    return params


def _lora_modules(model: nn.Module) -> list[LoRAWeight]:
    return [m for m in model.modules() if isinstance(m, LoRAWeight)]


@contextmanager
def lora_disabled(model: nn.Module) -> Iterator[None]:
    """The base model (the KL reference of a LoRA run)."""
    modules = _lora_modules(model)
    for m in modules:
        m.enabled = False
    try:
        yield
    finally:
        for m in modules:
            m.enabled = True


def merged_copy(model: nn.Module) -> nn.Module:
    """``model`` itself without LoRA, else a copy with every adapter merged into its weight (plain state-dict keys)."""
    if not _lora_modules(model):
        return model
    model = copy.deepcopy(model)
    for module in list(model.modules()):
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return model


@dataclass
class _Reference:
    """A frozen copy of the initial transformer, shaped like what ``replay_logprobs`` reads."""

    transformer: nn.Module
    config: Any
    device: torch.device


# -- checkpoints ------------------------------------------------------------------------------------------------------


def _rng_states() -> dict[str, Any]:
    version, state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(state), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }


def _set_rng_states(states: dict[str, Any]) -> None:
    version, state, gauss = states["python"]
    random.setstate((version, tuple(state), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def _checkpoints(run_dir: Path) -> list[Path]:
    return sorted((run_dir / CHECKPOINT_DIR).glob("iter_*.safetensors"))


def save_run_checkpoint(
    run_dir: Path, iteration: int, *, transformer: nn.Module, optimizer, scheduler, run_config: dict, extra: dict,
    keep: int,
) -> Path:  # fmt: skip
    """Write ``checkpoints/iter_<iteration>.safetensors`` atomically, then point ``checkpoints/latest.json`` at it
    (with its sha256), then delete all but the newest ``keep``: an interrupted save never loses the previous one."""
    path = run_dir / CHECKPOINT_DIR / f"iter_{iteration:06d}.safetensors"
    save_checkpoint(
        path, model=transformer, optimizer=optimizer, scheduler=scheduler, step=iteration, run_config=run_config,
        extra_meta=extra,
    )  # fmt: skip
    pointer = {"file": path.name, "sha256": sha256_file(path), "iteration": iteration}
    write_json(run_dir / CHECKPOINT_DIR / LATEST, pointer)
    for old in _checkpoints(run_dir)[:-keep]:
        if old != path:
            old.unlink(missing_ok=True)
    return path


def find_resume_checkpoint(run_dir: Path, resume: str) -> Path | None:
    """The checkpoint to resume from: ``never`` -> none (and refuses a directory that holds checkpoints), ``auto``
    -> the latest (verified against its sha256), else the given path.

    Raises:
        ConfigError: ``resume=never`` but the run directory already holds checkpoints.
        CheckpointError: the latest checkpoint is missing, unreadable or corrupted (nothing is deleted; the message
            names the previous checkpoint to resume from instead).
        MissingFileError: an explicit path that does not exist.
    """
    latest = run_dir / CHECKPOINT_DIR / LATEST
    if resume == "never":
        if latest.exists() or _checkpoints(run_dir):
            raise ConfigError(
                f"{run_dir} already holds checkpoints of a run; pass --resume auto to continue it, or another --out"
            )
        return None
    if resume != "auto":
        path = Path(resume)
        if not path.is_file():
            raise MissingFileError(f"checkpoint {str(path)!r} does not exist")
        return path
    if not latest.exists():
        return None
    try:
        pointer = json.loads(latest.read_text(encoding="utf-8"))
        path = run_dir / CHECKPOINT_DIR / pointer["file"]
        expected = pointer["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"{latest} is unreadable ({err}); resume from one of the checkpoint files with --resume PATH"
        ) from None
    others = [p for p in _checkpoints(run_dir) if p != path]
    hint = f"; the previous checkpoint {others[-1]} can be resumed with --resume {others[-1]}" if others else ""
    if not path.is_file():
        raise CheckpointError(f"{latest} points at {path}, which is missing{hint}")
    if sha256_file(path) != expected:
        raise CheckpointError(f"checkpoint {path} is corrupted (its sha256 differs from the one recorded){hint}")
    return path


# -- logging ----------------------------------------------------------------------------------------------------------


class RunLogger:
    """Metrics to ``log.jsonl`` (one line per iteration) and to ``logging.report_to`` (TensorBoard or W&B scalars;
    lists as one scalar per index)."""

    def __init__(self, run_dir: Path, *, start: int, report_to: str, enabled: bool, samples: bool = False):
        self.enabled = enabled
        resume_step = start - 1 if start else None
        report_to = report_to if enabled else "none"
        self.jsonl = JsonlLogger(run_dir / "log.jsonl" if enabled else None, resume_step=resume_step,
                                 report_to=report_to)  # fmt: skip
        self.samples = JsonlLogger(run_dir / "samples.jsonl" if enabled and samples else None, resume_step=resume_step)

    def log(self, step: int, record: dict[str, Any]) -> None:
        if self.enabled:
            self.jsonl.log(step=step, **record)

    def close(self) -> None:
        self.jsonl.close()


def _video_due(every: int, iteration: int, iterations: int) -> bool:
    """Sample videos every ``every`` iterations and at the last one, so every run ends with a look at its result."""
    return bool(every) and (iteration % every == 0 or iteration == iterations - 1)


def _peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _write_samples(
    run_dir: Path, iteration: int, videos: np.ndarray, rewards: np.ndarray, batch, reward_fn, fps: float, count: int
) -> None:
    """The first ``count`` rollouts as mp4 (context frame + generated frames) with a per-frame jsonl sidecar."""
    from worldmodels.data.video import write_video

    directory = run_dir / "videos"
    for s in range(min(count, len(videos))):
        stem = f"iter_{iteration:06d}_item{int(batch.items[s // batch.group_size])}_m{s % batch.group_size}"
        write_video(directory / f"{stem}.mp4", videos[s], fps)
        details = reward_fn.describe(s) if hasattr(reward_fn, "describe") else []
        lines = []
        for k in range(rewards.shape[1]):
            row = {"frame": k + 1, "reward": float(rewards[s, k])}
            if k < len(details):
                row.update(details[k])
            lines.append(json.dumps(row))
        (directory / f"{stem}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


# -- training ---------------------------------------------------------------------------------------------------------


def _sampling(config: PostTrainConfig) -> SamplingConfig:
    r = config.rollout
    return SamplingConfig(temperature=r.temperature, top_k=r.top_k, top_p=r.top_p, decoding=r.decoding)


def _micro_batches(samples: np.ndarray, minibatches: int, micro: int) -> list[list[torch.Tensor]]:
    """Split the kept samples into ``minibatches`` optimizer steps of micro-batches (the same split is used for the
    old log-probs and the update, which keeps the first micro-step's ratio exactly 1)."""
    return [
        [torch.as_tensor(part[i : i + micro]) for i in range(0, len(part), micro)]
        for part in np.array_split(samples, minibatches)
    ]


def _reference_logprobs(policy, reference, batch, micro: torch.Tensor, temperature: float) -> torch.Tensor:
    """The KL reference's log-probs: the disabled LoRA adapter, or the frozen copy of the initial weights."""
    if reference is None:
        with lora_disabled(policy):
            return replay_logprobs(policy, batch, micro, temperature=temperature)[0]
    with replay_mode(reference):
        return replay_logprobs(reference, batch, micro, temperature=temperature)[0]


def _loss_metrics(stats: LossStats, first_ratio, sampler_gap: torch.Tensor, dist: Dist) -> dict[str, Any]:
    """Per-token loss diagnostics over every rank, the first micro-step's ratio range and the sampler/replay gap."""
    summed = dist.reduce(stats.as_vector())
    ratio_min = dist.reduce(torch.tensor([stats.ratio_min]), "min").item()
    ratio_max = dist.reduce(torch.tensor([stats.ratio_max]), "max").item()
    first = first_ratio if first_ratio is not None else (math.inf, -math.inf)
    first_min = dist.reduce(torch.tensor([first[0]]), "min").item()
    first_max = dist.reduce(torch.tensor([first[1]]), "max").item()
    return {
        **LossStats.from_vector(summed, ratio_min, ratio_max).means(),
        "ratio_first_microstep_min": first_min if math.isfinite(first_min) else None,
        "ratio_first_microstep_max": first_max if math.isfinite(first_max) else None,
        "logp_sampler_replay_max_abs_diff": dist.reduce(sampler_gap, "max").item(),
    }


def _speed_metrics(watch: Stopwatch, rollout_tokens: int, replay_tokens: int) -> dict[str, float]:
    phases = watch.report()
    seconds = {name: phases.get(f"{name}_s", 0.0) for name in ("rollout", "reward", "old_logp", "update")}
    return {
        **{f"time_{name}_s": value for name, value in seconds.items()},
        "time_iteration_s": phases["total_s"],
        "rollout_tokens_per_s": rollout_tokens / max(seconds["rollout"], 1e-9),
        "replay_tokens_per_s": replay_tokens / max(seconds["old_logp"] + seconds["update"], 1e-9),
    }


def evaluate_reward(policy, suite, reward_fn, config: PostTrainConfig) -> dict[str, Any]:
    """Mean reward of one rollout per item of ``suite`` (its first ``data.eval_items``), with seeds that do not
    change during training, so evaluations at different iterations compare like with like."""
    n = min(config.data.eval_items, len(suite))
    n_frames = min(config.data.n_frames or suite.n_frames, suite.n_frames)
    prompts = prompts_from_suite(suite, range(n), n_frames)
    batch = rollout(policy, prompts, group_size=1, sampling=_sampling(config), seed=config.seed, iteration=0,
                    stream=EVAL_STREAM, prompts_per_state=config.rollout.prompts_per_state)  # fmt: skip
    videos = decode_videos(policy, batch, prompts)
    rewards = compute_rewards(reward_fn, videos, prompts.actions, [suite[int(i)] for i in prompts.items])
    return {"eval_reward_mean": float(rewards.mean()), "eval_reward_per_frame": rewards.mean(axis=0).tolist()}


# -- pieces shared by both paradigms (this loop and posttrain.flow.trainer) ------------------------------------------


def load_data(config, policy, dist: Dist, *, suite=None, eval_suite=None, reward_fn=None):
    """``(suite, eval_suite, n_frames, reward_fn, sampler)`` of a run: the suites (checked against the model), the
    frames per rollout, the per-frame reward and the prompt sampler of this rank."""
    from evaluation.suites import load_suite

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
        from posttrain.rewards import build_reward

        reward_fn = build_reward(config.reward, suite, device=str(policy.device))
    sampler = PromptSampler(len(suite), config.rollout.prompts_per_iter, config.seed, world_size=dist.world,
                            rank=dist.rank, shuffle=config.data.shuffle)  # fmt: skip
    return suite, eval_suite, n_frames, reward_fn, sampler


def resume_run(
    run_dir: Path, resume: str, *, transformer: nn.Module, optimizer, scheduler, run_config: dict,
    sampler: PromptSampler,
) -> tuple[int, Path | None]:  # fmt: skip
    """``(first iteration, checkpoint)``: restore weights, optimizer, scheduler and RNG states from the checkpoint
    ``resume`` selects (:func:`find_resume_checkpoint`), after checking that it belongs to this run."""
    resume_path = find_resume_checkpoint(run_dir, resume)
    if resume_path is None:
        return 0, None
    start, _, extra = load_checkpoint(resume_path, model=transformer, optimizer=optimizer, scheduler=scheduler,
                                      run_config=run_config)  # fmt: skip
    if extra.get("sampler_position") != sampler.position(start):
        raise CheckpointError(
            f"{resume_path}: sampler position {extra.get('sampler_position')} does not match iteration {start} "
            f"({sampler.position(start)} prompts); the checkpoint was not written by this run"
        )
    _set_rng_states(extra["rng"])
    return start, resume_path


@dataclass
class UpdatePlan:
    """One iteration's rewards (over every rank), advantages and this rank's micro-batches of kept samples."""

    all_frames: np.ndarray
    """``[P * G, F]`` per-frame rewards of every rollout of the iteration, in prompt order."""
    trajectory: np.ndarray
    """``[P, G]`` trajectory rewards (mean over frames)."""
    advantages: np.ndarray
    keep: np.ndarray
    local_advantages: torch.Tensor
    """``float32[local samples]`` this rank's advantages, by sample index."""
    samples: np.ndarray
    """This rank's kept sample indices."""
    parts: list[list[torch.Tensor]]
    """Optimizer steps of micro-batches (sample indices)."""
    units: list[float]
    """Per optimizer step: the loss units (tokens, or trained denoising steps) of its kept samples on every rank."""


def plan_update(per_frame: np.ndarray, *, group: int, iteration: int, sampler: PromptSampler, algo, dist: Dist,
                units_per_sample: int, logger: RunLogger) -> UpdatePlan:  # fmt: skip
    """Gather every rank's per-frame rewards, normalise them per group (:func:`group_advantages`), drop zero-std
    groups and split this rank's kept samples into ``algo.minibatches`` steps of ``algo.micro_batch``."""
    all_frames = dist.gather_rows(per_frame)  # [P * G, F] in prompt order
    trajectory = all_frames.mean(axis=1).reshape(-1, group)
    advantages, keep = group_advantages(trajectory, scale=algo.scale, eps=algo.adv_eps, clip=algo.adv_clip)
    logger.samples.log(step=iteration, items=sampler.global_prompts(iteration), rewards=trajectory,
                       advantages=advantages, train=keep)  # fmt: skip
    local_adv = torch.as_tensor(advantages[sampler.local_slots].reshape(-1), dtype=torch.float32)
    samples = np.nonzero(keep[sampler.local_slots].reshape(-1))[0]
    parts = _micro_batches(samples, algo.minibatches, algo.micro_batch)
    counts = torch.tensor([float(sum(len(m) for m in part)) for part in parts], dtype=torch.float64)
    units = (dist.reduce(counts) * units_per_sample).tolist()
    return UpdatePlan(all_frames, trajectory, advantages, keep, local_adv, samples, parts, units)


def update_steps(
    plan: UpdatePlan, micro_step, *, params: list[nn.Parameter], optimizer, scheduler, max_grad_norm: float | None,
    dist: Dist,
) -> tuple[LossStats, tuple[float, float] | None, list[float]]:  # fmt: skip
    """One optimizer step per part of ``plan``: ``micro_step(micro, units) -> LossStats`` runs a micro-batch's
    forward and backward (its loss divided by the step's global ``units``); gradients are summed over ranks,
    clipped, applied. Returns the summed stats, the first micro-step's ratio range and the gradient norms."""
    stats, first_ratio, grad_norms = LossStats(), None, []
    for part, units in zip(plan.parts, plan.units):
        if units == 0:  # every group of this slice had equal rewards on every rank: no step
            with warnings.catch_warnings():  # the schedule still advances, to stay aligned with iterations
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
                scheduler.step()
            continue
        optimizer.zero_grad(set_to_none=True)
        for micro in part:
            micro_stats = micro_step(micro, units)
            if first_ratio is None:
                first_ratio = (micro_stats.ratio_min, micro_stats.ratio_max)
            stats.add(micro_stats)
        sum_gradients(params, dist)
        max_norm = max_grad_norm if max_grad_norm is not None else math.inf
        grad_norms.append(float(torch.nn.utils.clip_grad_norm_(params, max_norm)))
        optimizer.step()
        scheduler.step()
    return stats, first_ratio, grad_norms


def reward_metrics(plan: UpdatePlan, grad_norms: list[float], dist: Dist) -> dict[str, Any]:
    """The iteration's reward statistics (global over ranks), trained samples and gradient norm(s)."""
    trajectory = plan.trajectory
    return {
        "reward_mean": float(trajectory.mean()),
        "reward_std": float(trajectory.std()),
        "reward_per_frame": plan.all_frames.mean(axis=0).tolist(),
        "frac_zero_std": float((~plan.keep[:, 0]).mean()),
        "reward_std_in_group": float(trajectory.std(axis=1).mean()),
        "samples_trained": int(dist.reduce(torch.tensor([float(len(plan.samples))])).item()),
        "grad_norm": grad_norms[0] if len(grad_norms) == 1 else (grad_norms or None),
    }


def checkpoint_if_due(
    run_dir: Path, done: int, config, *, sampler: PromptSampler, dist: Dist, transformer: nn.Module, optimizer,
    scheduler, run_config: dict, off_policy: bool,
) -> None:  # fmt: skip
    """Every ``checkpoint.every`` iterations and at the end: rank 0 saves (:func:`save_run_checkpoint`), all wait."""
    if done % config.checkpoint.every == 0 or done == config.iterations:
        if dist.main:
            extra = {"iteration": done, "sampler_position": sampler.position(done), "rng": _rng_states(),
                     "off_policy": off_policy, "world_size": dist.world}  # fmt: skip
            save_run_checkpoint(run_dir, done, transformer=transformer, optimizer=optimizer, scheduler=scheduler,
                                run_config=run_config, extra=extra, keep=config.checkpoint.keep)  # fmt: skip
        dist.barrier()


def open_run(config, model, suite) -> tuple[Dist, Path, Any]:
    """The start both paradigms share: validate ``config`` (GRPO or Flow-GRPO), join the process group, create the
    run directory and load ``config.model.path`` unless ``model`` is given (on this rank's GPU under torchrun)."""
    config.validate(require_paths=False)
    missing = [name for name, ok in (("out", config.out), ("model.path", model is not None or config.model.path),
                                     ("data.suite", suite is not None or config.data.suite)) if not ok]  # fmt: skip
    if missing:
        raise ConfigError(f"config {missing} empty: pass the run directory, the world model and the training suite")
    dist = Dist.from_env(config.model.device)
    device = config.model.device
    if device.startswith("cuda") and dist.world > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    run_dir = Path(config.out)
    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
    if model is None:
        from worldmodels.registry import load_world_model

        options = {} if config.model.reference_frames is None else {"reference_frames": config.model.reference_frames}
        if getattr(config.model, "compile", False):  # autoregressive models only (Flow-GRPO's has no such field)
            options["compile"] = True
        model = load_world_model(config.model.path, device=device, **options)
    return dist, run_dir, model


def train(
    config: PostTrainConfig,
    *,
    model=None,
    suite=None,
    reward_fn=None,
    eval_suite=None,
) -> dict[str, Any]:
    """Post-train ``config.model.path`` (or ``model``) on ``config.data.suite`` (or ``suite``) with GRPO.

    Args:
        config: the run (see :mod:`posttrain.config`); ``config.out`` is the run directory. A
            :class:`~posttrain.flow.config.FlowPostTrainConfig` runs Flow-GRPO on an NFD model instead.
        model: an already loaded ``MineWorld`` to start from (its weights are trained in place); default: load
            ``config.model.path``.
        suite: the training suite; default: load ``config.data.suite``.
        reward_fn: a per-frame reward ``(frames, actions[, items=]) -> float[B, F]``; default: built from
            ``config.reward``.
        eval_suite: held-out suite scored every ``logging.eval_every`` iterations; default: ``config.data.eval_suite``.

    Returns:
        The run summary (also written to ``<out>/summary.json``).
    """
    from worldmodels.mineworld import MineWorld, save_safetensors

    from posttrain.flow.config import FlowPostTrainConfig

    if isinstance(config, FlowPostTrainConfig):  # the diffusion paradigm (NFD): Flow-GRPO
        from posttrain.flow.trainer import train_flow

        return train_flow(config, model=model, suite=suite, reward_fn=reward_fn, eval_suite=eval_suite)
    started = time.perf_counter()
    dist, run_dir, model = open_run(config, model, suite)

    # -- the policy (and the frozen reference when beta > 0) --
    if not isinstance(model, MineWorld):
        from worldmodels.nfd import NFD

        hint = (" (NFD models post-train with Flow-GRPO: build the config with posttrain.flow.config.load_flow_config; "
                "`rlir posttrain` does so for NFD checkpoints)") if isinstance(model, NFD) else ""  # fmt: skip
        raise ConfigError(f"GRPO post-training needs a MineWorld-architecture model, got {type(model).__name__}{hint}")
    policy = model.eval().requires_grad_(False)
    reference, reference_kind = None, None
    if config.model.lora_rank > 0:
        params = add_lora(policy.transformer, rank=config.model.lora_rank, alpha=config.model.lora_alpha,
                          targets=config.model.lora_targets, seed=config.seed)  # fmt: skip
        reference_kind = "lora-disabled" if config.algo.beta > 0 else None
    else:
        policy.transformer.requires_grad_(True)
        params = list(policy.transformer.parameters())
        if config.algo.beta > 0:
            frozen = copy.deepcopy(policy.transformer).requires_grad_(False)
            reference = _Reference(frozen, policy.config, policy.device)
            reference_kind = "frozen-copy"
    named = [(n, p) for n, p in policy.transformer.named_parameters() if p.requires_grad]

    # -- data and reward --
    suite, eval_suite, n_frames, reward_fn, sampler = load_data(config, policy, dist, suite=suite,
                                                                eval_suite=eval_suite, reward_fn=reward_fn)  # fmt: skip
    group = config.rollout.group_size
    sampling = _sampling(config)
    hw = policy.config.tokens_per_frame

    # -- optimizer, schedule, resume --
    optimizer = make_adamw(named, lr=config.optim.lr, weight_decay=config.optim.weight_decay,
                           betas=tuple(config.optim.betas))  # fmt: skip
    total_steps = config.iterations * config.algo.minibatches
    scheduler = cosine_with_warmup(optimizer, warmup=config.optim.warmup, total=total_steps,
                                   min_ratio=config.optim.min_lr_ratio)  # fmt: skip
    run_config = {k: v for k, v in config_to_dict(config).items() if k not in ("out", "logging", "checkpoint")}
    run_config["world_size"] = dist.world
    start, resume_path = resume_run(run_dir, config.checkpoint.resume, transformer=policy.transformer,
                                    optimizer=optimizer, scheduler=scheduler, run_config=run_config,
                                    sampler=sampler)  # fmt: skip
    if dist.main:
        save_config(config, run_dir / "config.yaml")
    logger = RunLogger(run_dir, start=start, report_to=config.logging.report_to, enabled=dist.main,
                       samples=config.logging.samples)  # fmt: skip
    if config.off_policy and dist.main:
        print(f"note: rollouts use {sampling} (truncated or diagonal): the run is off-policy; old log-probs come "
              "from the full-softmax replay")  # fmt: skip

    last: dict[str, Any] = {}
    progress = Progress(config.iterations, "RLIR post-training", enabled=config.logging.progress and dist.main,
                        completed=start)  # fmt: skip
    temperature = sampling.temperature
    with progress:
        if config.logging.eval_every and eval_suite is not None and start == 0 and dist.main:
            logger.log(-1, evaluate_reward(policy, eval_suite, reward_fn, config))
        for iteration in range(start, config.iterations):
            watch = Stopwatch()
            lr = optimizer.param_groups[0]["lr"]

            # 1-2. prompts and rollouts
            items, slots = sampler.local_prompts(iteration)
            prompts = prompts_from_suite(suite, items, n_frames, keys=slots)
            with watch("rollout"), (parametrize.cached() if config.model.lora_rank > 0 else nullcontext()):
                batch = rollout(policy, prompts, group_size=group, sampling=sampling, seed=config.seed,
                                iteration=iteration, prompts_per_state=config.rollout.prompts_per_state)  # fmt: skip

            # 3. rewards, gathered over ranks, and group-normalised advantages
            with watch("reward"):
                videos = decode_videos(policy, batch, prompts)
                sample_items = [suite[int(i)] for i in items for _ in range(group)]
                actions = np.repeat(prompts.actions, group, axis=0)
                per_frame = compute_rewards(reward_fn, videos, actions, sample_items)
            plan = plan_update(per_frame, group=group, iteration=iteration, sampler=sampler, algo=config.algo,
                               dist=dist, units_per_sample=n_frames * hw, logger=logger)  # fmt: skip

            # 4. old (and reference) log-probs with the update's own micro-batches
            old, ref = {}, {}
            sampler_gap = torch.zeros(1, dtype=torch.float64)
            with watch("old_logp"), replay_mode(policy), torch.no_grad():
                for micro in (micro for part in plan.parts for micro in part):
                    key = int(micro[0])
                    old[key], _ = replay_logprobs(policy, batch, micro, temperature=temperature)
                    gap = (old[key].cpu() - batch.sampler_logprobs.flatten(0, 1)[micro]).abs().max()
                    sampler_gap = torch.maximum(sampler_gap, gap.double())
                    if config.algo.beta > 0:
                        ref[key] = _reference_logprobs(policy, reference, batch, micro, temperature)

            # 5. the update: one optimizer step per slice of the kept rollouts
            def micro_step(micro: torch.Tensor, tokens: float) -> LossStats:
                key = int(micro[0])
                logp, entropy = replay_logprobs(policy, batch, micro, temperature=temperature,
                                                gradient_checkpointing=config.model.gradient_checkpointing,
                                                with_entropy=True)  # fmt: skip
                loss, micro_stats = grpo_loss(
                    logp, old[key], plan.local_advantages[micro].to(logp.device),
                    torch.ones_like(logp, dtype=torch.bool), total_tokens=tokens, eps_low=config.algo.eps_low,
                    eps_high=config.algo.eps_high, beta=config.algo.beta, ref_logp=ref.get(key), entropy=entropy,
                )  # fmt: skip
                loss.backward()
                return micro_stats

            with watch("update"), replay_mode(policy):
                stats, first_ratio, grad_norms = update_steps(
                    plan, micro_step, params=params, optimizer=optimizer, scheduler=scheduler,
                    max_grad_norm=config.optim.max_grad_norm, dist=dist,
                )  # fmt: skip

            # 6. metrics (global over ranks), samples, evaluation, checkpoint
            record = {
                "lr": lr,
                **reward_metrics(plan, grad_norms, dist),
                **_loss_metrics(stats, first_ratio, sampler_gap, dist),
                **_speed_metrics(watch, batch.n_samples * n_frames * hw, 2 * len(plan.samples) * n_frames * hw),
                "peak_memory_mib": _peak_memory_mib(policy.device),
                "off_policy": config.off_policy,
                "reward": reward_name(reward_fn),
            }
            if _video_due(config.logging.video_every, iteration, config.iterations) and dist.main:
                _write_samples(run_dir, iteration, videos, per_frame, batch, reward_fn, policy.spec.fps,
                               config.logging.videos)  # fmt: skip
            done = iteration + 1
            if config.logging.eval_every and eval_suite is not None and dist.main:
                if done % config.logging.eval_every == 0 or done == config.iterations:
                    record.update(evaluate_reward(policy, eval_suite, reward_fn, config))
            logger.log(iteration, record)
            last = record
            checkpoint_if_due(run_dir, done, config, sampler=sampler, dist=dist, transformer=policy.transformer,
                              optimizer=optimizer, scheduler=scheduler, run_config=run_config,
                              off_policy=config.off_policy)  # fmt: skip
            progress.advance(1, f"reward {record['reward_mean']:.3f}")

    # -- the post-trained model --
    summary = {
        "iterations": config.iterations,
        "resumed_from": None if resume_path is None else str(resume_path),
        "off_policy": config.off_policy,
        "reward": reward_name(reward_fn),
        "reference": reference_kind,
        "trainable_parameters": sum(p.numel() for p in params),
        "final": last,
        "wall_s": round(time.perf_counter() - started, 3),
        "machine": machine_info(),
        "world_size": dist.world,
        "output": str(run_dir / OUTPUT_NAME),
    }
    if dist.main:
        from worldmodels.data.jsonl import atomic_output

        with atomic_output(run_dir / OUTPUT_NAME) as tmp:
            save_safetensors(merged_copy(policy), tmp)
        write_json(run_dir / "summary.json", summary)
        draw_curves(run_dir / "log.jsonl", run_dir / "curves.png")
    logger.close()
    dist.barrier()
    return summary
