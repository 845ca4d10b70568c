"""RLIR post-training: the one iteration, for every paradigm (GRPO on autoregressive models, Flow-GRPO on NFD).

:func:`train` reads top to bottom; one iteration is

1. **prompts**: ``P`` suite items (:class:`~posttrain.data.PromptSampler`); each rank takes whole groups;
2. **rollouts**: ``G`` per prompt, the context prefilled once and fanned out to the group (``paradigm.rollout``);
3. **rewards**: decoded frames -> per-frame rewards (:mod:`posttrain.rewards`) -> trajectory reward (mean over
   frames), gathered over ranks and normalised per group (:func:`~posttrain.update.plan_update`); groups whose
   rewards are all equal are dropped from the update;
4. **old log-probs**: the kept rollouts replayed without gradients, in the micro-batches the update will use, so
   the first micro-step's ratio is exactly 1 (logged as ``ratio_first_microstep_min/max``); the reference's too
   when ``beta > 0``;
5. **update**: per optimizer step, the clipped loss of each micro-batch (``paradigm.loss``), gradients summed over
   ranks, clipped, AdamW step, cosine schedule;
6. **log** (jsonl + TensorBoard), sample videos, the fixed-seed probe (:mod:`posttrain.probe`: rewards, probe IDMs
   and PSNR with their standard errors), atomic **checkpoint**.

What depends on how a model generates a frame is the paradigm's (:class:`~posttrain.paradigm.Paradigm`:
:class:`~posttrain.grpo.paradigm.GRPO`, :class:`~posttrain.flow.paradigm.FlowGRPO`). Everything random is drawn
from generators seeded by ``(seed, iteration, prompt slot, member)``, and a checkpoint holds weights, optimizer,
scheduler, RNG states and the sampler position, so a run killed at any point and resumed with
``checkpoint.resume=auto`` ends with the same weights as an uninterrupted run. The result is
``<out>/model.safetensors``, loadable by the model's class (``rlir eval --model``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn

from posttrain.checkpoint import checkpoint_if_due, resume_run
from posttrain.config import PostTrainConfig, save_config
from posttrain.curves import draw_curves
from posttrain.data import prompts_from_suite
from posttrain.flow.config import FlowPostTrainConfig
from posttrain.flow.paradigm import FlowGRPO
from posttrain.grpo.core import LossStats
from posttrain.grpo.paradigm import GRPO
from posttrain.metrics import (
    RunLogger,
    loss_metrics,
    peak_memory_mib,
    reward_metrics,
    reward_term_metrics,
    speed_metrics,
)
from posttrain.paradigm import Paradigm
from posttrain.probe import probe_values, summarize_probe
from posttrain.rewards import compute_rewards, reward_name
from posttrain.run import OUTPUT_NAME, load_data, open_run
from posttrain.update import make_train_state, optimizer_step, plan_update, skip_step
from worldmodels.hashing import sha256_file
from worldmodels.runtime.files import atomic_output, write_json
from worldmodels.runtime.progress import Progress
from worldmodels.training.common import Stopwatch, machine_info


def make_paradigm(config: PostTrainConfig | FlowPostTrainConfig, model: nn.Module, *, verbose: bool) -> Paradigm:
    """Flow-GRPO for a :class:`~posttrain.flow.config.FlowPostTrainConfig` (NFD models), else GRPO."""
    if isinstance(config, FlowPostTrainConfig):
        return FlowGRPO(config, model)
    return GRPO(config, model, verbose=verbose)


def train(
    config: PostTrainConfig | FlowPostTrainConfig,
    *,
    model: nn.Module | None = None,
    suite: Any = None,
    reward_fn: Any = None,
    eval_suite: Any = None,
) -> dict[str, Any]:
    """Post-train ``config.model.path`` (or ``model``) on ``config.data.suite`` (or ``suite``).

    Args:
        config: the run; ``config.out`` is the run directory. A :class:`~posttrain.config.PostTrainConfig` runs GRPO
            on an autoregressive (MineWorld) model, a :class:`~posttrain.flow.config.FlowPostTrainConfig` Flow-GRPO
            on an NFD model (``rlir posttrain`` picks the config from the checkpoint).
        model: an already loaded model to start from (its weights are trained in place); default: load
            ``config.model.path``.
        suite: the training suite; default: load ``config.data.suite``.
        reward_fn: a per-frame reward ``(frames, actions[, items=]) -> float[B, F]``; default: built from
            ``config.reward``.
        eval_suite: suite probed every ``logging.eval_every`` iterations (:mod:`posttrain.probe`); default:
            ``config.data.eval_suite``.

    Returns:
        The run summary (also written to ``<out>/summary.json``).
    """
    started = time.perf_counter()
    run, model = open_run(config, model, suite)
    dist = run.dist
    paradigm = make_paradigm(config, model, verbose=dist.main)
    data = load_data(run, paradigm.policy, suite=suite, eval_suite=eval_suite, reward_fn=reward_fn)
    state = make_train_state(run, paradigm.transformer, paradigm.params, paradigm.run_tags)
    start, resume_path = resume_run(run, state, data.sampler)
    if dist.main:
        save_config(config, run.dir / "config.yaml")
    logger = RunLogger(run.dir, config.logging, start=start, enabled=dist.main)
    group = config.rollout.group_size
    evaluating = bool(config.logging.eval_every) and data.eval_suite is not None and dist.main

    last: dict[str, Any] = {}
    with Progress(config.iterations, paradigm.title, enabled=config.logging.progress and dist.main,
                  completed=start) as progress:  # fmt: skip
        def probe() -> dict[str, np.ndarray]:
            return probe_values(*paradigm.probe_videos(data.eval_suite), data.eval_suite, data.reward_fn,
                                data.probe_rewards)  # fmt: skip

        first_probe = None  # the per-item values before any update: later probes report their paired change
        if evaluating and start == 0:
            first_probe = probe()
            logger.log(-1, summarize_probe(first_probe))
        for iteration in range(start, config.iterations):
            watch = Stopwatch()
            lr = state.optimizer.param_groups[0]["lr"]

            # 1-2. prompts and rollouts
            items, slots = data.sampler.local_prompts(iteration)
            prompts = prompts_from_suite(data.suite, items, data.n_frames, keys=slots)
            with watch("rollout"):
                batch = paradigm.rollout(prompts, iteration)

            # 3. rewards, gathered over ranks, and group-normalised advantages
            with watch("reward"):
                videos = paradigm.decode(batch, prompts)
                sample_items = [data.suite[int(i)] for i in items for _ in range(group)]
                actions = np.repeat(prompts.actions, group, axis=0)
                per_frame = compute_rewards(data.reward_fn, videos, actions, sample_items)
            plan = plan_update(run, per_frame, data.sampler, paradigm.loss_units(batch))
            logger.log_groups(iteration, data.sampler.global_prompts(iteration), plan)

            # 4. old (and reference) log-probs with the update's own micro-batches
            old = {}
            sampler_gap = torch.zeros(1, dtype=torch.float64)
            with watch("old_logp"), paradigm.replaying(), torch.no_grad():
                for micro in plan.micro_batches():
                    old[int(micro[0])] = replay = paradigm.old_logprobs(batch, micro)
                    gap = (replay.logp.cpu() - replay.sampler).abs().max()
                    sampler_gap = torch.maximum(sampler_gap, gap.double())

            # 5. the update: one optimizer step per slice of the kept rollouts
            stats, first_ratio, grad_norms = LossStats(), None, []
            with watch("update"), paradigm.replaying():
                for part, units in zip(plan.parts, plan.units):
                    if units == 0:  # every group of this slice had equal rewards on every rank
                        skip_step(state)
                        continue
                    state.optimizer.zero_grad(set_to_none=True)
                    for micro in part:
                        advantages = plan.local_advantages[micro]
                        loss, micro_stats = paradigm.loss(batch, micro, old[int(micro[0])], advantages, units)
                        loss.backward()
                        if first_ratio is None:
                            first_ratio = (micro_stats.ratio_min, micro_stats.ratio_max)
                        stats.add(micro_stats)
                    grad_norms.append(optimizer_step(run, state))

            # 6. metrics (global over ranks), samples, evaluation, checkpoint
            record = {
                "lr": lr,
                **reward_metrics(plan, grad_norms, dist),
                **reward_term_metrics(data.reward_fn, dist),
                **loss_metrics(stats, first_ratio, sampler_gap, dist),
                **speed_metrics(watch, paradigm.throughput(batch, len(plan.samples))),
                "peak_memory_mib": peak_memory_mib(paradigm.policy.device),
                "off_policy": paradigm.off_policy,
                "reward": reward_name(data.reward_fn),
            }
            if logger.videos_due(iteration, config.iterations):
                logger.write_videos(iteration, videos, per_frame, batch, data.reward_fn, paradigm.policy.spec.fps)
            done = iteration + 1
            if evaluating and (done % config.logging.eval_every == 0 or done == config.iterations):
                record.update(summarize_probe(probe(), first_probe))
            logger.log(iteration, record)
            last = record
            checkpoint_if_due(run, state, data.sampler, done, off_policy=paradigm.off_policy)
            progress.advance(1, f"reward {record['reward_mean']:.3f}")

    # -- the post-trained model --
    summary = {
        "iterations": config.iterations,
        "resumed_from": None if resume_path is None else str(resume_path),
        "off_policy": paradigm.off_policy,
        "reward": reward_name(data.reward_fn),
        **paradigm.summary(),
        "trainable_parameters": sum(p.numel() for p in paradigm.params),
        "final": last,
        "wall_s": round(time.perf_counter() - started, 3),
        "machine": machine_info(),
        "world_size": dist.world,
        "output": str(run.dir / OUTPUT_NAME),
    }
    if dist.main:
        with atomic_output(run.dir / OUTPUT_NAME) as tmp:
            paradigm.save(tmp)
        summary["output_sha256"] = sha256_file(run.dir / OUTPUT_NAME)
        write_json(run.dir / "summary.json", summary)
        draw_curves(run.dir / "log.jsonl", run.dir / "curves.png")
    logger.close()
    dist.barrier()
    return summary
