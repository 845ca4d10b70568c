"""Pieces every training script here shares: seeding, AdamW with a warm-up + cosine schedule, JSON Lines logs,
atomic checkpoints that resume bit-exactly, a progress bar and timing.

Resuming reproduces an uninterrupted run exactly because nothing random is carried from step to step: the data
drawn at step ``k`` come from a generator seeded with ``(seed, stream, k)`` (:func:`step_rng`), and everything else
that changes during training (weights, optimiser moments, schedule position, torch's global RNG, any extra state a
script registers) is in the checkpoint.

Checkpoints are safetensors: model weights under ``model.``, optimiser tensors under ``optimizer.``, extra tensors
under ``extra.``, torch's RNG state under ``rng.torch``; the step, optimiser hyper-parameters, schedule state and the
run's identity (``run_config``) are JSON in the metadata. Nothing is unpickled.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from worldmodels.data.shards import ShardDataset
from worldmodels.errors import CheckpointError, ConfigError, DataError, MissingFileError
from worldmodels.hashing import sha256_file
from worldmodels.runtime.files import atomic_output, to_plain
from worldmodels.training.report import check_report_to, open_reporter
from worldmodels.weights import save_safetensors_file

__all__ = [
    "CHECKPOINT_NAME",
    "JsonlLogger",
    "MetricWindow",
    "Stopwatch",
    "as_dirs",
    "cosine_with_warmup",
    "dataset_identity",
    "load_checkpoint",
    "machine_info",
    "make_adamw",
    "require_positive_ints",
    "run_dir_for",
    "save_checkpoint",
    "seed_everything",
    "split_episodes",
    "step_generator",
    "step_rng",
    "summary_path",
]

CHECKPOINT_NAME = "checkpoint.safetensors"
_CHECKPOINT_KIND = "rlir.training-checkpoint"


# -- seeding ----------------------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed torch's global generator (weight initialisation); everything else draws from :func:`step_rng`."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    torch.manual_seed(int(seed))


def step_rng(seed: int, stream: int, step: int = 0) -> np.random.Generator:
    """A numpy generator that depends only on ``(seed, stream, step)``: the same draws whenever step ``step`` runs,
    in a fresh run or after a resume."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(int(stream), int(step))))


def step_generator(seed: int, stream: int, step: int = 0) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded like :func:`step_rng`."""
    value = np.random.SeedSequence(int(seed), spawn_key=(int(stream), int(step))).generate_state(2, np.uint64)
    generator = torch.Generator()
    generator.manual_seed(int(value[0] >> np.uint64(1)))  # torch seeds are < 2**63
    return generator


# -- data -------------------------------------------------------------------------------------------------------------


def as_dirs(data_dirs: str | os.PathLike | Sequence[str | os.PathLike], what: str = "data_dirs") -> list[Path]:
    """One directory or a sequence of them, as a non-empty list of paths."""
    dirs = [Path(data_dirs)] if isinstance(data_dirs, (str, os.PathLike)) else [Path(d) for d in data_dirs]
    if not dirs:
        raise ConfigError(f"{what} is empty; pass at least one trajectory-shard directory (rlir record crafter)")
    return dirs


def split_episodes(n_episodes: int, val_fraction: float, seed: int, stream: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Episode-level ``(train_ids, val_ids)`` (sorted ``int64``) drawn from ``seed``.

    ``round(val_fraction * n)`` episodes are held out, at least one when ``val_fraction > 0`` and at most all but one.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must lie in [0, 1), got {val_fraction!r}")
    n_val = 0
    if val_fraction > 0:
        if n_episodes < 2:
            raise DataError(
                f"cannot hold out validation episodes from {n_episodes} episode(s); record more data or pass "
                "val_fraction=0 with separate evaluation data"
            )
        n_val = min(max(int(round(val_fraction * n_episodes)), 1), n_episodes - 1)
    order = step_rng(seed, stream).permutation(n_episodes)
    val = np.zeros(n_episodes, dtype=bool)
    val[order[:n_val]] = True
    ids = np.arange(n_episodes, dtype=np.int64)
    return ids[~val], ids[val]


def dataset_identity(dataset: ShardDataset) -> dict[str, Any]:
    """What identifies a recording's content: its directory, frame shape and the sha256 of every shard in order."""
    return {
        "dir": str(dataset.root),
        "frames": len(dataset),
        "episodes": dataset.n_episodes,
        "frame_shape": list(dataset.frame_shape),
        "shards_sha256": [shard.sha256 for shard in dataset.shards],
    }


# -- optimisation -----------------------------------------------------------------------------------------------------


def make_adamw(
    named_parameters: Iterator[tuple[str, nn.Parameter]] | Sequence[tuple[str, nn.Parameter]],
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.95),
    no_decay: Callable[[str, nn.Parameter], bool] | None = None,
) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only (not on biases, norms, or what ``no_decay`` selects).

    Parameters with ``requires_grad=False`` are left out.
    """
    if not lr > 0:
        raise ConfigError(f"lr must be positive, got {lr!r}")
    decay, keep = [], []
    for name, param in named_parameters:
        if not param.requires_grad:
            continue
        skip = param.ndim < 2 or (no_decay is not None and no_decay(name, param))
        (keep if skip else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, foreach=True)  # one fused loop, also on CPU


def cosine_with_warmup(
    optimizer: torch.optim.Optimizer, *, warmup: int, total: int, min_ratio: float = 0.1
) -> torch.optim.lr_scheduler.LambdaLR:
    """Learning rate ``lr * f(step)``: linear warm-up from ``1 / (warmup + 1)`` to 1 over ``warmup`` steps, then a
    cosine decay to ``min_ratio`` at step ``total``. Call ``scheduler.step()`` after every optimiser step."""
    if warmup < 0 or total < 1:
        raise ConfigError(f"need warmup >= 0 and total >= 1 steps, got warmup={warmup!r}, total={total!r}")
    if not 0.0 <= min_ratio <= 1.0:
        raise ConfigError(f"min_ratio must lie in [0, 1], got {min_ratio!r}")

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + np.cos(np.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# -- logging ----------------------------------------------------------------------------------------------------------


def require_positive_ints(**settings: Any) -> None:
    """One clear error for the first setting that is not a positive integer (``steps=0`` -> ``steps must be a
    positive integer, got 0``); bools are refused, numpy integers accepted."""
    for name, value in settings.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")


class JsonlLogger:
    """Appends one JSON object per line (flushed at once, so a killed run keeps what it logged).

    Args:
        path: the log file (``None``: log nothing).
        resume_step: when resuming from a checkpoint taken at this step, lines logged after it by the interrupted
            run are dropped first, so the log reads like one uninterrupted run; ``None`` starts a new log.
        report_to: also send each record's numbers (keyed by its ``step``) to ``"tensorboard"`` or ``"wandb"``
            (:mod:`worldmodels.training.report`, in the log's directory); ``"none"``: the log alone.
    """

    def __init__(self, path: str | os.PathLike | None, *, resume_step: int | None = None, report_to: str = "none"):
        check_report_to(report_to)  # on every rank, so a missing backend stops the run before any work
        self.path = None if path is None else Path(path)
        self.reporter = None
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept: list[str] = []
        if resume_step is not None and self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    break  # a line cut by the interruption
                if not isinstance(record, dict) or record.get("step", 0) > resume_step:
                    break
                kept.append(line)
        with atomic_output(self.path) as tmp:
            tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        start = 0 if resume_step is None else resume_step + 1
        self.reporter = open_reporter(report_to, self.path.parent, start=start)

    def log(self, **record: Any) -> None:
        if self.path is None:
            return
        plain = to_plain(record)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(plain, allow_nan=False) + "\n")
        if self.reporter is not None and isinstance(plain.get("step"), int):
            self.reporter.scalars(plain["step"], plain)

    def close(self) -> None:
        if self.reporter is not None:
            self.reporter.close()


def summary_path(out_path: str | os.PathLike) -> Path:
    """Where the JSON summary of ``out_path`` goes: the same name with ``.json`` as its suffix."""
    return Path(out_path).with_suffix(".json")


def require_init_architecture(run: Mapping[str, Any], init: Mapping[str, Any], init_path: str | os.PathLike) -> None:
    """A warm start trains its init's architecture: ``ConfigError`` naming the fields where the run's config dict
    differs from the init's."""
    differing = sorted(k for k in run.keys() | init.keys() if run.get(k) != init.get(k))
    if differing:
        raise ConfigError(f"--init {init_path} has another architecture than the run ("
                          + ", ".join(f"{k}: {init.get(k)!r} vs {run.get(k)!r}" for k in differing[:4])
                          + "); leave out --size/--config to train the init's architecture")  # fmt: skip


def state_differences(state: Mapping[str, torch.Tensor], other: Mapping[str, torch.Tensor], *,
                      skip_prefixes: tuple[str, ...] = ()) -> list[str]:  # fmt: skip
    """The keys (outside ``skip_prefixes``) where two state dicts differ in shape or values; a key missing on one side
    counts."""
    keys = {k for k in state.keys() | other.keys() if not k.startswith(skip_prefixes)}
    return sorted(k for k in keys if k not in state or k not in other or not torch.equal(state[k], other[k]))


def init_record(init_path: str | os.PathLike) -> dict[str, Any]:
    """What a warm start records of its init file: ``{"path", "sha256", "training"}``; ``training`` is the file's
    summary (:func:`summary_path`) when it describes this very file, else None, so a chain of warm starts keeps its
    history."""
    sha256 = sha256_file(init_path)
    summary_file = summary_path(init_path)
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    return {"path": str(init_path), "sha256": sha256, "training": summary if summary.get("sha256") == sha256 else None}


def run_dir_for(out_path: str | os.PathLike) -> Path:
    """The run directory of an output file (``runs/x.safetensors`` -> ``runs/x.run/``): checkpoint and default log."""
    out_path = Path(out_path)
    return out_path.parent / f"{out_path.stem}.run"


def machine_info() -> dict[str, Any]:
    """Where a run ran: CPU model, cores, torch version and threads (numbers are only comparable on one machine)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# -- checkpoints ------------------------------------------------------------------------------------------------------


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _scheduler_state(scheduler: Any) -> dict[str, Any]:
    # LambdaLR stores None for plain functions (they are rebuilt by the training script)
    return to_plain(scheduler.state_dict())


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    step: int,
    run_config: Mapping[str, Any],
    extra_tensors: Mapping[str, torch.Tensor] | None = None,
    extra_meta: Mapping[str, Any] | None = None,
) -> Path:
    """Atomically write a resumable checkpoint (see the module docstring for its layout).

    Args:
        model: the module being trained (all of its state dict is stored).
        optimizer, scheduler: their complete state.
        step: optimiser steps taken so far.
        run_config: what must be equal for a resume to continue the same run (hyper-parameters, data identity).
        extra_tensors: further state of the training script (e.g. codebook usage counters).
        extra_meta: further JSON-able state.
    """
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    optimizer_tensors, optimizer_meta = _optimizer_tensors(optimizer)
    tensors.update(optimizer_tensors)
    tensors.update({f"extra.{k}": v.detach().cpu().contiguous() for k, v in (extra_tensors or {}).items()})
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {
        "kind": _CHECKPOINT_KIND,
        "step": json.dumps(int(step)),
        "run_config": json.dumps(to_plain(run_config), sort_keys=True),
        "optimizer": json.dumps(optimizer_meta),
        "scheduler": json.dumps(_scheduler_state(scheduler)),
        "extra": json.dumps(to_plain(extra_meta or {})),
    }
    path = Path(path)
    with atomic_output(path) as tmp:
        save_safetensors_file(tensors, tmp, meta)
    return path


def _config_difference(saved: Any, current: Any, where: str = "") -> list[str]:
    """Each differing leaf by its path (``data[0].dir: checkpoint '/a' vs now 'b'``), not whole nested values: a
    recording's identity lists every shard's sha256."""
    if isinstance(saved, Mapping) and isinstance(current, Mapping):
        keys = sorted(set(saved) | set(current))
        return [line for k in keys
                for line in _config_difference(saved.get(k), current.get(k), f"{where}.{k}".lstrip("."))]  # fmt: skip
    if isinstance(saved, list) and isinstance(current, list) and len(saved) == len(current):
        return [line for i, (a, b) in enumerate(zip(saved, current))
                for line in _config_difference(a, b, f"{where}[{i}]")]  # fmt: skip
    return [] if saved == current else [f"{where}: checkpoint {saved!r} vs now {current!r}"]


def _read_checkpoint(path: Path, *, tensors: bool) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise MissingFileError(f"no training checkpoint at {str(path)!r}; start without resume")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            values = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"cannot read training checkpoint {str(path)!r}: {err}") from None
    if meta.get("kind") != _CHECKPOINT_KIND:
        raise CheckpointError(f"{path} is not a training checkpoint (metadata kind {meta.get('kind')!r})")
    return meta, values


def checkpoint_run_config(path: str | os.PathLike) -> dict[str, Any]:
    """The ``run_config`` a checkpoint was saved with (its metadata only; the tensors are not read)."""
    meta, _ = _read_checkpoint(Path(path), tensors=False)
    return json.loads(meta["run_config"])


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    run_config: Mapping[str, Any],
    extendable: bool = False,
) -> tuple[int, dict[str, torch.Tensor], dict[str, Any]]:
    """Restore what :func:`save_checkpoint` wrote into freshly built ``model``, ``optimizer`` and ``scheduler`` (build
    the scheduler before calling this) and torch's RNG; returns ``(step, extra_tensors, extra_meta)``.

    With ``extendable``, a checkpoint whose ``run_config`` differs only in a smaller ``"steps"`` is accepted: the run
    is extended, and ``scheduler`` (a ``LambdaLR`` built for the new total) sets the learning rate of the next step
    from the longer schedule, as a run planned that long from the start would have it there.

    Raises:
        MissingFileError: no checkpoint at ``path``.
        CheckpointError: the file is not a training checkpoint, or its state does not fit the model/optimiser.
        ConfigError: it belongs to a run with another ``run_config`` (the message lists the differences).
    """
    path = Path(path)
    meta, tensors = _read_checkpoint(path, tensors=True)
    saved_config = json.loads(meta["run_config"])
    current_config = json.loads(json.dumps(to_plain(run_config), sort_keys=True))
    extending = (
        extendable
        and {**saved_config, "steps": None} == {**current_config, "steps": None}
        and saved_config.get("steps", 0) < current_config.get("steps", 0)
    )
    if saved_config != current_config and not extending:
        differences = "; ".join(_config_difference(saved_config, current_config))
        more = " (a run is extended by a larger steps alone)" if extendable else ""
        raise ConfigError(
            f"{path} belongs to another run ({differences}); resume with the same settings and data{more}, or start "
            "a new run without resume"
        )

    model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(model_state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: model weights do not fit: {err}") from None

    optimizer_meta = json.loads(meta["optimizer"])
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, values in optimizer_meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": optimizer_meta["param_groups"]})
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"{path}: optimiser state does not fit: {err}") from None
    scheduler.load_state_dict(json.loads(meta["scheduler"]))
    if extending:  # the saved learning rate is the old schedule's; the next step takes the new one's
        for group, base_lr, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
            group["lr"] = base_lr * factor(scheduler.last_epoch)
    torch.set_rng_state(tensors["rng.torch"])
    extra_tensors = {k[len("extra.") :]: v for k, v in tensors.items() if k.startswith("extra.")}
    return int(json.loads(meta["step"])), extra_tensors, json.loads(meta["extra"])


# -- progress and timing ----------------------------------------------------------------------------------------------


class MetricWindow:
    """The scalars of a training loop's steps since the last log line: ``add`` each step's (tensors or floats),
    ``latest`` for a progress bar, ``close`` for the means to log (which start the next window)."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = tuple(keys)
        self.values: dict[str, list[float]] = {k: [] for k in self.keys}

    def add(self, scalars: Mapping[str, Any]) -> None:
        for key in self.keys:
            if key in scalars:
                value = scalars[key]
                self.values[key].append(float(value.detach()) if isinstance(value, torch.Tensor) else float(value))

    def latest(self, key: str) -> float:
        return self.values[key][-1]

    def close(self) -> dict[str, float]:
        means = {k: float(np.mean(v)) for k, v in self.values.items() if v}
        self.values = {k: [] for k in self.keys}
        return means


class Stopwatch:
    """Accumulates wall time of named phases (``with watch("data"): ...``) and the total since creation."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.phases: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        begin = time.perf_counter()
        try:
            yield
        finally:
            self.phases[phase] = self.phases.get(phase, 0.0) + time.perf_counter() - begin

    @property
    def total(self) -> float:
        return time.perf_counter() - self.start

    def report(self) -> dict[str, float]:
        return {"total_s": round(self.total, 3), **{f"{k}_s": round(v, 3) for k, v in self.phases.items()}}
