"""What GRPO can learn from each reward: on a world model's own rollouts, per reward, (a) how well it ranks the
rollouts *within* a group the way the benchmark's held-out IDM does, and (b) the signal-to-noise ratio of the policy
gradient it produces.

For ``--groups`` prompts of the training suite, ``--group-size`` rollouts of ``--frames`` frames each are sampled as
GRPO samples them (``posttrain.grpo.rollout``, temperature 1), decoded, and scored by every reward below. Then:

* **within-group correlation**: per group, the Pearson correlation between a reward's per-rollout values and the
  held-out IDM's exact-match score of the same rollouts (groups where either is constant are skipped); mean and
  standard error over groups. This is what a GRPO advantage is made of; the correlation *across* clips
  (``bench/reward_agreement.py``) also counts how hard the prompts are, which GRPO subtracts.
* **gradient SNR**: per group, the REINFORCE/GRPO direction ``g = sum_i A_i grad log p(rollout_i) / G`` with the
  group-normalised advantages ``A`` of that reward; the SNR is the mean pairwise cosine between the groups' ``g``
  (1 for a noiseless gradient, 0 for pure noise; it grows with the share of the gradient that all groups agree on),
  with a jackknife standard error over groups. Per-rollout gradients are computed once (one backward per rollout) and
  combined for every reward, so all rewards are measured on the same rollouts.

Rewards: every form of ``posttrain.config.REWARD_FORMS`` with the ``--idm`` ensemble, ``agreement`` with the old
single reward IDM, the pixel reward (RLVR-World's), and two controls through the same code: ``brightness`` (mean
intensity of the generated frames, trivially learnable) and ``random`` (i.i.d. normal: SNR 0 within error). The
held-out IDM's own exact score is listed as a reference (what GRPO would see if it optimised the judge; it never
does).

    .venv/bin/python bench/reward_signal.py --suite runs/embedded/train-suite --idm crafter-idm-ensemble
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from evaluation.idm.registry import HELDOUT_IDM, REWARD_ENSEMBLE, REWARD_IDM, expand_idm_names, load_idm
from evaluation.scoring import taxonomy_for
from evaluation.suites import load_suite
from posttrain.config import REWARD_FORMS
from posttrain.data import prompts_from_suite
from posttrain.grpo.core import group_advantages
from posttrain.grpo.replay import replay_logprobs, replay_mode
from posttrain.grpo.rollout import decode_videos, rollout
from posttrain.rewards import IDMReward, PixelReward, compute_rewards, task_class_weights
from worldmodels.mineworld.sampling import SamplingConfig
from worldmodels.registry import load_world_model


def within_group_correlation(reward: np.ndarray, judge: np.ndarray) -> tuple[float, float, int]:
    """Mean and standard error over groups of the Pearson correlation of ``reward`` and ``judge`` ``[K, G]``."""
    values = []
    for r, j in zip(reward, judge):
        if r.std() > 0 and j.std() > 0:
            values.append(float(np.corrcoef(r, j)[0, 1]))
    if len(values) < 2:
        return float("nan"), float("nan"), len(values)
    return float(np.mean(values)), float(np.std(values, ddof=1) / np.sqrt(len(values))), len(values)


def mean_pairwise_cosine(directions: torch.Tensor) -> tuple[float, float]:
    """Mean off-diagonal cosine of the rows of ``directions [K, D]`` and its jackknife standard error over rows."""
    norms = directions.norm(dim=1, keepdim=True)
    unit = (directions / norms.clamp_min(1e-30)).double()
    unit = unit[norms[:, 0] > 0]
    k = len(unit)
    if k < 3:
        return float("nan"), float("nan")
    gram = unit @ unit.T
    off = gram.sum() - gram.diagonal().sum()
    full = float(off / (k * (k - 1)))
    row = gram.sum(1) - gram.diagonal()  # each group's summed cosine with the others
    leave_one_out = ((off - 2 * row) / ((k - 1) * (k - 2))).numpy()
    se = float(np.sqrt((k - 1) / k * ((leave_one_out - leave_one_out.mean()) ** 2).sum()))
    return full, se


def per_rollout_gradients(model, batch, group: int, params: list[torch.Tensor]) -> torch.Tensor:
    """``float32[G, D]``: the gradient of each rollout's summed token log-probability in group ``group``."""
    size = batch.group_size
    rows = []
    for member in range(size):
        sample = torch.tensor([group * size + member])
        logp, _ = replay_logprobs(model, batch, sample)
        grads = torch.autograd.grad(logp.sum(), params)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="crafter-mineworld")
    parser.add_argument("--suite", default="runs/embedded/train-suite", help="the training prompts (never the benchmark)")
    parser.add_argument("--idm", default=REWARD_ENSEMBLE, help="the reward ensemble, comma-separated")
    parser.add_argument("--groups", type=int, default=48)
    parser.add_argument("--group-size", type=int, default=16)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--first-item", type=int, default=0, help="prompts are items first-item .. first-item+groups-1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="sample with the compiled decode step")
    parser.add_argument("--out", type=Path, default=None, help="write the table's numbers as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    model = load_world_model(args.model, compile=args.compile)
    suite = load_suite(args.suite)
    taxonomy = taxonomy_for(suite)
    ensemble = [load_idm(name) for name in expand_idm_names(args.idm.split(","))]
    indices = np.arange(args.first_item, args.first_item + args.groups)
    prompts = prompts_from_suite(suite, indices, args.frames)
    items = [suite[int(i)] for i in indices for _ in range(args.group_size)]
    batch = rollout(model, prompts, group_size=args.group_size, sampling=SamplingConfig(temperature=1.0),
                    seed=args.seed, iteration=0, prompts_per_state=16)  # fmt: skip
    videos = decode_videos(model, batch, prompts)
    actions = np.repeat(prompts.actions, args.group_size, axis=0)
    print(f"{args.groups} groups x {args.group_size} rollouts x {args.frames} frames sampled and decoded in "
          f"{time.perf_counter() - start:.0f} s", flush=True)  # fmt: skip

    weights = task_class_weights(np.concatenate([taxonomy.labels(suite[i].actions) for i in range(len(suite))]),
                                 taxonomy)  # fmt: skip
    rewards: dict[str, IDMReward | PixelReward] = {}
    for form in REWARD_FORMS:
        kwargs = {"class_weights": weights} if form == "task-weighted" else {}
        rewards[f"{form} ({len(ensemble)} IDMs)"] = IDMReward(ensemble, taxonomy, form=form, **kwargs)
    rewards[f"agreement ({REWARD_IDM}, the old reward)"] = IDMReward(load_idm(REWARD_IDM), taxonomy)
    rewards["pixel (L1 + 1 - SSIM)"] = PixelReward()
    judge = IDMReward(load_idm(HELDOUT_IDM), taxonomy, form="exact")
    per_rollout = {name: compute_rewards(fn, videos, actions, items).mean(axis=1) for name, fn in rewards.items()}
    per_rollout["brightness (control)"] = videos[:, 1:].astype(np.float64).mean(axis=(1, 2, 3, 4)) / 255.0
    per_rollout["random (control)"] = np.random.default_rng(args.seed).standard_normal(len(videos))
    judge_score = compute_rewards(judge, videos, actions, items).mean(axis=1)
    per_rollout["held-out IDM, exact (reference, never optimised)"] = judge_score
    shape = (args.groups, args.group_size)

    params = [p for p in model.transformer.parameters() if p.requires_grad]
    directions = {name: [] for name in per_rollout}
    advantages = {name: group_advantages(r.reshape(shape))[0] for name, r in per_rollout.items()}
    grad_start = time.perf_counter()
    with torch.enable_grad(), replay_mode(model):
        for k in range(args.groups):
            grads = per_rollout_gradients(model, batch, k, params)
            for name in per_rollout:
                a = torch.as_tensor(advantages[name][k], dtype=torch.float32)
                directions[name].append(a @ grads / args.group_size)
    print(f"per-rollout gradients in {time.perf_counter() - grad_start:.0f} s\n", flush=True)

    results = {}
    print(f"{args.model} on {suite.name}: {args.groups} groups x {args.group_size} rollouts x {args.frames} frames, "
          f"seed {args.seed}; judge {HELDOUT_IDM} (exact match)\n")  # fmt: skip
    print("| reward | mean | within-group std | within-group corr. with the judge | gradient SNR (x1e-3) |")
    print("|---|---:|---:|---:|---:|")
    for name, values in per_rollout.items():
        grouped = values.reshape(shape)
        corr, corr_se, n = within_group_correlation(grouped, judge_score.reshape(shape))
        snr, snr_se = mean_pairwise_cosine(torch.stack(directions[name]))
        results[name] = {"mean": float(values.mean()), "within_group_std": float(grouped.std(axis=1, ddof=1).mean()),
                         "corr": corr, "corr_se": corr_se, "corr_groups": n, "snr": snr, "snr_se": snr_se}  # fmt: skip
        print(f"| {name} | {values.mean():.3f} | {grouped.std(axis=1, ddof=1).mean():.3f} | {corr:.2f} ± {corr_se:.2f} "
              f"| {1e3 * snr:.2f} ± {1e3 * snr_se:.2f} |")  # fmt: skip
    print(f"\n(± one standard error over groups; {time.perf_counter() - start:.0f} s in all)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                       indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
