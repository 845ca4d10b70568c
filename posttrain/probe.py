"""The fixed-seed probe a post-training run logs before it starts and every ``logging.eval_every`` iterations.

The same items of ``data.eval_suite`` (its first ``data.eval_items``) are rolled out with seeds that never change
(:meth:`~posttrain.paradigm.Paradigm.probe_videos`), so two probes differ only by the weights. Every number comes with
its standard error over the items, because a reward curve is only read as rising when it rises beyond its error bars:

* ``eval_reward_mean`` / ``_sem`` / ``_per_frame``: the training reward;
* ``eval_reward_<idm>_mean`` / ``_sem``: the reward in the same form read by each IDM of ``logging.probe_idm``, which
  watch but are never optimised (e.g. the held-out IDM: does a gain in the reward IDM's eyes hold in another's?);
* ``eval_psnr_mean`` / ``_sem``: PSNR against the suite's ground truth (when it has some): a gain bought with noisier
  frames shows here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from evaluation.metrics.video import psnr_per_frame
from posttrain.data import Prompts
from posttrain.rewards import compute_rewards

__all__ = ["probe_key", "score_probe"]


def probe_key(reward_fn: Any) -> str:
    """``eval_reward_<name>``: a probe reward's log key, its IDM names in lower case with ``_`` for other characters."""
    names = "_".join(idm.name for idm in getattr(reward_fn, "idms", ())) or str(getattr(reward_fn, "name", "probe"))
    return "eval_reward_" + re.sub(r"[^a-z0-9]+", "_", names.lower()).strip("_")


def _mean_and_sem(per_item: np.ndarray) -> tuple[float, float]:
    sem = per_item.std(ddof=1) / np.sqrt(len(per_item)) if len(per_item) > 1 else float("nan")
    return float(per_item.mean()), float(sem)


def score_probe(videos: np.ndarray, prompts: Prompts, suite: Any, reward_fn: Any,
                probe_rewards: Sequence[Any] = ()) -> dict[str, Any]:  # fmt: skip
    """The probe's metrics (module docstring) of ``videos uint8[N, F + 1, H, W, 3]`` (the real context frame first)
    generated from ``prompts`` of ``suite``."""
    items = [suite[int(i)] for i in prompts.items]
    rewards = compute_rewards(reward_fn, videos, prompts.actions, items)
    mean, sem = _mean_and_sem(rewards.mean(axis=1))
    result: dict[str, Any] = {"eval_reward_mean": mean, "eval_reward_sem": sem,
                              "eval_reward_per_frame": rewards.mean(axis=0).tolist()}  # fmt: skip
    for probe in probe_rewards:
        key = probe_key(probe)
        result[f"{key}_mean"], result[f"{key}_sem"] = _mean_and_sem(
            compute_rewards(probe, videos, prompts.actions, items).mean(axis=1)
        )
    if all(getattr(item, "ground_truth", None) is not None for item in items):
        generated = videos[:, 1:]
        truth = np.stack([item.ground_truth[: generated.shape[1]] for item in items])
        result["eval_psnr_mean"], result["eval_psnr_sem"] = _mean_and_sem(psnr_per_frame(generated, truth).mean(1))
    return result
