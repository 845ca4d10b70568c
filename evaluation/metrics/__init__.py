"""The benchmark's metric layer: action following (MineWorld, GameWorld, RLIR reward), video quality (PSNR, SSIM,
LPIPS, FVD) and bootstrap statistics.

Every metric also returns or accepts per-item records (confusion counts per clip, per-frame values, I3D features),
so a leaderboard can re-aggregate any subset of items and bootstrap confidence intervals over items.

``fvd`` and ``lpips`` are exported as modules (their main functions are ``fvd.fvd`` and ``lpips.lpips``) so the
function names never shadow the submodules.
"""

from __future__ import annotations

from evaluation.metrics.action import (
    METRIC_NAMES,
    ClipLabels,
    as_item_confusions,
    camera_bin_loss,
    classification_scores,
    clip_labels,
    confusion_counts,
    gameworld_action_metrics,
    gameworld_metrics_from_confusion,
    metrics_from_confusion,
    mineworld_action_metrics,
    rlir_frame_reward,
    rlir_trajectory_reward,
)
from evaluation.metrics import fvd, lpips  # the modules: fvd.fvd(...), lpips.lpips(...)
from evaluation.metrics.fvd import frechet_distance, i3d_features, load_i3d, preprocess_videos
from evaluation.metrics.lpips import LPIPSAlex, lpips_per_frame
from evaluation.metrics.stats import (
    bootstrap_ci,
    bootstrap_confusion_ci,
    bootstrap_mean_ci,
    resample_indices,
    resampled_task_means,
)
from evaluation.metrics.taxonomy import (
    GAMEWORLD_TAXONOMY,
    MINECRAFT_TAXONOMY,
    Task,
    Taxonomy,
    camera_direction,
    exclusive_pair_label,
    stack_actions,
)
from evaluation.metrics.video import psnr, psnr_per_frame, ssim, ssim_per_frame, summarize_per_frame

__all__ = [
    "GAMEWORLD_TAXONOMY",
    "METRIC_NAMES",
    "MINECRAFT_TAXONOMY",
    "ClipLabels",
    "LPIPSAlex",
    "Task",
    "Taxonomy",
    "as_item_confusions",
    "bootstrap_ci",
    "bootstrap_confusion_ci",
    "bootstrap_mean_ci",
    "camera_bin_loss",
    "camera_direction",
    "classification_scores",
    "clip_labels",
    "confusion_counts",
    "exclusive_pair_label",
    "frechet_distance",
    "fvd",
    "gameworld_action_metrics",
    "gameworld_metrics_from_confusion",
    "i3d_features",
    "load_i3d",
    "lpips",
    "lpips_per_frame",
    "metrics_from_confusion",
    "mineworld_action_metrics",
    "preprocess_videos",
    "psnr",
    "psnr_per_frame",
    "resample_indices",
    "resampled_task_means",
    "rlir_frame_reward",
    "rlir_trajectory_reward",
    "ssim",
    "ssim_per_frame",
    "stack_actions",
    "summarize_per_frame",
]
