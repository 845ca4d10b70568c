"""What a post-training run reports: one ``log.jsonl`` line per iteration (also to TensorBoard or W&B), the groups'
rewards and advantages (``samples.jsonl``), sample videos, and the metrics that go into them (global over ranks)."""

from __future__ import annotations

import json
import math
import resource
from pathlib import Path
from typing import Any

import numpy as np
import torch

from posttrain.grpo.core import LossStats
from posttrain.paradigm import Throughput
from posttrain.update import UpdatePlan
from worldmodels.data.video import write_video
from worldmodels.runtime.distributed import Distributed
from worldmodels.training.common import JsonlLogger, Stopwatch


class RunLogger:
    """Metrics to ``log.jsonl`` (one line per iteration) and to ``logging.report_to`` (TensorBoard or W&B scalars;
    lists as one scalar per index); with ``logging.samples`` every group's rewards to ``samples.jsonl``; sample
    videos. Only the main rank writes (``enabled``)."""

    def __init__(self, run_dir: Path, logging: Any, *, start: int, enabled: bool):
        self.run_dir = run_dir
        self.logging = logging
        self.enabled = enabled
        resume_step = start - 1 if start else None
        report_to = logging.report_to if enabled else "none"
        self.jsonl = JsonlLogger(run_dir / "log.jsonl" if enabled else None, resume_step=resume_step,
                                 report_to=report_to)  # fmt: skip
        path = run_dir / "samples.jsonl" if enabled and logging.samples else None
        self.samples = JsonlLogger(path, resume_step=resume_step)

    def log(self, step: int, record: dict[str, Any]) -> None:
        if self.enabled:
            self.jsonl.log(step=step, **record)

    def log_groups(self, step: int, items: np.ndarray, plan: UpdatePlan) -> None:
        """Every group's prompt items, trajectory rewards, advantages and which rollouts were trained."""
        self.samples.log(step=step, items=items, rewards=plan.trajectory, advantages=plan.advantages, train=plan.keep)

    def videos_due(self, iteration: int, iterations: int) -> bool:
        """Sample videos every ``logging.video_every`` iterations and at the last one, so every run ends with a look
        at its result."""
        every = self.logging.video_every
        return self.enabled and bool(every) and (iteration % every == 0 or iteration == iterations - 1)

    def write_videos(self, iteration: int, videos: np.ndarray, rewards: np.ndarray, batch: Any, reward_fn: Any,
                     fps: float) -> None:  # fmt: skip
        """The first ``logging.videos`` rollouts as mp4 (context frame + generated frames) with a per-frame jsonl
        sidecar (the reward, and what ``reward_fn.describe`` says of each frame)."""
        directory = self.run_dir / "videos"
        for s in range(min(self.logging.videos, len(videos))):
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

    def close(self) -> None:
        self.jsonl.close()


def peak_memory_mib(device: torch.device) -> float:
    """Peak GPU memory allocated on ``device``, or the process's peak resident memory on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def reward_metrics(plan: UpdatePlan, grad_norms: list[float], dist: Distributed) -> dict[str, Any]:
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


def reward_term_metrics(reward_fn: Any, dist: Distributed) -> dict[str, float]:
    """``reward_mean_<label>``: each term's mean of the iteration (over ranks) when the reward is a sum of terms
    (:class:`~posttrain.rewards.WeightedRewardSum`, e.g. ``reward_mean_idm`` and ``reward_mean_pixel``)."""
    return {f"reward_mean_{label}": dist.mean(mean) for label, mean in getattr(reward_fn, "last_terms", {}).items()}


def loss_metrics(
    stats: LossStats, first_ratio: tuple[float, float] | None, sampler_gap: torch.Tensor, dist: Distributed
) -> dict[str, Any]:
    """Per-token loss diagnostics over every rank, the first micro-step's ratio range (exactly 1 on-policy) and the
    largest gap between the sampler's and the replay's log-probs."""
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


def speed_metrics(watch: Stopwatch, work: Throughput) -> dict[str, float]:
    """Seconds per phase and tokens (and frames) per second of the rollout and of the replay."""
    phases = watch.report()
    seconds = {name: phases.get(f"{name}_s", 0.0) for name in ("rollout", "reward", "old_logp", "update")}
    metrics = {
        **{f"time_{name}_s": value for name, value in seconds.items()},
        "time_iteration_s": phases["total_s"],
        "rollout_tokens_per_s": work.rollout_tokens / max(seconds["rollout"], 1e-9),
        "replay_tokens_per_s": work.replay_tokens / max(seconds["old_logp"] + seconds["update"], 1e-9),
    }
    if work.rollout_frames is not None:
        metrics["rollout_frames_per_s"] = work.rollout_frames / max(seconds["rollout"], 1e-9)
    return metrics
