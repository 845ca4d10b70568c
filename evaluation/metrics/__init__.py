"""The benchmark's metric layer: action following (MineWorld, GameWorld, RLIR reward), video quality (PSNR, SSIM,
LPIPS, FVD) and bootstrap statistics.

Every metric also returns or accepts per-item records (confusion counts per clip, per-frame values, I3D features),
so a leaderboard can re-aggregate any subset of items and bootstrap confidence intervals over items.

``fvd`` and ``lpips`` are exported as modules (their main functions are ``fvd.fvd`` and ``lpips.lpips``) so the
function names never shadow the submodules.
"""

from __future__ import annotations

import importlib
from typing import Any

# Names are imported on first use (PEP 562): the metric modules import torch, which light callers do not need.
_EXPORTS = {
    "ClipLabels": "evaluation.metrics.action",
    "CRAFTER_TAXONOMY": "evaluation.metrics.taxonomy",
    "GAMEWORLD_TAXONOMY": "evaluation.metrics.taxonomy",
    "get_taxonomy": "evaluation.metrics.taxonomy",
    "LPIPSAlex": "evaluation.metrics.lpips",
    "METRIC_NAMES": "evaluation.metrics.action",
    "MINECRAFT_TAXONOMY": "evaluation.metrics.taxonomy",
    "Task": "evaluation.metrics.taxonomy",
    "Taxonomy": "evaluation.metrics.taxonomy",
    "as_item_confusions": "evaluation.metrics.action",
    "bootstrap_ci": "evaluation.metrics.stats",
    "bootstrap_confusion_ci": "evaluation.metrics.stats",
    "bootstrap_mean_ci": "evaluation.metrics.stats",
    "camera_bin_loss": "evaluation.metrics.action",
    "camera_direction": "evaluation.metrics.taxonomy",
    "classification_scores": "evaluation.metrics.action",
    "clip_labels": "evaluation.metrics.action",
    "confusion_counts": "evaluation.metrics.action",
    "exclusive_pair_label": "evaluation.metrics.taxonomy",
    "frechet_distance": "evaluation.metrics.fvd",
    "gameworld_action_metrics": "evaluation.metrics.action",
    "gameworld_metrics_from_confusion": "evaluation.metrics.action",
    "i3d_features": "evaluation.metrics.fvd",
    "load_i3d": "evaluation.metrics.fvd",
    "lpips_per_frame": "evaluation.metrics.lpips",
    "metrics_from_confusion": "evaluation.metrics.action",
    "mineworld_action_metrics": "evaluation.metrics.action",
    "preprocess_videos": "evaluation.metrics.fvd",
    "psnr": "evaluation.metrics.video",
    "psnr_per_frame": "evaluation.metrics.video",
    "resample_indices": "evaluation.metrics.stats",
    "resampled_task_means": "evaluation.metrics.stats",
    "rlir_frame_reward": "evaluation.metrics.action",
    "rlir_trajectory_reward": "evaluation.metrics.action",
    "ssim": "evaluation.metrics.video",
    "ssim_per_frame": "evaluation.metrics.video",
    "stack_actions": "evaluation.metrics.taxonomy",
    "summarize_per_frame": "evaluation.metrics.video",
}
_MODULES = ("fvd", "lpips")  # exported as modules: fvd.fvd(...), lpips.lpips(...)

__all__ = sorted([*_EXPORTS, *_MODULES])


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return importlib.import_module(f"evaluation.metrics.{name}")
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'evaluation.metrics' has no attribute {name!r}")
