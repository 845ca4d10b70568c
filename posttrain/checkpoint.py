"""Run checkpoints and resumption: weights, optimizer, schedule, RNG states and the prompt sampler's position,
written atomically every ``checkpoint.every`` iterations, so a run killed at any point and resumed with
``checkpoint.resume=auto`` ends with the same weights as an uninterrupted run."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np

from posttrain.data import PromptSampler
from posttrain.run import Run
from posttrain.update import TrainState
from worldmodels.errors import CheckpointError, ConfigError, MissingFileError
from worldmodels.hashing import sha256_file
from worldmodels.runtime.files import write_json
from worldmodels.training.common import load_checkpoint, save_checkpoint

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.json"


def rng_states() -> dict[str, Any]:
    """Python's and NumPy's global RNG states, as JSON-able lists (torch draws come from seeded generators)."""
    version, state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(state), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` recorded."""
    version, state, gauss = states["python"]
    random.setstate((version, tuple(state), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoint files, oldest first."""
    return sorted((run_dir / CHECKPOINT_DIR).glob("iter_*.safetensors"))


def save_run_checkpoint(run_dir: Path, iteration: int, state: TrainState, *, extra: dict, keep: int) -> Path:
    """Write ``checkpoints/iter_<iteration>.safetensors`` atomically, then point ``checkpoints/latest.json`` at it
    (with its sha256), then delete all but the newest ``keep``: an interrupted save never loses the previous one."""
    path = run_dir / CHECKPOINT_DIR / f"iter_{iteration:06d}.safetensors"
    save_checkpoint(
        path, model=state.transformer, optimizer=state.optimizer, scheduler=state.scheduler, step=iteration,
        run_config=state.run_config, extra_meta=extra,
    )  # fmt: skip
    pointer = {"file": path.name, "sha256": sha256_file(path), "iteration": iteration}
    write_json(run_dir / CHECKPOINT_DIR / LATEST, pointer)
    for old in checkpoints(run_dir)[:-keep]:
        if old != path:
            old.unlink(missing_ok=True)
    return path


def find_resume_checkpoint(run_dir: Path, resume: str) -> Path | None:
    """The checkpoint to resume from: ``never`` -> none (and refuses a directory that holds checkpoints), ``auto``
    -> the latest (verified against its sha256), else the given path.

    Raises:
        ConfigError: ``resume=never`` but the run directory already holds checkpoints.
        CheckpointError: the latest checkpoint is missing, unreadable or corrupted (nothing is deleted; the message
            names the previous checkpoint to resume from instead).
        MissingFileError: an explicit path that does not exist.
    """
    latest = run_dir / CHECKPOINT_DIR / LATEST
    if resume == "never":
        if latest.exists() or checkpoints(run_dir):
            raise ConfigError(
                f"{run_dir} already holds checkpoints of a run; pass --resume auto to continue it, or another --out"
            )
        return None
    if resume != "auto":
        path = Path(resume)
        if not path.is_file():
            raise MissingFileError(f"checkpoint {str(path)!r} does not exist")
        return path
    if not latest.exists():
        return None
    try:
        pointer = json.loads(latest.read_text(encoding="utf-8"))
        path = run_dir / CHECKPOINT_DIR / pointer["file"]
        expected = pointer["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"{latest} is unreadable ({err}); resume from one of the checkpoint files with --resume PATH"
        ) from None
    others = [p for p in checkpoints(run_dir) if p != path]
    hint = f"; the previous checkpoint {others[-1]} can be resumed with --resume {others[-1]}" if others else ""
    if not path.is_file():
        raise CheckpointError(f"{latest} points at {path}, which is missing{hint}")
    if sha256_file(path) != expected:
        raise CheckpointError(f"checkpoint {path} is corrupted (its sha256 differs from the one recorded){hint}")
    return path


def resume_run(run: Run, state: TrainState, sampler: PromptSampler) -> tuple[int, Path | None]:
    """``(first iteration, checkpoint)``: restore weights, optimizer, scheduler and RNG states from the checkpoint
    ``checkpoint.resume`` selects (:func:`find_resume_checkpoint`), after checking that it belongs to this run."""
    resume_path = find_resume_checkpoint(run.dir, run.config.checkpoint.resume)
    if resume_path is None:
        return 0, None
    start, _, extra = load_checkpoint(resume_path, model=state.transformer, optimizer=state.optimizer,
                                      scheduler=state.scheduler, run_config=state.run_config)  # fmt: skip
    if extra.get("sampler_position") != sampler.position(start):
        raise CheckpointError(
            f"{resume_path}: sampler position {extra.get('sampler_position')} does not match iteration {start} "
            f"({sampler.position(start)} prompts); the checkpoint was not written by this run"
        )
    set_rng_states(extra["rng"])
    return start, resume_path


def checkpoint_if_due(run: Run, state: TrainState, sampler: PromptSampler, done: int, *, off_policy: bool) -> None:
    """After ``done`` iterations, every ``checkpoint.every`` and at the end: rank 0 saves
    (:func:`save_run_checkpoint`), all ranks wait."""
    config = run.config
    if done % config.checkpoint.every == 0 or done == config.iterations:
        if run.dist.main:
            extra = {"iteration": done, "sampler_position": sampler.position(done), "rng": rng_states(),
                     "off_policy": off_policy, "world_size": run.dist.world}  # fmt: skip
            save_run_checkpoint(run.dir, done, state, extra=extra, keep=config.checkpoint.keep)
        run.dist.barrier()
