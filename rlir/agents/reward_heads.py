"""Train :class:`~rlir_env.dream.heads.CrafterHeads` on recorded real Crafter trajectories (``rlir train reward-head``).

Reading top to bottom, :func:`train_heads`:

1. loads every frame of the recordings with its labels (:func:`load_transitions`): health (``inventory`` column 0),
   the achievements unlocked on arriving at each frame, and for each achievement whether it is still *eligible*
   (not unlocked earlier in the episode); it checks that the recorded rewards equal Crafter's formula
   ``1[any unlock] + (health_t - health_{t-1}) / 10``, so the labels explain the reward exactly;
2. holds out ``val_fraction`` of the episodes (from ``seed``) to choose the decision thresholds;
3. with ``tokenizer`` (the world model's VQ tokenizer), passes ``reconstruct_transitions`` training transitions (half
   of them rare) through it once: a world model draws every frame with that decoder, and heads trained on real
   pixels alone misread reconstructed health digits (measured on the embedded tokenizer: health accuracy 100 % on
   real frames, 42 % on reconstructed ones);
4. draws every batch from ``(seed, step)``: ``reconstruct_fraction`` of it from the reconstructed transitions, the
   rest from real frames, ``rare_fraction`` of those from the rare transitions (an unlock, a health change or a
   death), so the few hundred unlocks of each kind are seen often;
5. minimises ``sum_k eligible_k * BCE(unlock_k) + CE(health_prev) + CE(health)`` per transition with AdamW, linear
   warm-up and cosine decay, in fp32. Transitions after an achievement's first unlock carry no label for it (the
   recording says 0 even when the event repeats), so they are left out of its loss;
6. chooses the unlock threshold that maximises the F1 of the per-step unlock bonus, and the death threshold that
   maximises the F1 of terminal frames, on the validation episodes;
7. scores the heads on held-out recordings (:func:`evaluate_heads`, the same computation the wrappers do, step by
   step with per-episode memory of credited achievements), on real frames and on ``heldout_reconstruct_episodes``
   episodes passed through the tokenizer: reward MAE and exact-match rate, unlock precision / recall / F1 (overall
   and per achievement), health accuracy, episode-return error, termination AUC / F1;
8. writes the safetensors heads (summary in their metadata) and the summary as JSON next to them.

Everything random comes from ``seed``, so a run is reproducible on the same machine and thread count.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rlir_env.crafter.env import ACHIEVEMENTS
from rlir_env.dream.heads import (
    DEFAULT_HEALTH_CONFIDENCE,
    HEALTH_LEVELS,
    N_ACHIEVEMENTS,
    CrafterHeads,
    CrafterHeadsConfig,
    track_health,
)
from worldmodels.data.shards import ShardDataset
from worldmodels.errors import CheckpointError, ConfigError, DataError, NumericalError
from worldmodels.hashing import sha256_file
from worldmodels.registry import load_world_model
from worldmodels.runtime.files import write_json
from worldmodels.runtime.progress import Progress
from worldmodels.training.common import (
    JsonlLogger,
    Stopwatch,
    as_dirs,
    cosine_with_warmup,
    dataset_identity,
    machine_info,
    make_adamw,
    require_positive_ints,
    seed_everything,
    split_episodes,
    step_rng,
    summary_path,
)
from worldmodels.training.tokenizer import load_tokenizer

__all__ = [
    "TransitionData",
    "choose_thresholds",
    "evaluate_heads",
    "load_frame_tokenizer",
    "load_transitions",
    "predict_rewards",
    "reconstruct_frames",
    "roc_auc",
    "train_heads",
]

_SPLIT_STREAM, _SAMPLE_STREAM, _RECONSTRUCT_STREAM = 21, 22, 23
_HEALTH_COLUMN = 0  # INVENTORY_ITEMS[0] == "health"
_THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.05), 2)


# -- data -------------------------------------------------------------------------------------------------------------


@dataclass
class TransitionData:
    """Every frame of one or more recordings with the labels the heads learn, laid end to end."""

    frames: np.ndarray
    """``uint8[F, H, W, 3]``."""
    health: np.ndarray
    """``int64[F]`` health 0..9 shown in each frame."""
    unlocks: np.ndarray
    """``bool[F, 22]`` achievements unlocked for the first time on arriving at each frame."""
    eligible: np.ndarray
    """``bool[F, 22]`` achievements not yet unlocked before each frame in its episode (where ``unlocks`` is a label)."""
    terminated: np.ndarray
    """``bool[F]`` death frames."""
    rewards: np.ndarray
    """``float32[F]`` the reward Crafter returned with each frame (0 on first frames)."""
    episode: np.ndarray
    """``int64[F]`` episode number of each frame."""
    episode_starts: np.ndarray
    """``int64[E]`` first frame of each episode."""

    @property
    def n_episodes(self) -> int:
        return len(self.episode_starts)

    def transitions(self, episodes: np.ndarray | None = None) -> np.ndarray:
        """Indices ``t`` of frames that have a previous frame (``t - 1``) in their episode, of ``episodes``."""
        first = np.zeros(len(self.frames), dtype=bool)
        first[self.episode_starts] = True
        keep = ~first
        if episodes is not None:
            keep &= np.isin(self.episode, episodes)
        return np.flatnonzero(keep)


def load_transitions(data_dirs: str | os.PathLike | Sequence[str | os.PathLike]) -> TransitionData:
    """Frames and labels of recordings made by ``rlir record crafter`` (they need the ``achievements`` and
    ``inventory`` extras); episodes are numbered in order over all directories.

    Raises:
        DataError: a recording lacks the extras, or its rewards disagree with Crafter's formula.
    """
    frames, health, unlocks, terminated, rewards, lengths = [], [], [], [], [], []
    shape = None
    for root in as_dirs(data_dirs):
        dataset = ShardDataset(root, max_cached_shards=1)
        if shape is not None and tuple(dataset.frame_shape) != shape:
            raise DataError(f"{root} holds {tuple(dataset.frame_shape)} frames but an earlier recording "
                            f"{shape}; train on recordings of one frame size")  # fmt: skip
        shape = tuple(dataset.frame_shape)
        for episode in dataset.episodes():
            missing = [k for k in ("achievements", "inventory") if k not in episode.extras]
            if missing:
                raise DataError(f"{root}: episode {episode.index} lacks the {missing} arrays; record with "
                                "`rlir record crafter` (rlir_env.crafter.record), which stores them")  # fmt: skip
            achieved = episode.extras["achievements"]
            if achieved.shape[1:] != (N_ACHIEVEMENTS,):
                raise DataError(f"{root}: achievements must be [F, {N_ACHIEVEMENTS}], got {achieved.shape}")
            frames.append(episode.frames)
            health.append(episode.extras["inventory"][:, _HEALTH_COLUMN].astype(np.int64))
            unlocks.append(achieved.astype(bool))
            terminated.append(episode.terminated)
            rewards.append(episode.rewards)
            lengths.append(len(episode))
    lengths_array = np.array(lengths, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths_array)[:-1]]).astype(np.int64)
    data = TransitionData(
        frames=np.concatenate(frames), health=np.concatenate(health), unlocks=np.concatenate(unlocks),
        eligible=np.empty((0,)), terminated=np.concatenate(terminated), rewards=np.concatenate(rewards),
        episode=np.repeat(np.arange(len(lengths_array)), lengths_array), episode_starts=starts,
    )  # fmt: skip
    if data.health.max() >= HEALTH_LEVELS:
        raise DataError(f"recorded health reaches {data.health.max()}, above Crafter's maximum {HEALTH_LEVELS - 1}")
    # eligible[t, k]: no unlock of k in frames [start, t) of the episode
    counts = np.cumsum(data.unlocks, axis=0, dtype=np.int32)
    before = counts - data.unlocks
    at_start = before[starts]
    data.eligible = (before - np.repeat(at_start, lengths_array, axis=0)) == 0
    t = data.transitions()
    expected = data.unlocks[t].any(-1) + (data.health[t] - data.health[t - 1]) / 10.0
    wrong = np.flatnonzero(np.abs(expected - data.rewards[t]) > 1e-5)
    if wrong.size:
        i = int(t[wrong[0]])
        raise DataError(f"frame {i}: recorded reward {data.rewards[i]} differs from Crafter's formula "
                        f"(unlock + health change / 10 = {expected[wrong[0]]}); the recording's labels are "
                        "inconsistent, re-record it")  # fmt: skip
    return data


# -- metrics ----------------------------------------------------------------------------------------------------------


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); None without both classes."""
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts - 1) / 2.0 + 1.0  # 1-based average rank of each group of ties
    ranks[order] = np.repeat(average, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _prf(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float | int | None]:
    tp = int((predicted & actual).sum())
    fp = int((predicted & ~actual).sum())
    fn = int((~predicted & actual).sum())
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}


@torch.no_grad()
def _probabilities(heads: CrafterHeads, data: TransitionData, t: np.ndarray, batch: int = 512):
    """Unlock probabilities of transitions ``t - 1 -> t`` and health probabilities of frames ``t`` and ``t - 1``."""
    unlock = np.empty((len(t), N_ACHIEVEMENTS), dtype=np.float32)
    health = np.empty((len(t), HEALTH_LEVELS), dtype=np.float32)
    prev_health = np.empty((len(t), HEALTH_LEVELS), dtype=np.float32)
    for i in range(0, len(t), batch):
        rows = t[i : i + batch]
        out = heads.predict(data.frames[rows - 1], data.frames[rows])
        unlock[i : i + batch], health[i : i + batch], prev_health[i : i + batch] = (
            out["unlock"], out["health"], out["prev_health"])  # fmt: skip
    return unlock, health, prev_health


def _credit(detected: np.ndarray, episode: np.ndarray) -> np.ndarray:
    """First detection of each achievement per episode (what :class:`CrafterReward` credits), rows in time order."""
    new = np.zeros_like(detected)
    for e in np.unique(episode):
        rows = np.flatnonzero(episode == e)
        d = detected[rows]
        new[rows] = d & (np.cumsum(d, axis=0) == 1)
    return new


def choose_thresholds(heads: CrafterHeads, data: TransitionData, episodes: np.ndarray) -> dict[str, Any]:
    """The unlock threshold maximising the per-step bonus F1 and the death threshold maximising the terminal-frame
    F1 on ``episodes`` (grid 0.05 .. 0.95); returns both with the F1 each reached."""
    t = data.transitions(episodes)
    unlock, health, _ = _probabilities(heads, data, t)
    actual_bonus = (data.unlocks[t] & data.eligible[t]).any(-1)

    def bonus_f1(threshold: float) -> float:
        return _prf(_credit(unlock > threshold, data.episode[t]).any(-1), actual_bonus)["f1"] or 0.0

    def death_f1(threshold: float) -> float:
        return _prf(health[:, 0] > threshold, data.terminated[t])["f1"] or 0.0

    # Start from 0.5 and move only for a strictly better F1, so validation data without events keep 0.5.
    best_unlock, best_f1 = 0.5, bonus_f1(0.5)
    best_death, best_death_f1 = 0.5, death_f1(0.5)
    for threshold in _THRESHOLDS:
        if (f1 := bonus_f1(threshold)) > best_f1:
            best_unlock, best_f1 = float(threshold), f1
        if (f1 := death_f1(threshold)) > best_death_f1:
            best_death, best_death_f1 = float(threshold), f1
    return {"unlock_threshold": best_unlock, "unlock_bonus_f1": best_f1, "death_threshold": best_death,
            "death_f1": best_death_f1}  # fmt: skip


def predict_rewards(
    heads: CrafterHeads, data: TransitionData, episodes: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """What the wrappers would return on every transition of ``episodes`` (default: all), in time order.

    Each episode runs with its own memory, as :class:`~rlir_env.dream.heads.CrafterReward` keeps it: the reward of
    step ``t`` is ``1[new credited unlock] + health change / 10`` with the change between confident health readings
    (:func:`~rlir_env.dream.heads.track_health`). Returns ``t`` (frame indices), ``reward``, ``terminated``
    (``P(health = 0) > death_threshold``), ``credited`` (``bool[T, 22]``), ``health_change``, ``health`` (most
    probable health of each frame ``t``), ``prev_health`` (of ``t - 1``) and ``p_death``.
    """
    t = data.transitions(episodes)
    if len(t) == 0:
        raise DataError("no transitions to evaluate; the chosen episodes have a single frame each")
    unlock, health, prev_health = _probabilities(heads, data, t)
    episode = data.episode[t]
    credited = _credit(unlock > heads.unlock_threshold, episode)
    # all episodes in lockstep over their step index, with one tracked reading per episode
    step = t - data.episode_starts[episode] - 1
    slot = np.unique(episode, return_inverse=True)[1]
    tracked = np.full(slot.max() + 1, -1, dtype=np.int64)
    change = np.zeros(len(t), dtype=np.int64)
    for s in range(int(step.max()) + 1):
        rows = np.flatnonzero(step == s)
        change[rows], tracked[slot[rows]] = track_health(tracked[slot[rows]], prev_health[rows], health[rows],
                                                         heads.health_confidence)  # fmt: skip
    return {"t": t, "reward": credited.any(-1) + change / 10.0, "terminated": health[:, 0] > heads.death_threshold,
            "credited": credited, "health_change": change, "health": health.argmax(-1),
            "prev_health": prev_health.argmax(-1), "p_death": health[:, 0]}  # fmt: skip


def evaluate_heads(heads: CrafterHeads, data: TransitionData, episodes: np.ndarray | None = None) -> dict[str, Any]:
    """Score ``heads`` on every transition of ``episodes`` (default: all) as the wrappers use them
    (:func:`predict_rewards`).

    Returns reward MAE (and that of always predicting 0), exact-match rate, unlock-bonus and per-achievement
    precision / recall / F1, health accuracy, episode-return MAE, termination AUC and precision / recall / F1 at
    ``heads.death_threshold``, and false terminations per 1000 steps.
    """
    p = predict_rewards(heads, data, episodes)
    t, credited, h, h_prev, predicted_reward = p["t"], p["credited"], p["health"], p["prev_health"], p["reward"]
    actual = data.unlocks[t] & data.eligible[t]
    true_reward = data.rewards[t].astype(np.float64)
    error = np.abs(predicted_reward - true_reward)
    per_achievement = {}
    for k, name in enumerate(ACHIEVEMENTS):
        if actual[:, k].any() or credited[:, k].any():
            per_achievement[name] = {"count": int(actual[:, k].sum()), **_prf(credited[:, k], actual[:, k])}
    episode_of = data.episode[t]
    ids, inverse = np.unique(episode_of, return_inverse=True)
    true_return = np.bincount(inverse, weights=true_reward, minlength=len(ids))
    predicted_return = np.bincount(inverse, weights=predicted_reward, minlength=len(ids))
    death = p["terminated"]
    terminated = data.terminated[t]
    health_true = np.concatenate([data.health[t], data.health[t[np.isin(t - 1, data.episode_starts)] - 1]])
    health_pred = np.concatenate([h, h_prev[np.isin(t - 1, data.episode_starts)]])
    return {
        "transitions": int(len(t)),
        "episodes": int(len(ids)),
        "reward_mae": float(error.mean()),
        "reward_mae_zero_baseline": float(np.abs(true_reward).mean()),
        "reward_exact": float((error < 1e-6).mean()),
        "health_reward_mae": float(np.abs(p["health_change"] - (data.health[t] - data.health[t - 1])).mean() / 10.0),
        "unlock": {**_prf(credited.any(-1), actual.any(-1)), "count": int(actual.any(-1).sum())},
        "unlock_per_achievement": per_achievement,
        "health_accuracy": float((health_pred == health_true).mean()),
        "return_mae": float(np.abs(predicted_return - true_return).mean()),
        "return_mean": {"true": float(true_return.mean()), "predicted": float(predicted_return.mean())},
        "termination": {
            "auc": roc_auc(terminated, p["p_death"]),
            **_prf(death, terminated),
            "count": int(terminated.sum()),
            "false_per_1000_steps": float(1000.0 * (death & ~terminated).sum() / len(t)),
        },
        "unlock_threshold": heads.unlock_threshold,
        "death_threshold": heads.death_threshold,
    }


# -- training ---------------------------------------------------------------------------------------------------------


def _loss(
    heads: CrafterHeads, data: TransitionData, rows: np.ndarray, frames: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of transitions ``rows - 1 -> rows``; ``frames`` replaces their ``(prev, cur)`` pixels (reconstructions)."""
    device = heads.device
    prev_pixels, cur_pixels = (data.frames[rows - 1], data.frames[rows]) if frames is None else frames
    unlock_logits, prev_health_logits, health_logits = heads(torch.from_numpy(prev_pixels).to(device),
                                                             torch.from_numpy(cur_pixels).to(device))  # fmt: skip
    target = torch.from_numpy(data.unlocks[rows]).to(device, torch.float32)
    mask = torch.from_numpy(data.eligible[rows]).to(device, torch.float32)
    bce = F.binary_cross_entropy_with_logits(unlock_logits, target, reduction="none")
    unlock_loss = (bce * mask).sum() / len(rows)
    health = torch.from_numpy(data.health[rows]).to(device)
    prev_health = torch.from_numpy(data.health[rows - 1]).to(device)
    health_loss = F.cross_entropy(health_logits, health) + F.cross_entropy(prev_health_logits, prev_health)
    loss = unlock_loss + health_loss
    parts = {"loss": loss.item(), "unlock_loss": unlock_loss.item(), "health_loss": health_loss.item()}
    return loss, parts


@torch.no_grad()
def _validation_loss(heads: CrafterHeads, data: TransitionData, rows: np.ndarray, batch: int = 512) -> dict[str, float]:
    heads.eval()
    totals: dict[str, float] = {}
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        _, parts = _loss(heads, data, chunk)
        for key, value in parts.items():
            totals[key] = totals.get(key, 0.0) + value * len(chunk)
    heads.train()
    return {key: value / len(rows) for key, value in totals.items()}


def load_frame_tokenizer(source: str | os.PathLike) -> Any:
    """The VQ tokenizer whose decoder draws a world model's frames: a file from ``rlir train tokenizer``, or a world
    model (registry name or checkpoint) whose tokenizer is taken."""
    path = Path(source)
    if path.is_file():
        try:
            return load_tokenizer(path)
        except CheckpointError:
            pass  # not a tokenizer file: try it as a world-model checkpoint

    tokenizer = getattr(load_world_model(str(source)), "tokenizer", None)
    if tokenizer is None:
        raise ConfigError(f"{source!r} has no VQ tokenizer; pass a tokenizer file or a MineWorld checkpoint")
    return tokenizer.eval()


@torch.no_grad()
def reconstruct_frames(tokenizer: Any, frames: np.ndarray, chunk: int = 64) -> np.ndarray:
    """``frames`` (uint8[N, H, W, 3]) encoded to tokens and decoded again: how a world model draws them."""
    out = np.empty_like(frames)
    for i in range(0, len(frames), chunk):
        x = torch.from_numpy(frames[i : i + chunk])
        out[i : i + chunk] = tokenizer.detokenize(tokenizer.tokenize(x)).cpu().numpy()
    return out


@dataclass
class _Reconstructed:
    """Transitions whose two frames were passed through the tokenizer."""

    rows: np.ndarray
    prev: np.ndarray
    cur: np.ndarray


def _reconstruct_transitions(tokenizer: Any, data: TransitionData, rows: np.ndarray) -> _Reconstructed:
    rows = np.sort(rows)
    needed, inverse = np.unique(np.concatenate([rows - 1, rows]), return_inverse=True)
    pixels = reconstruct_frames(tokenizer, data.frames[needed])
    return _Reconstructed(rows=rows, prev=pixels[inverse[: len(rows)]], cur=pixels[inverse[len(rows) :]])


def train_heads(
    data_dirs: str | os.PathLike | Sequence[str | os.PathLike],
    out_path: str | os.PathLike,
    *,
    heldout_dirs: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    config: CrafterHeadsConfig | None = None,
    tokenizer: str | os.PathLike | None = None,
    reconstruct_transitions: int = 6000,
    reconstruct_fraction: float = 0.5,
    heldout_reconstruct_episodes: int = 16,
    health_confidence: float = DEFAULT_HEALTH_CONFIDENCE,
    steps: int = 3000,
    batch_size: int = 128,
    lr: float = 2e-3,
    warmup: int = 100,
    weight_decay: float = 0.01,
    seed: int = 0,
    val_fraction: float = 0.1,
    rare_fraction: float = 0.25,
    val_transitions: int = 4096,
    eval_every: int = 500,
    log_every: int = 50,
    log_path: str | os.PathLike | None = None,
    progress: bool = True,
    report_to: str = "none",
) -> dict[str, Any]:
    """Train Crafter reward/termination heads and write ``out_path`` (safetensors) and its JSON summary.

    Args:
        data_dirs: trajectory-shard directories recorded by ``rlir record crafter``.
        out_path: the ``.safetensors`` heads file; the summary goes to the same name with ``.json``.
        heldout_dirs: recordings scored at the end (the reported metrics); default: the validation episodes.
        config: the architecture; its ``frame_size`` must match the recordings (default: the defaults at their size).
        tokenizer: the world model's VQ tokenizer (a tokenizer file or a world model). The heads then also learn
            from frames passed through it (encoded and decoded), which is how the world model draws every frame;
            heads trained on real pixels only misread the reconstructed health digits. None: real frames only.
        reconstruct_transitions: training transitions reconstructed once before training (half of them rare ones).
        reconstruct_fraction: share of each batch taken from the reconstructed transitions.
        heldout_reconstruct_episodes: held-out episodes also scored on reconstructed frames (``metrics_reconstructed``).
        health_confidence: health is read from a frame only above this probability (stored with the heads).
        steps, batch_size, lr, warmup, weight_decay: optimisation (AdamW, warm-up + cosine decay to ``lr / 10``).
        seed: seeds the weights, the episode split and every batch.
        val_fraction: share of training episodes held out to choose the thresholds.
        rare_fraction: share of each real-frame batch drawn from transitions with an unlock, a health change or a death.
        val_transitions: validation transitions scored for the loss curve every ``eval_every`` steps (0: never).
        log_every: log the training loss every this many steps; ``log_path``: JSON Lines log (None: no log).
        progress: show a progress bar.

    Returns:
        The summary (also written as JSON): data, settings, loss curve, thresholds, held-out metrics, wall time.
    """
    watch = Stopwatch()
    require_positive_ints(steps=steps, batch_size=batch_size)
    for name, value in (("rare_fraction", rare_fraction), ("reconstruct_fraction", reconstruct_fraction)):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{name} must lie in [0, 1], got {value!r}")
    out_path = Path(out_path)
    if out_path.suffix != ".safetensors":
        raise ConfigError(f"out_path must end in .safetensors, got {out_path.name!r}")
    seed_everything(seed)

    # 1. data, labels and the episode split
    with watch("load"):
        data = load_transitions(data_dirs)
        heldout = load_transitions(heldout_dirs) if heldout_dirs is not None else None
    config = CrafterHeadsConfig(frame_size=tuple(data.frames.shape[1:3])) if config is None else config
    for name, d in (("data", data), ("heldout", heldout)):
        if d is not None and tuple(d.frames.shape[1:3]) != tuple(config.frame_size):
            raise DataError(f"the {name} recordings hold {tuple(d.frames.shape[1:3])} frames but the heads take "
                            f"{tuple(config.frame_size)}; pass a CrafterHeadsConfig(frame_size=...) that matches or "
                            "record at that size")  # fmt: skip
    train_episodes, val_episodes = split_episodes(data.n_episodes, val_fraction, seed, _SPLIT_STREAM)
    train_t = data.transitions(train_episodes)
    val_t = data.transitions(val_episodes)
    if len(train_t) == 0:
        raise DataError("the training episodes have no transitions; record longer episodes")
    rare = (data.unlocks[train_t] & data.eligible[train_t]).any(-1) | data.terminated[train_t] | (
        data.health[train_t] != data.health[train_t - 1])  # fmt: skip
    rare_t = train_t[rare]
    val_pick = step_rng(seed, _SPLIT_STREAM, 1).permutation(val_t)[:val_transitions] if val_transitions else val_t[:0]

    # 2. the same transitions as the world model draws them
    frame_tokenizer = None if tokenizer is None else load_frame_tokenizer(tokenizer)
    tokenizer_identity = None if tokenizer is None else {"source": str(tokenizer), "sha256": _sha256_or_none(tokenizer)}
    recon: _Reconstructed | None = None
    if frame_tokenizer is not None and reconstruct_transitions > 0 and reconstruct_fraction > 0:
        pick_rng = step_rng(seed, _RECONSTRUCT_STREAM)
        n_rare_recon = min(len(rare_t), reconstruct_transitions // 2)
        chosen = np.union1d(pick_rng.choice(rare_t, n_rare_recon, replace=False),
                            pick_rng.choice(train_t, min(len(train_t), reconstruct_transitions - n_rare_recon),
                                            replace=False))  # fmt: skip
        with watch("reconstruct"):
            recon = _reconstruct_transitions(frame_tokenizer, data, chosen)
    n_recon = int(round(reconstruct_fraction * batch_size)) if recon is not None else 0
    n_real = batch_size - n_recon
    n_rare = int(round(rare_fraction * n_real)) if len(rare_t) else 0

    # 3. model and optimiser
    heads = CrafterHeads(config, health_confidence=health_confidence).train()
    optimizer = make_adamw(heads.named_parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = cosine_with_warmup(optimizer, warmup=warmup, total=steps)
    logger = JsonlLogger(log_path, report_to=report_to)
    validations: list[dict[str, Any]] = []
    losses: list[dict[str, float]] = []
    curve: list[dict[str, Any]] = []

    def validate(step: int) -> None:
        if len(val_pick):
            with watch("validate"):
                result = _validation_loss(heads, data, np.sort(val_pick))
            validations.append({"step": step, **result})
            logger.log(step=step, val=result)

    # 4. training loop
    step_time = 0.0
    with Progress(steps, "reward heads", enabled=progress) as bar:
        for step in range(steps):
            began = time.perf_counter()
            rng = step_rng(seed, _SAMPLE_STREAM, step)
            rows = np.concatenate([rng.choice(rare_t, n_rare), rng.choice(train_t, n_real - n_rare)])
            prev, cur = data.frames[rows - 1], data.frames[rows]
            if n_recon:
                k = rng.integers(0, len(recon.rows), n_recon)
                rows = np.concatenate([rows, recon.rows[k]])
                prev, cur = np.concatenate([prev, recon.prev[k]]), np.concatenate([cur, recon.cur[k]])
            loss, parts = _loss(heads, data, rows, (prev, cur))
            if not torch.isfinite(loss):
                raise NumericalError(f"the heads' training loss is {parts['loss']} at step {step}; lower lr={lr}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(heads.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            step_time += time.perf_counter() - began
            losses.append(parts)
            done = step + 1
            bar.advance(1, f"loss {parts['loss']:.3f}")
            if done % log_every == 0 or done == steps:
                mean = {key: float(np.mean([p[key] for p in losses])) for key in losses[0]}
                curve.append({"step": done, **mean})
                logger.log(step=done, lr=scheduler.get_last_lr()[0], **mean)
                losses = []
            if (eval_every and done % eval_every == 0) or done == steps:
                validate(done)

    # 5. thresholds on validation episodes, metrics on held-out recordings (real and reconstructed frames)
    heads.eval()
    with watch("thresholds"):
        thresholds = choose_thresholds(heads, data, val_episodes) if len(val_t) else {}
    if thresholds:
        heads.unlock_threshold = thresholds["unlock_threshold"]
        heads.death_threshold = thresholds["death_threshold"]
    scored, scored_episodes = (heldout, None) if heldout is not None else (data, val_episodes)
    metrics = metrics_reconstructed = None
    with watch("evaluate"):
        if scored is heldout or len(val_t):
            metrics = evaluate_heads(heads, scored, scored_episodes)
    if frame_tokenizer is not None and heldout_reconstruct_episodes > 0 and metrics is not None:
        with watch("evaluate_reconstructed"):
            pool = np.arange(scored.n_episodes) if scored_episodes is None else scored_episodes
            episodes = np.sort(step_rng(seed, _RECONSTRUCT_STREAM, 1).permutation(pool)[:heldout_reconstruct_episodes])
            rows = np.flatnonzero(np.isin(scored.episode, episodes))
            original = scored.frames[rows].copy()
            scored.frames[rows] = reconstruct_frames(frame_tokenizer, original)
            metrics_reconstructed = evaluate_heads(heads, scored, episodes)
            scored.frames[rows] = original
    summary: dict[str, Any] = {
        "kind": "rlir.crafter-heads-training",
        "config": config.to_json(),
        "parameters": int(sum(p.numel() for p in heads.parameters())),
        "settings": {"steps": steps, "batch_size": batch_size, "lr": lr, "warmup": warmup,
                     "weight_decay": weight_decay, "seed": seed, "val_fraction": val_fraction,
                     "rare_fraction": rare_fraction, "reconstruct_transitions": reconstruct_transitions,
                     "reconstruct_fraction": reconstruct_fraction,
                     "heldout_reconstruct_episodes": heldout_reconstruct_episodes},  # fmt: skip
        "tokenizer": tokenizer_identity,
        "data": [dataset_identity(ShardDataset(d)) for d in as_dirs(data_dirs)],
        "heldout_data": None if heldout_dirs is None else [dataset_identity(ShardDataset(d))
                                                           for d in as_dirs(heldout_dirs, "heldout_dirs")],
        "episodes": {"train": int(len(train_episodes)), "val": int(len(val_episodes)),
                     "heldout": None if heldout is None else int(heldout.n_episodes)},  # fmt: skip
        "transitions": {"train": int(len(train_t)), "rare": int(len(rare_t)), "val": int(len(val_t)),
                        "reconstructed": 0 if recon is None else int(len(recon.rows))},  # fmt: skip
        "train_curve": curve,
        "validations": validations,
        "thresholds": thresholds,
        "health_confidence": heads.health_confidence,
        "metrics_on": "heldout" if heldout is not None else "validation episodes",
        "metrics": metrics,
        "metrics_reconstructed": metrics_reconstructed,
        "s_per_step": step_time / steps,
        "wall_time": watch.report(),
        "machine": machine_info(),
    }
    summary["sha256"] = heads.save(out_path, summary=summary)
    write_json(summary_path(out_path), summary)
    return summary


def _sha256_or_none(source: str | os.PathLike) -> str | None:
    return sha256_file(source) if Path(source).is_file() else None
