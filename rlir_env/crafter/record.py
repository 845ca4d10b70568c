"""Record Crafter episodes played by a behaviour policy into trajectory shards (:mod:`worldmodels.data.shards`).

The recording is split into shards of ``shard_frames`` frames; shard ``j`` is recorded from its own seed
``SeedSequence(seed, spawn_key=(j,))`` (spawned into an episode-seed stream and the policy's generator) and always
starts with a fresh episode. Shards are therefore independent: worker processes record them in any order and the
arrays, the shard files (written reproducibly) and their sha256 depend only on ``(seed, n_frames, shard_frames)`` and
the recording settings, not on the number of workers. An episode still running when its shard is full is cut there
(its last frame has no action and is not terminated, like an episode truncated by Crafter's ``length``).

Per-frame extras stored next to the required arrays:

* ``achievements uint8[F, 22]``: 1 where an achievement was unlocked (first time in the episode) on arriving at the
  frame (columns: ``ACHIEVEMENTS``);
* ``inventory uint8[F, 16]`` (columns: ``INVENTORY_ITEMS``; health is column 0);
* ``player_pos int16[F, 2]``, ``facing int8[F, 2]``, ``sleeping bool[F]``;
* ``daylight float32[F]``: the game's daylight when the frame was drawn (1 full day, 0 darkest night; below 0.5
  Crafter adds random noise to the frame, and below 1 it blends in a darker, bluer copy);
* ``semantic uint8[F, 64, 64]`` only with ``semantic=True``;
* per episode: ``episode_seeds int64[E]``, the seed passed to ``CrafterEnv.reset``.
"""

from __future__ import annotations

import concurrent.futures
import importlib.metadata
import json
import multiprocessing
import os
import queue as queue_module
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rlir_env.crafter.env import ACHIEVEMENTS, INVENTORY_ITEMS, CrafterEnv
from rlir_env.crafter.policies import POLICY_NAMES, make_policy
from worldmodels.actions.crafter import ACTION_NAMES
from worldmodels.data.shards import MANIFEST_NAME, ShardInfo, load_shard, read_manifest, write_manifest, write_shard
from worldmodels.errors import ConfigError, DataError
from worldmodels.hashing import sha256_file
from worldmodels.runtime.files import atomic_output
from worldmodels.runtime.progress import Progress

__all__ = ["ENV_ID", "record", "shard_name"]

ENV_ID = "RLIR-CrafterReal-v0"
SETTINGS_NAME = "record-settings.json"
"""Written into the output directory before the first shard: what a ``resume`` must match."""
_PROGRESS_EVERY = 256  # frames between progress messages from a worker
_progress_queue: Any = None  # set in worker processes by _init_worker


def shard_name(index: int) -> str:
    """File name of shard ``index``."""
    return f"shard-{index:05d}.npz"


def record(
    out_dir: str | os.PathLike,
    *,
    n_frames: int,
    shard_frames: int = 5000,
    workers: int = 1,
    seed: int = 0,
    policy: str = "mixture",
    size: int = 64,
    episode_length: int | None = 10000,
    semantic: bool = False,
    policy_kwargs: Mapping[str, Any] | None = None,
    progress: bool = False,
    overwrite: bool = False,
    resume: bool = False,
) -> dict[str, Any]:
    """Record ``n_frames`` frames of Crafter into ``out_dir`` (shards + ``manifest.json``); returns the manifest.

    Args:
        out_dir: Output directory (created if missing).
        n_frames: Total frames to record (every episode's frames, including first and last).
        shard_frames: Frames per shard (the last shard holds the rest); episodes never span shards.
        workers: Processes recording shards in parallel (does not change the result).
        seed: Root seed of the recording.
        policy: Behaviour policy name (``mixture``, ``explorer``, ``random``, ``uniform``; see
            :func:`rlir_env.crafter.policies.make_policy`).
        size: Frame side in pixels.
        episode_length: Crafter's episode length (truncation); ``None`` for no limit.
        semantic: Also store the world's semantic map for every frame (``uint8[F, 64, 64]``).
        policy_kwargs: Keyword arguments for the policy constructor (JSON-serialisable).
        progress: Show a rich progress bar.
        overwrite: Replace an existing recording in ``out_dir`` (its shards and manifest); otherwise refuse.
        resume: Keep the shards already in ``out_dir`` (from an interrupted or a shorter run with the same settings
            except ``n_frames``) and record only the missing ones; a kept shard is read back and checked, and one
            that is unreadable or of another size is recorded again. The result is the same as an uninterrupted run.

    Raises:
        ConfigError: a bad setting; ``out_dir`` already holds a recording and neither ``overwrite`` nor ``resume`` is
            set; or ``resume`` meets a recording made with other settings.

    With ``workers > 1`` shards are recorded in ``spawn``-started processes, so a script calling this must guard
    its entry point with ``if __name__ == "__main__":`` (the ``rlir`` command does).
    """
    n_frames = _positive_int(n_frames, "n_frames")
    shard_frames = _positive_int(shard_frames, "shard_frames")
    workers = _positive_int(workers, "workers")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"record seed must be a non-negative integer, got {seed!r}")
    if policy not in POLICY_NAMES:
        raise ConfigError(f"unknown Crafter behaviour policy {policy!r}; choose one of {', '.join(POLICY_NAMES)}")
    policy_kwargs = dict(policy_kwargs or {})
    try:
        json.dumps(policy_kwargs, allow_nan=False)  # they go into the manifest
    except (TypeError, ValueError) as e:
        raise ConfigError(f"record policy_kwargs must be plain JSON values, got {policy_kwargs!r} ({e})") from None
    make_policy(policy, **policy_kwargs)  # fail here, not in a worker, on bad policy settings
    CrafterEnv(size=size, length=episode_length)  # same for env settings

    if overwrite and resume:
        raise ConfigError("record: pass overwrite=True (start again) or resume=True (keep the shards), not both")
    out = Path(out_dir)
    settings = {
        "env_id": ENV_ID, "crafter_version": _version("crafter"), "opensimplex_version": _version("opensimplex"),
        "shard_frames": shard_frames, "seed": int(seed), "policy": policy, "policy_kwargs": policy_kwargs,
        "size": int(size), "episode_length": episode_length, "semantic": bool(semantic),
    }  # fmt: skip
    _prepare_output(out, overwrite, resume, settings)
    sizes = [min(shard_frames, n_frames - start) for start in range(0, n_frames, shard_frames)]
    tasks = [
        dict(index=j, n_frames=n, seed=int(seed), policy=policy, policy_kwargs=policy_kwargs, size=int(size),
             episode_length=episode_length, semantic=bool(semantic), out_dir=str(out))
        for j, n in enumerate(sizes)
    ]  # fmt: skip

    kept = {task["index"]: _existing_shard(out, task) for task in tasks} if resume else {}
    kept = {index: result for index, result in kept.items() if result is not None}
    todo = [task for task in tasks if task["index"] not in kept]
    with Progress(n_frames, "recording Crafter", enabled=progress, rate_unit="frames") as bar:
        bar.advance(sum(info.frames for info, _ in kept.values()))
        if workers == 1 or len(todo) <= 1:
            recorded = [_record_shard(task, bar.advance) for task in todo]
        else:
            recorded = _record_parallel(todo, min(workers, len(todo)), bar)
    by_index = {**kept, **{task["index"]: result for task, result in zip(todo, recorded)}}
    results = [by_index[task["index"]] for task in tasks]

    shards = [info for info, _ in results]
    config = {
        "env_id": ENV_ID,
        "crafter_version": _version("crafter"),
        "opensimplex_version": _version("opensimplex"),
        "n_frames": n_frames,
        "shard_frames": shard_frames,
        "seed": int(seed),
        "seeding": "shard j: SeedSequence(seed, spawn_key=(j,)).spawn(2) -> (episode reset seeds, policy Generator)",
        "policy": policy,
        "policy_kwargs": policy_kwargs,
        "size": int(size),
        "episode_length": episode_length,
        "semantic": bool(semantic),
    }
    metadata = {
        "action_names": list(ACTION_NAMES),
        "arrays": {
            "achievements": {"columns": list(ACHIEVEMENTS), "meaning": "unlocked for the first time on this frame"},
            "inventory": {"columns": list(INVENTORY_ITEMS)},
            "player_pos": {"columns": ["x", "y"]},
            "facing": {"columns": ["dx", "dy"]},
            "sleeping": {},
            "daylight": {"meaning": "the game's daylight in [0, 1] when the frame was drawn; < 0.5: night noise"},
            **({"semantic": {"meaning": "world map [x, y]; ids: rlir_env.crafter.SEMANTIC_NAMES"}} if semantic else {}),
            "episode_seeds": {"meaning": "seed passed to CrafterEnv.reset"},
        },
        "episode_seeds": {info.file: seeds for info, seeds in results},
    }
    write_manifest(out, shards, config=config, metadata=metadata)
    return read_manifest(out)


def _record_parallel(tasks: list[dict], workers: int, bar: Progress) -> list[tuple[ShardInfo, list[int]]]:
    # spawn, not fork: the caller may hold threads (torch, rich) that fork would copy in a broken state.
    context = multiprocessing.get_context("spawn")
    progress_queue = context.Queue() if bar.enabled else None
    results: dict[int, tuple[ShardInfo, list[int]]] = {}
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(progress_queue,)
    ) as pool:
        futures = {pool.submit(_record_shard, task): task["index"] for task in tasks}
        pending = set(futures)
        try:
            while pending:
                done, pending = concurrent.futures.wait(pending, timeout=0.2)
                for future in done:
                    results[futures[future]] = future.result()
                _drain(progress_queue, bar)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
        _drain(progress_queue, bar)
    return [results[task["index"]] for task in tasks]


def _init_worker(progress_queue: Any) -> None:
    global _progress_queue
    _progress_queue = progress_queue


def _drain(progress_queue: Any, bar: Progress) -> None:
    while progress_queue is not None:
        try:
            bar.advance(progress_queue.get_nowait())
        except queue_module.Empty:
            return


def _record_shard(
    task: Mapping[str, Any], on_frames: Callable[[int], None] | None = None
) -> tuple[ShardInfo, list[int]]:
    """Record and write one shard; returns its manifest entry and its episodes' reset seeds."""
    if on_frames is None and _progress_queue is not None:
        on_frames = _progress_queue.put
    capacity = task["n_frames"]
    shard_seed = np.random.SeedSequence(task["seed"], spawn_key=(task["index"],))
    episode_seed_sequence, policy_seed_sequence = shard_seed.spawn(2)
    episode_rng = np.random.default_rng(episode_seed_sequence)
    policy_rng = np.random.default_rng(policy_seed_sequence)
    env = CrafterEnv(size=task["size"], length=task["episode_length"])
    policy = make_policy(task["policy"], **task["policy_kwargs"])
    size = task["size"]

    frames = np.empty((capacity, size, size, 3), dtype=np.uint8)
    actions = np.full(capacity, -1, dtype=np.int64)
    rewards = np.zeros(capacity, dtype=np.float32)
    terminated = np.zeros(capacity, dtype=bool)
    achievements = np.zeros((capacity, len(ACHIEVEMENTS)), dtype=np.uint8)
    inventory = np.zeros((capacity, len(INVENTORY_ITEMS)), dtype=np.uint8)
    player_pos = np.zeros((capacity, 2), dtype=np.int16)
    facing = np.zeros((capacity, 2), dtype=np.int8)
    sleeping = np.zeros(capacity, dtype=bool)
    daylight = np.zeros(capacity, dtype=np.float32)
    semantic = None
    starts: list[int] = []
    seeds: list[int] = []
    achievement_column = {name: k for k, name in enumerate(ACHIEVEMENTS)}

    def store(t: int, obs: np.ndarray, reward: float, done: bool, info: Mapping[str, Any]) -> None:
        nonlocal semantic
        frames[t] = obs
        rewards[t] = reward
        terminated[t] = done
        for name in info["unlocked"]:
            achievements[t, achievement_column[name]] = 1
        inventory[t] = [info["inventory"][name] for name in INVENTORY_ITEMS]
        player_pos[t] = info["player_pos"]
        facing[t] = info["facing"]
        sleeping[t] = info["sleeping"]
        daylight[t] = env._game._world.daylight  # what the frame was drawn with (crafter updates it before drawing)
        if task["semantic"]:
            if semantic is None:
                semantic = np.zeros((capacity, *info["semantic"].shape), dtype=np.uint8)
            semantic[t] = info["semantic"]

    t = 0
    reported = 0
    while t < capacity:
        episode_seed = int(episode_rng.integers(0, 2**63 - 1))
        obs, info = env.reset(seed=episode_seed)
        policy.reset(policy_rng)
        starts.append(t)
        seeds.append(episode_seed)
        store(t, obs, 0.0, False, info)
        # Each pass records the action at frame t and the frame it leads to; the loop ends at the episode's end or
        # at the shard's last frame, leaving that frame's action at -1.
        while t + 1 < capacity:
            action = int(policy.act(obs, info))
            obs, reward, term, trunc, info = env.step(action)
            actions[t] = action
            t += 1
            store(t, obs, reward, term, info)
            if on_frames is not None and t - reported >= _PROGRESS_EVERY:
                on_frames(t - reported)
                reported = t
            if term or trunc:
                break
        t += 1

    extras = {
        "achievements": achievements,
        "inventory": inventory,
        "player_pos": player_pos,
        "facing": facing,
        "sleeping": sleeping,
        "daylight": daylight,
        "episode_seeds": np.array(seeds, dtype=np.int64),
    }
    if semantic is not None:
        extras["semantic"] = semantic
    info = write_shard(
        Path(task["out_dir"]) / shard_name(task["index"]),
        frames=frames, actions=actions, rewards=rewards, terminated=terminated,
        episode_starts=np.array(starts, dtype=np.int64), extras=extras,
    )  # fmt: skip
    if on_frames is not None and capacity > reported:
        on_frames(capacity - reported)
    return info, seeds


def _prepare_output(out: Path, overwrite: bool, resume: bool, settings: dict[str, Any]) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"record output {str(out)!r} is a file; give a directory")
    out.mkdir(parents=True, exist_ok=True)
    old = sorted(out.glob("shard-*.npz"))
    settings_path = out / SETTINGS_NAME
    if resume and (old or settings_path.exists()):
        try:
            previous = json.loads(settings_path.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(
                f"cannot resume the recording in {str(out)!r}: its {SETTINGS_NAME} is missing or unreadable ({e}); "
                "record into another directory or pass overwrite=True"
            ) from None
        differ = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
        if differ:
            raise ConfigError(
                f"cannot resume the recording in {str(out)!r}: it was made with other settings "
                + ", ".join(f"{k}={previous.get(k)!r} (now {settings.get(k)!r})" for k in differ)
                + "; use the same settings or another directory"
            )
        (out / MANIFEST_NAME).unlink(missing_ok=True)  # rewritten when every shard is there
        return
    if (out / MANIFEST_NAME).exists() or old:
        if not overwrite:
            raise ConfigError(
                f"{str(out)!r} already holds a recording; pass overwrite=True (--overwrite) to replace it, "
                "resume=True (--resume) to complete it, or choose another directory"
            )
        (out / MANIFEST_NAME).unlink(missing_ok=True)
        for path in old:
            path.unlink()
    with atomic_output(settings_path) as tmp:
        Path(tmp).write_text(json.dumps(settings, indent=1, sort_keys=True) + "\n")


def _existing_shard(out: Path, task: Mapping[str, Any]) -> tuple[ShardInfo, list[int]] | None:
    """The manifest entry and episode seeds of shard ``task`` if it is already in ``out`` with the right size."""
    path = out / shard_name(task["index"])
    if not path.is_file():
        return None
    try:
        arrays = load_shard(path)
    except DataError:
        return None  # unreadable (e.g. a disk filled up): record it again
    if len(arrays["frames"]) != task["n_frames"] or "episode_seeds" not in arrays:
        return None  # the last shard of a shorter recording
    starts = arrays["episode_starts"]
    lengths = tuple(int(n) for n in np.diff(np.append(starts, len(arrays["frames"]))))
    info = ShardInfo(file=path.name, frames=len(arrays["frames"]), frame_shape=tuple(arrays["frames"].shape[1:]),
                     episode_lengths=lengths, sha256=sha256_file(path))  # fmt: skip
    return info, [int(v) for v in arrays["episode_seeds"]]


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"record {name} must be a positive integer, got {value!r}")
    return int(value)
