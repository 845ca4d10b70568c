"""Train a :class:`~evaluation.idm.crafter.CrafterIDM` on recorded Crafter trajectories (``rlir train idm``).

The benchmark needs two independent IDMs: a *reward* IDM (the GRPO reward) and a *held-out* IDM (every reported
score), trained with different seeds, widths and data, so that a model tuned against the first cannot fool the second.
Both are trained here, on CPU, in about ten minutes each::

    rlir train idm --data runs/data/crafter-train --out idms/crafter-reward.safetensors --width 48 --seed 1 --threads 1
    rlir train idm --data runs/data/crafter-heldout --out idms/crafter-heldout.safetensors --width 64 --seed 2 \\
        --threads 1

(one thread each: the two runs share a 2-core machine without OpenMP threads waiting on each other; add
``--eval-data`` with the other recording to score each IDM on data it never saw).

Reading top to bottom, :func:`train_crafter_idm`:

1. splits each dataset's episodes (``split``: all of them, or one of two fixed disjoint halves), then holds out
   ``eval_fraction`` of the remaining episodes for validation, deterministically from ``seed``;
2. draws ``batch_size`` windows of ``config.window`` transitions uniformly from the training episodes every step;
3. minimises cross-entropy (optionally class-weighted) with AdamW, linear warm-up and cosine decay, in fp32;
4. labels every validation episode in consecutive windows of ``config.window`` transitions (the setting the benchmark
   uses) and reports overall and per-action accuracy, the confusion matrix and the per-task macro-F1 of
   ``CRAFTER_TAXONOMY`` (the benchmark's ground-truth ceiling), next to the majority-class baseline;
5. writes the safetensors weights (summary in their metadata) and the summary as JSON next to them.

On the recorded data (mixture policy, 72 px) a width-48 IDM reaches about 77 % accuracy and a mean task macro-F1 of
about 0.67 on held-out episodes after 600 steps; most remaining errors are ``noop``, ``place_*`` and ``make_*``
actions that changed nothing visible (no table nearby, missing materials), which any IDM reads as ``do``.

Everything random comes from ``seed`` (``torch.manual_seed`` and numpy ``Generator`` streams), so a run is
reproducible on the same machine and thread count.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from evaluation.idm.crafter import CrafterIDM, CrafterIDMConfig
from evaluation.metrics.action import confusion_counts, metrics_from_confusion
from evaluation.metrics.taxonomy import CRAFTER_TAXONOMY
from worldmodels.actions.crafter import ACTION_NAMES, N_ACTIONS
from worldmodels.data.shards import ShardDataset
from worldmodels.errors import ConfigError, DataError, NumericalError
from worldmodels.runtime.files import atomic_output
from worldmodels.training.report import open_reporter

__all__ = [
    "SPLITS",
    "WindowSampler",
    "crafter_action_report",
    "evaluate_crafter_idm",
    "split_episodes",
    "summary_path",
    "train_crafter_idm",
]

SPLITS = ("all", "train", "heldout")
"""Which episodes train: all of them, or one fixed half of each dataset (``split_fraction``) or its complement."""
CLASS_WEIGHTINGS = ("none", "inverse_sqrt")
"""Loss weights per class: none, or inversely proportional to the square root of the class frequency."""

_PARTITION_SEED = 20250923  # fixed, so that "train" and "heldout" are complements whatever the training seeds
_EVAL_STREAM, _SAMPLE_STREAM = 1, 2


# -- data -------------------------------------------------------------------------------------------------------------


def split_episodes(
    n_episodes: int, *, split: str = "all", split_fraction: float = 0.5, eval_fraction: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Choose one dataset's training and validation episodes: ``(train_ids, eval_ids)``, sorted ``int64`` arrays.

    ``split="train"`` keeps a fixed random ``split_fraction`` of the episodes and ``"heldout"`` the rest (the
    partition depends on neither ``seed`` nor anything else, so two IDMs trained on the two halves never share an
    episode); ``"all"`` keeps every episode. Of the kept episodes, ``round(eval_fraction * n)`` (at least one when
    ``eval_fraction > 0``, at most all but one) are drawn with ``seed`` for validation.
    """
    if split not in SPLITS:
        raise ConfigError(f"split={split!r} is not one of {SPLITS}")
    if not 0.0 < split_fraction < 1.0:
        raise ConfigError(f"split_fraction must be in (0, 1), got {split_fraction!r}")
    if not 0.0 <= eval_fraction < 1.0:
        raise ConfigError(f"eval_fraction must be in [0, 1), got {eval_fraction!r}")
    episodes = np.arange(n_episodes, dtype=np.int64)
    if split != "all":
        order = np.random.default_rng(_PARTITION_SEED).permutation(n_episodes)
        first = np.zeros(n_episodes, dtype=bool)
        first[order[: int(round(split_fraction * n_episodes))]] = True
        episodes = episodes[first if split == "train" else ~first]
    n_eval = 0
    if eval_fraction > 0 and len(episodes) > 1:
        n_eval = min(max(int(round(eval_fraction * len(episodes))), 1), len(episodes) - 1)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_EVAL_STREAM,)))
    chosen = np.zeros(len(episodes), dtype=bool)
    chosen[rng.permutation(len(episodes))[:n_eval]] = True
    return np.sort(episodes[~chosen]), np.sort(episodes[chosen])


class WindowSampler:
    """Uniform random windows from chosen episodes of one or more :class:`ShardDataset`.

    Args:
        sources: ``(dataset, episode_ids)`` pairs; all datasets must have the same frame shape.
        length: Transitions per window (``length + 1`` frames).
    """

    def __init__(self, sources: Sequence[tuple[ShardDataset, np.ndarray]], length: int) -> None:
        self.sources = list(sources)
        self.length = int(length)
        shapes = {tuple(dataset.frame_shape) for dataset, _ in self.sources}
        if len(shapes) != 1:
            raise DataError(f"the datasets hold frames of different shapes {sorted(shapes)}; use one frame size")
        self.frame_shape = shapes.pop()
        rows = [(s, int(e)) for s, (_, episodes) in enumerate(self.sources) for e in episodes]
        self._source = np.array([r[0] for r in rows], dtype=np.int64)
        self._episode = np.array([r[1] for r in rows], dtype=np.int64)
        lengths = np.array([self.sources[s][0].episode_lengths[e] for s, e in rows], dtype=np.int64)
        self._counts = np.maximum(lengths - self.length, 0)
        self._ends = np.cumsum(self._counts)
        if self.n_windows == 0:
            raise DataError(f"no chosen episode has the {self.length + 1} frames a window of {self.length} "
                            "transitions needs; record longer episodes or use a shorter window")  # fmt: skip

    @property
    def n_windows(self) -> int:
        return int(self._counts.sum())

    @property
    def n_episodes(self) -> int:
        return len(self._episode)

    def action_counts(self) -> np.ndarray:
        """``int64[17]``: how often each action occurs in the chosen episodes."""
        counts = np.zeros(N_ACTIONS, dtype=np.int64)
        for s, e in zip(self._source, self._episode):
            actions = self.sources[s][0].episode(int(e)).actions
            counts += np.bincount(actions[actions >= 0], minlength=N_ACTIONS)
        return counts

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` windows: ``frames uint8[n, length + 1, H, W, 3]`` and ``actions int64[n, length]``."""
        flat = rng.integers(0, self.n_windows, size=n)
        row = np.searchsorted(self._ends, flat, side="right")
        start = flat - (self._ends[row] - self._counts[row])
        frames = np.empty((n, self.length + 1, *self.frame_shape), dtype=np.uint8)
        actions = np.empty((n, self.length), dtype=np.int64)
        for i in range(n):
            dataset = self.sources[self._source[row[i]]][0]
            frames[i], actions[i] = dataset.window(int(self._episode[row[i]]), int(start[i]), self.length)
        return frames, actions

    def tiled(self, max_windows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Every chosen episode cut into consecutive windows (neighbours share their boundary frame), the benchmark's
        setting; with ``max_windows``, an evenly spaced subset of them. Returns frames and actions as :meth:`sample`."""
        plan = [(s, int(e), start) for s, e, count in zip(self._source, self._episode, self._counts)
                for start in range(0, int(count), self.length)]  # fmt: skip
        if max_windows is not None and len(plan) > max_windows:
            plan = [plan[i] for i in np.linspace(0, len(plan) - 1, max_windows).round().astype(int)]
        frames = np.empty((len(plan), self.length + 1, *self.frame_shape), dtype=np.uint8)
        actions = np.empty((len(plan), self.length), dtype=np.int64)
        for i, (s, e, start) in enumerate(plan):
            frames[i], actions[i] = self.sources[s][0].window(e, start, self.length)
        return frames, actions


# -- metrics ----------------------------------------------------------------------------------------------------------


def crafter_action_report(gt: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """Compare recorded and IDM-read Crafter actions (any equal shapes of action ids).

    Returns a JSON-ready dict: ``n``, ``accuracy``, ``majority_accuracy`` (always answering the most frequent
    recorded action), ``per_action`` (per name: ``count``, ``recall`` = accuracy on that action, ``precision``,
    ``f1``, ``confused_with``: the most frequent wrong prediction), ``confusion`` (``[17][17]``, rows = recorded),
    ``tasks`` (:func:`~evaluation.metrics.action.metrics_from_confusion` over ``CRAFTER_TAXONOMY``, including
    ``metric_mean_on_task``) and ``mean_task_f1_macro``.
    """
    gt = np.asarray(gt, dtype=np.int64).ravel()
    pred = np.asarray(pred, dtype=np.int64).ravel()
    if gt.shape != pred.shape or gt.size == 0:
        raise DataError(f"need equal, non-empty action arrays, got {gt.shape} and {pred.shape}")
    confusion = np.bincount(gt * N_ACTIONS + pred, minlength=N_ACTIONS * N_ACTIONS).reshape(N_ACTIONS, N_ACTIONS)
    count, predicted, hits = confusion.sum(1), confusion.sum(0), np.diag(confusion)
    per_action = {}
    for a, name in enumerate(ACTION_NAMES):
        wrong = confusion[a].copy()
        wrong[a] = 0
        per_action[name] = {
            "count": int(count[a]),
            "recall": float(hits[a] / count[a]) if count[a] else 0.0,
            "precision": float(hits[a] / predicted[a]) if predicted[a] else 0.0,
            "f1": float(2 * hits[a] / (count[a] + predicted[a])) if count[a] + predicted[a] else 0.0,
            "confused_with": ACTION_NAMES[int(wrong.argmax())] if wrong.any() else None,
        }
    labels_gt, labels_pred = CRAFTER_TAXONOMY.labels(gt), CRAFTER_TAXONOMY.labels(pred)
    tasks = metrics_from_confusion(confusion_counts(labels_gt, labels_pred, CRAFTER_TAXONOMY), CRAFTER_TAXONOMY)
    return {
        "n": int(gt.size),
        "accuracy": float(hits.sum() / gt.size),
        "majority_accuracy": float(count.max() / gt.size),
        "mean_task_f1_macro": tasks["metric_mean_on_task"]["f1_macro"],
        "per_action": per_action,
        "tasks": tasks,
        "confusion": confusion.tolist(),
    }


def evaluate_crafter_idm(model: CrafterIDM, frames: np.ndarray, actions: np.ndarray) -> dict[str, Any]:
    """:func:`crafter_action_report` of ``model``'s predictions on windows ``frames [N, T+1, ...]`` with recorded
    ``actions [N, T]``."""
    return crafter_action_report(actions, model.predict_actions(frames))


# -- training ---------------------------------------------------------------------------------------------------------


def summary_path(out_path: str | os.PathLike) -> Path:
    """Where the JSON summary of weights at ``out_path`` goes: the same name with ``.json`` as its suffix."""
    return Path(out_path).with_suffix(".json")


def train_crafter_idm(
    data_dirs: str | os.PathLike | Sequence[str | os.PathLike],
    out_path: str | os.PathLike,
    *,
    config: CrafterIDMConfig | None = None,
    seed: int = 0,
    split: str = "all",
    split_fraction: float = 0.5,
    steps: int = 1500,
    batch_size: int = 32,
    lr: float = 2e-3,
    weight_decay: float = 0.05,
    warmup_steps: int = 100,
    eval_fraction: float = 0.1,
    eval_dirs: Sequence[str | os.PathLike] = (),
    eval_max_windows: int | None = 2048,
    class_weighting: str = "none",
    threads: int | None = None,
    log_every: int = 100,
    name: str | None = None,
    progress: bool = True,
    report_to: str = "none",
) -> dict[str, Any]:
    """Train a Crafter IDM and write ``out_path`` (safetensors) and :func:`summary_path` (JSON).

    Args:
        data_dirs: Trajectory-shard directories (``rlir record crafter``) to train on.
        out_path: The weights file to write.
        config: The architecture (default :class:`CrafterIDMConfig`); its ``frame_size`` must match the data.
        seed: Seeds the weights, the validation episodes and the window draws.
        split: ``"all"`` episodes of each dataset, or the ``"train"`` / ``"heldout"`` half (:func:`split_episodes`).
        split_fraction: Share of episodes in the ``"train"`` half.
        steps: Optimiser steps.
        batch_size: Windows per step (each of ``config.window`` transitions).
        lr: Peak AdamW learning rate (linear warm-up over ``warmup_steps``, then cosine decay to ``lr / 10``).
        weight_decay: AdamW weight decay of the weight matrices (not of biases and norms).
        warmup_steps: Warm-up steps.
        eval_fraction: Share of each dataset's (kept) episodes held out for validation.
        eval_dirs: Further datasets (all their episodes) scored after training, e.g. the other recording; reported
            separately under ``external_validation``.
        eval_max_windows: Cap on the windows scored per validation set (evenly spaced); ``None`` for all.
        class_weighting: ``"none"`` or ``"inverse_sqrt"`` (cross-entropy weights ``1 / sqrt(frequency)``, normalised
            to mean 1 over the training transitions, which lifts rare actions and the macro-F1).
        threads: ``torch.set_num_threads`` during training (restored afterwards); ``None`` keeps the current value.
        log_every: Steps between logged training loss/accuracy (and progress lines).
        name: Model name stored in the file (default: ``out_path``'s stem).
        progress: Print progress lines.

    Returns:
        The summary written to the JSON file (config, data, hyper-parameters, loss curve, validation reports from
        :func:`crafter_action_report`, timings, machine, ``weights_sha256``).
    """
    config = config if config is not None else CrafterIDMConfig()
    for key, value in dict(steps=steps, batch_size=batch_size, warmup_steps=warmup_steps + 1,
                           log_every=log_every).items():  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"train_crafter_idm {key} must be a positive integer, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"train_crafter_idm seed must be a non-negative integer, got {seed!r}")
    if not lr > 0 or not weight_decay >= 0:
        raise ConfigError(f"need lr > 0 and weight_decay >= 0, got lr={lr!r}, weight_decay={weight_decay!r}")
    if class_weighting not in CLASS_WEIGHTINGS:
        raise ConfigError(f"class_weighting={class_weighting!r} is not one of {CLASS_WEIGHTINGS}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be a positive integer or None, got {threads!r}")
    out_path = Path(out_path)
    if out_path.suffix == ".json":
        raise ConfigError(f"out_path {str(out_path)!r} must be the weights file (e.g. idm.safetensors), "
                          "not the JSON summary")
    dirs = [data_dirs] if isinstance(data_dirs, (str, os.PathLike)) else list(data_dirs)
    if not dirs:
        raise ConfigError("train_crafter_idm needs at least one data directory")

    started = time.perf_counter()
    log = _Logger(progress)
    # the curve goes to TensorBoard / W&B as it is logged (the run directory sits next to the weights)
    reporter = open_reporter(report_to, out_path.parent / f"{out_path.stem}.run")
    datasets = [ShardDataset(d) for d in dirs]
    for d, dataset in zip(dirs, datasets):
        if tuple(dataset.frame_shape) != (*config.frame_size, 3):
            raise DataError(f"{str(d)!r} holds {dataset.frame_shape} frames but the IDM config expects "
                            f"{(*config.frame_size, 3)}; set config.frame_size to match the recording")  # fmt: skip
    splits = [split_episodes(ds.n_episodes, split=split, split_fraction=split_fraction, eval_fraction=eval_fraction,
                             seed=int(seed)) for ds in datasets]  # fmt: skip
    train_sampler = WindowSampler([(ds, tr) for ds, (tr, _) in zip(datasets, splits)], config.window)
    has_eval = any(len(ev) for _, ev in splits)
    eval_sampler = (WindowSampler([(ds, ev) for ds, (_, ev) in zip(datasets, splits) if len(ev)], config.window)
                    if has_eval else None)  # fmt: skip
    counts = train_sampler.action_counts()
    log(f"training on {train_sampler.n_episodes} episodes ({train_sampler.n_windows} windows), validating on "
        f"{0 if eval_sampler is None else eval_sampler.n_episodes} episodes")  # fmt: skip

    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(int(seed))
        rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(_SAMPLE_STREAM,)))
        model = CrafterIDM(config, name=name or out_path.stem)
        weight = _class_weights(counts) if class_weighting == "inverse_sqrt" else None
        decay = [p for p in model.parameters() if p.ndim >= 2]
        no_decay = [p for p in model.parameters() if p.ndim < 2]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=lr)  # fmt: skip
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, warmup_steps, steps))

        curve, loss_sum, hit_sum, seen = [], 0.0, 0, 0
        train_start = time.perf_counter()
        data_seconds = 0.0
        model.train()
        for step in range(1, steps + 1):
            tick = time.perf_counter()
            frames, actions = train_sampler.sample(batch_size, rng)
            data_seconds += time.perf_counter() - tick
            target = torch.from_numpy(actions).flatten()
            logits = model(torch.from_numpy(frames)).flatten(0, 1)
            loss = F.cross_entropy(logits, target, weight=weight)
            if not torch.isfinite(loss):
                raise NumericalError(f"the training loss became {float(loss)} at step {step}; lower the learning "
                                     f"rate (lr={lr})")  # fmt: skip
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            loss_sum += loss.item() * len(target)
            hit_sum += int((logits.detach().argmax(-1) == target).sum())
            seen += len(target)
            if step % log_every == 0 or step == steps:
                elapsed = time.perf_counter() - train_start
                curve.append({"step": step, "loss": loss_sum / seen, "accuracy": hit_sum / seen,
                              "lr": schedule.get_last_lr()[0], "seconds": round(elapsed, 2)})  # fmt: skip
                if reporter is not None:
                    reporter.scalars(step, curve[-1])
                log(f"step {step}/{steps}  loss {loss_sum / seen:.4f}  acc {hit_sum / seen:.3f}  "
                    f"{step / elapsed:.2f} steps/s")  # fmt: skip
                loss_sum, hit_sum, seen = 0.0, 0, 0
        train_seconds = time.perf_counter() - train_start

        model.eval()
        validation = None
        if eval_sampler is not None:
            validation = evaluate_crafter_idm(model, *eval_sampler.tiled(eval_max_windows))
            log(_headline("validation", validation))
        external = {}
        for d in eval_dirs:
            dataset = ShardDataset(d)
            sampler = WindowSampler([(dataset, np.arange(dataset.n_episodes))], config.window)
            external[str(d)] = evaluate_crafter_idm(model, *sampler.tiled(eval_max_windows))
            log(_headline(str(d), external[str(d)]))
    finally:
        torch.set_num_threads(previous_threads)
        if reporter is not None:
            reporter.close()

    summary = {
        "name": model.name,
        "config": config.to_json(),
        "parameters": model.n_parameters(),
        "seed": int(seed),
        "data": [
            {"root": str(d), "frames": len(ds), "episodes": ds.n_episodes, "recording_seed": ds.config.get("seed"),
             "train_episodes": len(tr), "eval_episodes": [int(e) for e in ev]}
            for d, ds, (tr, ev) in zip(dirs, datasets, splits)
        ],  # fmt: skip
        "split": split,
        "split_fraction": split_fraction,
        "eval_fraction": eval_fraction,
        "train_action_counts": dict(zip(ACTION_NAMES, map(int, counts))),
        "hyperparameters": {"steps": steps, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
                            "warmup_steps": warmup_steps, "schedule": "linear warm-up, cosine to lr/10",
                            "optimizer": "AdamW", "grad_clip": 1.0, "class_weighting": class_weighting,
                            "dtype": "float32"},  # fmt: skip
        "curve": curve,
        "validation": validation,
        "external_validation": external,
        "train_seconds": round(train_seconds, 2),
        "data_seconds": round(data_seconds, 2),
        "transitions_per_second": round(steps * batch_size * config.window / train_seconds, 1),
        "wall_seconds": round(time.perf_counter() - started, 2),
        "machine": _machine(threads if threads is not None else previous_threads),
    }
    summary["weights_sha256"] = model.save(out_path, summary=summary)
    with atomic_output(summary_path(out_path)) as tmp:
        tmp.write_text(json.dumps(summary, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    log(f"wrote {out_path} (sha256 {summary['weights_sha256'][:16]}...) and {summary_path(out_path)}")
    return summary


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return 0.1 + 0.9 * 0.5 * (1.0 + np.cos(np.pi * progress))


def _class_weights(counts: np.ndarray) -> torch.Tensor:
    """``1 / sqrt(frequency)`` per action (unseen actions get the rarest seen one's weight), with the expected
    weight of a training transition equal to 1."""
    counts = counts.astype(np.float64)
    seen = counts > 0
    weight = np.zeros_like(counts)
    weight[seen] = 1.0 / np.sqrt(counts[seen])
    weight[~seen] = weight[seen].max() if seen.any() else 1.0
    weight /= (weight * counts).sum() / max(counts.sum(), 1.0)
    return torch.tensor(weight, dtype=torch.float32)


def _headline(label: str, report: dict[str, Any]) -> str:
    return (f"{label}: accuracy {report['accuracy']:.3f} (majority {report['majority_accuracy']:.3f}), "
            f"mean task macro-F1 {report['mean_task_f1_macro']:.3f} on {report['n']} transitions")  # fmt: skip


def _machine(threads: int) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "threads": threads, "torch": torch.__version__,
            "platform": platform.platform()}  # fmt: skip


class _Logger:
    def __init__(self, enabled: bool) -> None:
        self.console = None
        if enabled:
            from rich.console import Console

            self.console = Console(stderr=True)

    def __call__(self, message: str) -> None:
        if self.console is not None:
            self.console.log(message, highlight=False)
