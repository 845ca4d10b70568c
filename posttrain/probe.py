"""The fixed-seed probe a post-training run logs before it starts and every ``logging.eval_every`` iterations.

The same items of ``data.eval_suite`` (its first ``data.eval_items``) are rolled out with seeds that never change
(:meth:`~posttrain.paradigm.Paradigm.probe_videos`), so two probes differ only by the weights. Every number comes with
its standard error over the items, because a reward curve is only read as rising when it rises beyond its error bars:

* ``eval_reward_mean`` / ``_sem`` / ``_per_frame``: the training reward;
* ``eval_reward_<idm>_mean`` / ``_sem``: the reward in the same form read by each IDM of ``logging.probe_idm``, which
  watch but are never optimised (e.g. the held-out IDM: does a gain in the reward IDM's eyes hold in another's?);
* ``eval_psnr_mean`` / ``_sem``: PSNR against the suite's ground truth (when it has some): a gain bought with noisier
  frames shows here;
* ``<each of the above>_change`` / ``_change_sem``: the change since the run's first probe (before any update), paired
  item by item, with the standard error of the paired differences (smaller than either probe's ``_sem`` when the
  items differ in difficulty, which cancels in each pair). A resumed run logs them only if it started in the same
  process.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from evaluation.metrics.video import psnr_per_frame
from posttrain.data import Prompts
from posttrain.rewards import compute_rewards

__all__ = ["probe_key", "probe_values", "score_probe", "summarize_probe"]


def probe_key(reward_fn: Any) -> str:
    """``eval_reward_<name>``: a probe reward's log key, its IDM names in lower case with ``_`` for other characters."""
    names = "_".join(idm.name for idm in getattr(reward_fn, "idms", ())) or str(getattr(reward_fn, "name", "probe"))
    return "eval_reward_" + re.sub(r"[^a-z0-9]+", "_", names.lower()).strip("_")


def _mean_and_sem(per_item: np.ndarray) -> tuple[float, float]:
    sem = per_item.std(ddof=1) / np.sqrt(len(per_item)) if len(per_item) > 1 else float("nan")
    return float(per_item.mean()), float(sem)


def probe_values(videos: np.ndarray, prompts: Prompts, suite: Any, reward_fn: Any,
                 probe_rewards: Sequence[Any] = ()) -> dict[str, np.ndarray]:  # fmt: skip
    """Per-item values ``float64[N]`` of every probe metric of ``videos uint8[N, F + 1, H, W, 3]`` (the real context
    frame first) generated from ``prompts`` of ``suite``, by log-key prefix (``eval_reward``, ``eval_reward_<idm>``,
    ``eval_psnr``), and ``eval_reward_per_frame`` (``float64[F]``, the training reward by frame)."""
    items = [suite[int(i)] for i in prompts.items]
    rewards = compute_rewards(reward_fn, videos, prompts.actions, items)
    values = {"eval_reward": rewards.mean(axis=1), "eval_reward_per_frame": rewards.mean(axis=0)}
    for probe in probe_rewards:
        values[probe_key(probe)] = compute_rewards(probe, videos, prompts.actions, items).mean(axis=1)
    if all(getattr(item, "ground_truth", None) is not None for item in items):
        generated = videos[:, 1:]
        truth = np.stack([item.ground_truth[: generated.shape[1]] for item in items])
        values["eval_psnr"] = psnr_per_frame(generated, truth).mean(axis=1)
    return values


def summarize_probe(values: dict[str, np.ndarray], baseline: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """The log record of :func:`probe_values`: each metric's mean and standard error over items, and with a
    ``baseline`` (the first probe's values) the paired change since then and its standard error."""
    result: dict[str, Any] = {"eval_reward_per_frame": values["eval_reward_per_frame"].tolist()}
    for prefix, per_item in values.items():
        if prefix == "eval_reward_per_frame":
            continue
        result[f"{prefix}_mean"], result[f"{prefix}_sem"] = _mean_and_sem(per_item)
        if baseline is not None and prefix in baseline:
            result[f"{prefix}_change"], result[f"{prefix}_change_sem"] = _mean_and_sem(per_item - baseline[prefix])
    return result


def score_probe(videos: np.ndarray, prompts: Prompts, suite: Any, reward_fn: Any,
                probe_rewards: Sequence[Any] = (), baseline: dict[str, np.ndarray] | None = None) -> dict[str, Any]:  # fmt: skip
    """:func:`summarize_probe` of :func:`probe_values` (the module docstring lists the keys)."""
    return summarize_probe(probe_values(videos, prompts, suite, reward_fn, probe_rewards), baseline)
