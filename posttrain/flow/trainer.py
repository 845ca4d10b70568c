"""Flow-GRPO post-training of an NFD (next-frame diffusion) world model with inverse-dynamics rewards (RLIR's
diffusion paradigm, arXiv 2509.23958), or any per-frame reward.

:func:`posttrain.trainer.train` hands a :class:`~posttrain.flow.config.FlowPostTrainConfig` to :func:`train_flow`;
everything but the rollout and the loss's log-probabilities is the autoregressive trainer's own code (data, prompt
sampler, rewards gathered over ranks, group advantages, the clipped loss, optimizer steps, gradient all-reduce,
logging, checkpoints and resume). One iteration, top to bottom:

1. **prompts**: ``P`` suite items; each rank takes whole groups;
2. **rollout** (:func:`~posttrain.flow.rollout.flow_rollout`): ``G`` SDE rollouts per prompt from one prefilled
   context, each frame denoised in ``rollout.steps`` steps of the Flow-GRPO SDE (same initial noise in a group); per
   frame a random ``timestep_fraction`` of the non-final steps is kept for training;
3. **reward**: decode, per-frame rewards, trajectory reward = mean over frames; gathered over ranks and normalised
   per group (zero-std groups are dropped; advantages clipped to ``algo.adv_clip``);
4. **old log-probs**: the kept rollouts' trained steps are replayed without gradients
   (:func:`~posttrain.flow.rollout.replay_logprobs`, one packed forward per context window) in the micro-batches
   the update uses, so the first micro-step's ratio is exactly 1 (logged as ``ratio_first_microstep_min/max``); the
   gap to the KV-cached sampler's log-probs is logged too; with ``beta > 0`` the frozen reference's SDE means;
5. **update**: per trained step the PPO-clipped surrogate (:func:`~posttrain.grpo.core.grpo_loss` on the step
   ratios; see :mod:`posttrain.flow.config` for the clip range) plus ``beta`` times the closed-form KL between the
   policy's and the reference's Gaussian steps (:func:`~posttrain.flow.sde.gaussian_mean_kl`), averaged over every
   trained step of the accumulated batch on every rank; AdamW, cosine schedule;
6. **log**, sample videos, evaluation with the ODE sampler RLIR evaluates with (DPM-Solver++, 18 steps, fixed
   seeds), atomic **checkpoint**.

The result is ``<out>/model.safetensors``, an NFD file (``NFD.from_checkpoint``, ``rlir eval``, ``RLIR-NFD-v0``).
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np
import torch

from posttrain.config import config_to_dict, save_config
from posttrain.curves import draw_curves
from posttrain.flow.config import FlowPostTrainConfig
from posttrain.flow.rollout import FlowSampling, decode_videos, flow_rollout, replay_logprobs
from posttrain.flow.sde import gaussian_mean_kl
from posttrain.grpo.core import LossStats, grpo_loss
from posttrain.grpo.rollout import EVAL_STREAM, member_generator, prompts_from_suite
from posttrain.rewards import compute_rewards, reward_name
from posttrain.trainer import (
    OUTPUT_NAME,
    RunLogger,
    _loss_metrics,
    _peak_memory_mib,
    _speed_metrics,
    _video_due,
    _write_samples,
    checkpoint_if_due,
    load_data,
    open_run,
    plan_update,
    resume_run,
    reward_metrics,
    update_steps,
)
from worldmodels.errors import ConfigError
from worldmodels.hashing import sha256_file
from worldmodels.training.common import (
    Progress,
    Stopwatch,
    cosine_with_warmup,
    machine_info,
    make_adamw,
    write_json,
)

__all__ = ["evaluate_flow_reward", "flow_sampling", "train_flow"]


def flow_sampling(config: FlowPostTrainConfig) -> FlowSampling:
    """The rollout's SDE sampler from ``config.rollout``."""
    r = config.rollout
    return FlowSampling(steps=r.steps, noise_level=r.noise_level, shift=r.shift, fraction=r.timestep_fraction,
                        same_noise=r.same_noise, sde_type=r.sde_type)  # fmt: skip


@torch.no_grad()
def evaluate_flow_reward(policy, suite, reward_fn, config: FlowPostTrainConfig) -> dict[str, Any]:
    """Mean reward of one ODE rollout (``rollout.eval_sampler`` with ``rollout.eval_steps``) per item of ``suite``
    (its first ``data.eval_items``), with seeds that do not change during training."""
    from worldmodels.nfd import NFDSampling

    n = min(config.data.eval_items, len(suite))
    n_frames = min(config.data.n_frames or suite.n_frames, suite.n_frames)
    prompts = prompts_from_suite(suite, range(n), n_frames)
    sampling = NFDSampling(config.rollout.eval_sampler, config.rollout.eval_steps, config.rollout.shift)
    per_state = config.rollout.prompts_per_state or n
    videos = []
    for begin in range(0, n, per_state):
        rows = range(begin, min(n, begin + per_state))
        generators = [member_generator(config.seed, 0, i, 0, stream=EVAL_STREAM, device=policy.device.type)
                      for i in rows]  # fmt: skip
        context = torch.as_tensor(prompts.context_frames[begin : rows.stop])
        state = policy.start(context, prompts.context_actions[begin : rows.stop], generators, sampling=sampling)
        frames = [policy.step(state, prompts.actions[begin : rows.stop, k]).cpu().numpy() for k in range(n_frames)]
        videos.append(np.concatenate([prompts.context_frames[begin : rows.stop, -1:], np.stack(frames, 1)], 1))
    rewards = compute_rewards(reward_fn, np.concatenate(videos), prompts.actions, [suite[i] for i in range(n)])
    return {"eval_reward_mean": float(rewards.mean()), "eval_reward_per_frame": rewards.mean(axis=0).tolist()}


def train_flow(
    config: FlowPostTrainConfig,
    *,
    model=None,
    suite=None,
    reward_fn=None,
    eval_suite=None,
) -> dict[str, Any]:
    """Post-train ``config.model.path`` (or ``model``, an ``NFD``) on ``config.data.suite`` with Flow-GRPO.

    Args:
        config: the run (see :mod:`posttrain.flow.config`); ``config.out`` is the run directory.
        model: an already loaded ``NFD`` to start from (its transformer is trained in place); default: load
            ``config.model.path``.
        suite, reward_fn, eval_suite: as for :func:`posttrain.trainer.train`.

    Returns:
        The run summary (also written to ``<out>/summary.json``).
    """
    from worldmodels.data.jsonl import atomic_output
    from worldmodels.nfd import NFD, save_nfd

    started = time.perf_counter()
    dist, run_dir, model = open_run(config, model, suite)

    # -- the policy (and the frozen reference when beta > 0) --
    if not isinstance(model, NFD):
        raise ConfigError(
            f"Flow-GRPO post-trains NFD models, got {type(model).__name__}; autoregressive (MineWorld) models use "
            "posttrain.config.load_config"
        )
    policy = model.eval().requires_grad_(False)
    transformer = policy.transformer.requires_grad_(True)
    params = list(transformer.parameters())
    reference = copy.deepcopy(transformer).requires_grad_(False) if config.algo.beta > 0 else None

    # -- data, reward, sampler, optimizer, resume --
    suite, eval_suite, n_frames, reward_fn, sampler = load_data(config, policy, dist, suite=suite,
                                                                eval_suite=eval_suite, reward_fn=reward_fn)  # fmt: skip
    group = config.rollout.group_size
    sampling = flow_sampling(config)
    trained_steps = n_frames * sampling.steps_per_frame  # loss units per sample
    hw = policy.config.tokens_per_frame
    optimizer = make_adamw(list(transformer.named_parameters()), lr=config.optim.lr,
                           weight_decay=config.optim.weight_decay, betas=tuple(config.optim.betas))  # fmt: skip
    total_steps = config.iterations * config.algo.minibatches
    scheduler = cosine_with_warmup(optimizer, warmup=config.optim.warmup, total=total_steps,
                                   min_ratio=config.optim.min_lr_ratio)  # fmt: skip
    run_config = {k: v for k, v in config_to_dict(config).items() if k not in ("out", "logging", "checkpoint")}
    run_config |= {"paradigm": "flow-grpo", "world_size": dist.world}
    start, resume_path = resume_run(run_dir, config.checkpoint.resume, transformer=transformer, optimizer=optimizer,
                                    scheduler=scheduler, run_config=run_config, sampler=sampler)  # fmt: skip
    if dist.main:
        save_config(config, run_dir / "config.yaml")
    logger = RunLogger(run_dir, start=start, report_to=config.logging.report_to, enabled=dist.main,
                       samples=config.logging.samples)  # fmt: skip

    last: dict[str, Any] = {}
    progress = Progress(config.iterations, "RLIR Flow-GRPO", enabled=config.logging.progress and dist.main,
                        completed=start)  # fmt: skip
    with progress:
        if config.logging.eval_every and eval_suite is not None and start == 0 and dist.main:
            logger.log(-1, evaluate_flow_reward(policy, eval_suite, reward_fn, config))
        for iteration in range(start, config.iterations):
            watch = Stopwatch()
            lr = optimizer.param_groups[0]["lr"]

            # 1-2. prompts and SDE rollouts
            items, slots = sampler.local_prompts(iteration)
            prompts = prompts_from_suite(suite, items, n_frames, keys=slots)
            with watch("rollout"):
                batch = flow_rollout(policy, prompts, group_size=group, sampling=sampling, seed=config.seed,
                                     iteration=iteration,
                                     prompts_per_state=config.rollout.prompts_per_state)  # fmt: skip

            # 3. rewards, gathered over ranks, and group-normalised advantages
            with watch("reward"):
                videos = decode_videos(policy, batch, prompts)
                sample_items = [suite[int(i)] for i in items for _ in range(group)]
                actions = np.repeat(prompts.actions, group, axis=0)
                per_frame = compute_rewards(reward_fn, videos, actions, sample_items)
            plan = plan_update(per_frame, group=group, iteration=iteration, sampler=sampler, algo=config.algo,
                               dist=dist, units_per_sample=trained_steps, logger=logger)  # fmt: skip

            # 4. old log-probs (and the reference's SDE means) with the update's own micro-batches
            old, ref_mean = {}, {}
            sampler_gap = torch.zeros(1, dtype=torch.float64)
            with watch("old_logp"), torch.no_grad():
                for micro in (micro for part in plan.parts for micro in part):
                    key = int(micro[0])
                    old[key], _, _ = replay_logprobs(transformer, batch, micro, device=policy.device)
                    gap = (old[key].cpu() - batch.sampler_logprobs[micro]).abs().max()
                    sampler_gap = torch.maximum(sampler_gap, gap.double())
                    if reference is not None:
                        ref_mean[key] = replay_logprobs(reference, batch, micro, device=policy.device)[1]

            # 5. the update: clipped surrogate per trained step (+ beta * closed-form KL to the reference)
            def micro_step(micro: torch.Tensor, units: float) -> LossStats:
                key = int(micro[0])
                logp, mean, std = replay_logprobs(transformer, batch, micro, device=policy.device)
                loss, stats = grpo_loss(logp, old[key], plan.local_advantages[micro].to(logp.device),
                                        torch.ones_like(logp, dtype=torch.bool), total_tokens=units,
                                        eps_low=config.algo.clip_range, eps_high=config.algo.clip_range)  # fmt: skip
                if reference is not None:
                    kl = gaussian_mean_kl(mean.flatten(0, 2), ref_mean[key].flatten(0, 2), std.flatten(0, 2))
                    loss = loss + config.algo.beta * kl.sum() / units
                    stats.kl = float(kl.detach().sum())
                loss.backward()
                return stats

            with watch("update"):
                stats, first_ratio, grad_norms = update_steps(
                    plan, micro_step, params=params, optimizer=optimizer, scheduler=scheduler,
                    max_grad_norm=config.optim.max_grad_norm, dist=dist,
                )  # fmt: skip

            # 6. metrics (global over ranks), samples, evaluation, checkpoint
            frames_generated = batch.n_samples * n_frames
            record = {
                "lr": lr,
                **reward_metrics(plan, grad_norms, dist),
                **_loss_metrics(stats, first_ratio, sampler_gap, dist),
                **_speed_metrics(watch, frames_generated * hw * sampling.steps,
                                 2 * len(plan.samples) * trained_steps * hw),  # fmt: skip
                "rollout_frames_per_s": frames_generated / max(watch.report().get("rollout_s", 0.0), 1e-9),
                "peak_memory_mib": _peak_memory_mib(policy.device),
                "off_policy": False,
                "reward": reward_name(reward_fn),
            }
            if _video_due(config.logging.video_every, iteration, config.iterations) and dist.main:
                _write_samples(run_dir, iteration, videos, per_frame, batch, reward_fn, policy.spec.fps,
                               config.logging.videos)  # fmt: skip
            done = iteration + 1
            if config.logging.eval_every and eval_suite is not None and dist.main:
                if done % config.logging.eval_every == 0 or done == config.iterations:
                    record.update(evaluate_flow_reward(policy, eval_suite, reward_fn, config))
            logger.log(iteration, record)
            last = record
            checkpoint_if_due(run_dir, done, config, sampler=sampler, dist=dist, transformer=transformer,
                              optimizer=optimizer, scheduler=scheduler, run_config=run_config,
                              off_policy=False)  # fmt: skip
            progress.advance(1, f"reward {record['reward_mean']:.3f}")

    # -- the post-trained model --
    summary = {
        "paradigm": "flow-grpo",
        "iterations": config.iterations,
        "resumed_from": None if resume_path is None else str(resume_path),
        "off_policy": False,
        "reward": reward_name(reward_fn),
        "reference": "frozen-copy" if reference is not None else None,
        "trainable_parameters": sum(p.numel() for p in params),
        "sampling": {"steps": sampling.steps, "noise_level": sampling.noise_level, "fraction": sampling.fraction,
                     "trained_steps_per_frame": sampling.steps_per_frame, "sde_type": sampling.sde_type},
        "final": last,
        "wall_s": round(time.perf_counter() - started, 3),
        "machine": machine_info(),
        "world_size": dist.world,
        "output": str(run_dir / OUTPUT_NAME),
    }  # fmt: skip
    if dist.main:
        with atomic_output(run_dir / OUTPUT_NAME) as tmp:
            save_nfd(policy, tmp)
        summary["output_sha256"] = sha256_file(run_dir / OUTPUT_NAME)
        write_json(run_dir / "summary.json", summary)
        draw_curves(run_dir / "log.jsonl", run_dir / "curves.png")
    logger.close()
    dist.barrier()
    return summary
