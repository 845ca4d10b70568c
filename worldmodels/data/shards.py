"""Sharded trajectory storage for recorded episodes (IDM, world-model and reward-head training data).

A dataset is a directory holding ``manifest.json`` and shard files. Each shard is an ``.npz`` (a zip of ``.npy``
arrays, read with ``numpy.load(..., allow_pickle=False)``) of whole episodes laid end to end:

* ``frames``: ``uint8[F, H, W, 3]``;
* ``actions``: ``int64[F]``, the action taken at frame ``t`` (so ``frames[t + 1]`` is its result); the last frame
  of every episode has no action and holds ``-1``;
* ``rewards``: ``float32[F]`` and ``terminated``: ``bool[F]``, what the environment returned together with frame
  ``t`` (``0`` / ``False`` on an episode's first frame); ``terminated`` can only be True on an episode's last
  frame, and an episode whose last frame is not terminated was truncated;
* ``episode_starts``: ``int64[E]``, the offset of each episode's first frame (``0`` first, increasing);
* optional extras: per-frame arrays ``[F, ...]`` (e.g. ``achievements uint8[F, 22]``), and per-episode arrays
  ``[E, ...]`` whose names start with ``episode_`` (e.g. ``episode_seeds``).

``manifest.json`` lists the shards in order with their frame count, episode lengths and sha256, plus the writer's
``config`` and free-form ``metadata`` (seeds, array descriptions). Episodes are numbered globally in manifest order.

Shards are written as zips with fixed timestamps and a fixed member order, so equal arrays give byte-identical
files and equal sha256s across runs (``numpy.savez_compressed`` stamps the current time into every member).
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from worldmodels.errors import ConfigError, DataError, IntegrityError, MissingFileError
from worldmodels.hashing import sha256_file
from worldmodels.runtime.files import atomic_output

__all__ = [
    "MANIFEST_NAME",
    "REQUIRED_ARRAYS",
    "Episode",
    "ShardDataset",
    "ShardInfo",
    "ShardIntegrityError",
    "load_shard",
    "read_manifest",
    "write_manifest",
    "write_shard",
]

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "rlir-trajectory-shards"
FORMAT_VERSION = 1
REQUIRED_ARRAYS: dict[str, np.dtype] = {
    "frames": np.dtype(np.uint8),
    "actions": np.dtype(np.int64),
    "rewards": np.dtype(np.float32),
    "terminated": np.dtype(np.bool_),
    "episode_starts": np.dtype(np.int64),
}
"""The arrays every shard holds, with their dtypes."""
_EPISODE_PREFIX = "episode_"
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can record; any fixed value makes files reproducible


class ShardIntegrityError(DataError, IntegrityError):
    """A shard's sha256 differs from the manifest (a corrupted or replaced file); both a DataError and an
    IntegrityError."""


@dataclass(frozen=True)
class ShardInfo:
    """One manifest entry: a shard file (relative to the dataset root) and what it holds."""

    file: str
    frames: int
    frame_shape: tuple[int, int, int]
    episode_lengths: tuple[int, ...]
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "frames": self.frames, "frame_shape": list(self.frame_shape),
                "episode_lengths": list(self.episode_lengths), "sha256": self.sha256}  # fmt: skip

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> ShardInfo:
        return cls(file=entry["file"], frames=entry["frames"], frame_shape=tuple(entry["frame_shape"]),
                   episode_lengths=tuple(entry["episode_lengths"]), sha256=entry["sha256"])  # fmt: skip


@dataclass
class Episode:
    """One recorded episode: per-frame arrays of its ``len(self)`` frames and per-episode values."""

    index: int
    """Global episode number (manifest order)."""
    frames: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    """Per-frame extra arrays (e.g. ``achievements``)."""
    episode_extras: dict[str, np.ndarray] = field(default_factory=dict)
    """Per-episode values (the ``episode_*`` arrays without ``episode_starts``), e.g. ``episode_seeds``."""

    def __len__(self) -> int:
        return len(self.frames)


# -- writing --------------------------------------------------------------------------------------------------------


def write_shard(
    path: str | os.PathLike,
    *,
    frames: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    terminated: np.ndarray,
    episode_starts: np.ndarray,
    extras: Mapping[str, np.ndarray] | None = None,
) -> ShardInfo:
    """Check and atomically write one shard; returns its manifest entry (``file`` is the file name).

    Arrays are converted to the dtypes of :data:`REQUIRED_ARRAYS`; extras keep their dtype (no object arrays).

    Raises:
        DataError: the arrays are inconsistent (see the module docstring for the layout), or an extra clashes with a
            required name or has the wrong leading dimension.
    """
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    for name, value in dict(frames=frames, actions=actions, rewards=rewards, terminated=terminated,
                            episode_starts=episode_starts).items():  # fmt: skip
        array = np.asarray(value)
        if name in ("actions", "episode_starts") and array.size and not np.issubdtype(array.dtype, np.integer):
            raise DataError(f"write_shard({str(path)!r}): {name} must be integers, got dtype {array.dtype}")
        arrays[name] = np.ascontiguousarray(array, dtype=REQUIRED_ARRAYS[name])
    for name in sorted(extras or {}):
        if name in REQUIRED_ARRAYS:
            raise DataError(f"write_shard({str(path)!r}): extra array {name!r} clashes with a required array; "
                            "rename it")  # fmt: skip
        arrays[name] = np.ascontiguousarray(extras[name])
    episode_lengths = _check_arrays(arrays, where=f"write_shard({str(path)!r})")
    with atomic_output(path) as tmp:
        _write_npz(tmp, arrays)
    return ShardInfo(file=path.name, frames=len(arrays["frames"]), frame_shape=arrays["frames"].shape[1:],
                     episode_lengths=episode_lengths, sha256=sha256_file(path))  # fmt: skip


def write_manifest(
    root: str | os.PathLike,
    shards: Sequence[ShardInfo],
    *,
    config: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Atomically write ``root/manifest.json`` listing ``shards`` (in order) with the writer's ``config`` and
    free-form ``metadata``; both must be JSON-serialisable. Returns the manifest path."""
    root = Path(root)
    names = [shard.file for shard in shards]
    if len(set(names)) != len(names):
        raise DataError(f"write_manifest({str(root)!r}): shard files are listed more than once: {names}")
    if len({shard.frame_shape for shard in shards}) > 1:
        raise DataError(f"write_manifest({str(root)!r}): shards have different frame shapes "
                        f"{sorted({s.frame_shape for s in shards})}; one dataset holds one frame size")  # fmt: skip
    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "frames": sum(shard.frames for shard in shards),
        "episodes": sum(len(shard.episode_lengths) for shard in shards),
        "shards": [shard.to_json() for shard in shards],
        "config": dict(config or {}),
        "metadata": dict(metadata or {}),
    }
    try:
        text = _dumps(manifest)
    except (TypeError, ValueError) as e:
        raise DataError(f"write_manifest({str(root)!r}): config/metadata are not plain JSON ({e})") from e
    path = root / MANIFEST_NAME
    with atomic_output(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return path


def _dumps(value: Any, indent: int = 0) -> str:
    """JSON with one key per line, but lists of plain values (episode lengths, seeds) kept on one line."""
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(str(k))}: {_dumps(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in value):
        return "[\n" + ",\n".join(inner + _dumps(v, indent + 1) for v in value) + f"\n{pad}]"
    return json.dumps(value, allow_nan=False)


def _write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            member = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            member.compress_type = zipfile.ZIP_DEFLATED
            member.external_attr = 0o644 << 16
            with archive.open(member, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, array, allow_pickle=False)


# -- reading --------------------------------------------------------------------------------------------------------


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``root/manifest.json``; returns it as a dict.

    Raises:
        MissingFileError: there is no manifest.
        DataError: it is not valid JSON or lacks required fields, or its totals disagree with its shard list.
    """
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        raise MissingFileError(f"no {MANIFEST_NAME} in {str(root)!r}; point to a directory written by the recorder")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e}); re-record the dataset or restore the manifest") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise DataError(f"{path}: not a trajectory-shard manifest (format must be {FORMAT_NAME!r})")
    if manifest.get("version") != FORMAT_VERSION:
        raise DataError(
            f"{path}: manifest version {manifest.get('version')!r} is not supported (expected {FORMAT_VERSION})"
        )
    shards = manifest.get("shards")
    if not isinstance(shards, list):
        raise DataError(f"{path}: 'shards' must be a list of shard entries")
    for i, entry in enumerate(shards):
        ok = (
            isinstance(entry, dict)
            and isinstance(entry.get("file"), str)
            and "/" not in entry["file"] and "\\" not in entry["file"] and entry["file"] not in ("", ".", "..")
            and isinstance(entry.get("frames"), int)
            and isinstance(entry.get("sha256"), str)
            and isinstance(entry.get("frame_shape"), list) and len(entry["frame_shape"]) == 3
            and isinstance(entry.get("episode_lengths"), list)
            and all(isinstance(n, int) and n >= 1 for n in entry["episode_lengths"])
            and sum(entry["episode_lengths"]) == entry["frames"]
        )  # fmt: skip
        if not ok:
            raise DataError(
                f"{path}: shard entry {i} is malformed (needs a plain file name, frames, sha256 and episode_lengths "
                f"summing to frames): {entry!r}"
            )
    if len({tuple(e["frame_shape"]) for e in shards}) > 1:
        raise DataError(f"{path}: shards list different frame shapes; one dataset holds one frame size")
    if manifest.get("frames") != sum(e["frames"] for e in shards) or manifest.get("episodes") != sum(
        len(e["episode_lengths"]) for e in shards
    ):
        raise DataError(f"{path}: the 'frames'/'episodes' totals disagree with the shard list; the manifest is damaged")
    return manifest


def load_shard(path: str | os.PathLike, *, sha256: str | None = None) -> dict[str, np.ndarray]:
    """Load and check one shard (all arrays, decompressed); ``sha256`` pins the file's hash.

    Raises:
        MissingFileError: the file does not exist.
        ShardIntegrityError: its sha256 differs from ``sha256``.
        DataError: it is not a readable npz (truncated, corrupt), lacks a required array, holds pickled objects, or
            its arrays are inconsistent.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"shard {str(path)!r} does not exist; restore it or re-record the dataset")
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256:
            raise ShardIntegrityError(
                f"shard {str(path)!r} has sha256 {actual} but the manifest pins {sha256}; the file is corrupted or "
                "was replaced, re-record it"
            )
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = [name for name in archive.files]
            missing = [name for name in REQUIRED_ARRAYS if name not in names]
            if missing:
                raise DataError(f"shard {str(path)!r} lacks the required array(s) {missing}; it holds {sorted(names)}")
            arrays = {name: archive[name] for name in names}
    except DataError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as e:
        raise DataError(
            f"shard {str(path)!r} cannot be read ({type(e).__name__}: {e}); it is truncated or corrupt"
        ) from e
    for name, dtype in REQUIRED_ARRAYS.items():
        if arrays[name].dtype != dtype:
            raise DataError(f"shard {str(path)!r}: array {name!r} has dtype {arrays[name].dtype}, expected {dtype}")
    _check_arrays(arrays, where=f"shard {str(path)!r}")
    return arrays


def _check_arrays(arrays: Mapping[str, np.ndarray], where: str) -> tuple[int, ...]:
    """Check a shard's layout; returns its episode lengths."""
    frames = arrays["frames"]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise DataError(f"{where}: frames must be uint8[F, H, W, 3], got shape {frames.shape}")
    n_frames = frames.shape[0]
    if n_frames == 0:
        raise DataError(f"{where}: a shard needs at least one frame")
    for name in ("actions", "rewards", "terminated"):
        if arrays[name].shape != (n_frames,):
            raise DataError(f"{where}: {name} must have shape ({n_frames},) like frames, got {arrays[name].shape}")
    starts = arrays["episode_starts"]
    if starts.ndim != 1 or len(starts) == 0 or starts[0] != 0:
        raise DataError(f"{where}: episode_starts must be a non-empty 1-D array starting at 0, got {starts[:8]}")
    if (np.diff(starts) <= 0).any() or starts[-1] >= n_frames:
        raise DataError(f"{where}: episode_starts must increase strictly and stay below {n_frames} frames: {starts}")
    n_episodes = len(starts)
    for name, array in arrays.items():
        if name in REQUIRED_ARRAYS:
            continue
        if array.dtype == object:
            raise DataError(f"{where}: extra array {name!r} holds Python objects; store numbers only")
        expected = n_episodes if name.startswith(_EPISODE_PREFIX) else n_frames
        kind = "episodes (its name starts with 'episode_')" if name.startswith(_EPISODE_PREFIX) else "frames"
        if array.ndim == 0 or array.shape[0] != expected:
            raise DataError(f"{where}: extra array {name!r} has shape {array.shape}; its first dimension must be "
                            f"the {expected} {kind}")  # fmt: skip
    last = np.append(starts[1:], n_frames) - 1
    is_last = np.zeros(n_frames, dtype=bool)
    is_last[last] = True
    actions = arrays["actions"]
    if (actions[last] != -1).any():
        episode = int(np.flatnonzero(actions[last] != -1)[0])
        raise DataError(f"{where}: the last frame of episode {episode} (frame {last[episode]}) has action "
                        f"{actions[last][episode]}, expected -1 (no action)")  # fmt: skip
    if (actions[~is_last] < 0).any():
        frame = int(np.flatnonzero((actions < 0) & ~is_last)[0])
        raise DataError(f"{where}: frame {frame} is not an episode's last frame but has action {actions[frame]}")
    if (arrays["terminated"] & ~is_last).any():
        frame = int(np.flatnonzero(arrays["terminated"] & ~is_last)[0])
        raise DataError(f"{where}: frame {frame} is marked terminated but is not the last frame of its episode")
    if not np.isfinite(arrays["rewards"]).all():
        raise DataError(f"{where}: rewards hold NaN or infinity")
    return tuple(int(n) for n in np.diff(np.append(starts, n_frames)))


# -- dataset --------------------------------------------------------------------------------------------------------


class ShardDataset:
    """Random access to the episodes and windows of a shard directory.

    The manifest is read at construction; shards are loaded (checked against their manifest sha256 and decompressed)
    on first use and kept in memory, at most ``max_cached_shards`` at a time (default: all).

    Args:
        root: The dataset directory (holding ``manifest.json``).
        max_cached_shards: How many decompressed shards to keep (least recently used ones are dropped).
        verify: Check each shard's sha256 against the manifest when it is loaded.
    """

    def __init__(self, root: str | os.PathLike, *, max_cached_shards: int | None = None, verify: bool = True) -> None:
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        if max_cached_shards is not None and max_cached_shards < 1:
            raise ConfigError(f"max_cached_shards must be >= 1 or None, got {max_cached_shards!r}")
        self.max_cached_shards = max_cached_shards
        self.verify = verify
        self.shards = [ShardInfo.from_json(entry) for entry in self.manifest["shards"]]
        self.frame_shape: tuple[int, ...] = self.shards[0].frame_shape if self.shards else ()
        """``(H, W, 3)`` of every frame."""
        lengths = [n for shard in self.shards for n in shard.episode_lengths]
        self.episode_lengths = np.array(lengths, dtype=np.int64)
        """Frames per episode, in global episode order."""
        self._episode_shard = np.repeat(np.arange(len(self.shards)), [len(s.episode_lengths) for s in self.shards])
        self._episode_offset = np.concatenate(
            [np.cumsum((0, *shard.episode_lengths[:-1]), dtype=np.int64) for shard in self.shards]
        ) if self.shards else np.zeros(0, np.int64)  # fmt: skip
        self._episode_in_shard = np.concatenate(
            [np.arange(len(shard.episode_lengths)) for shard in self.shards]
        ) if self.shards else np.zeros(0, np.int64)  # fmt: skip
        self._cache: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()

    def __len__(self) -> int:
        """Total number of frames."""
        return int(self.episode_lengths.sum())

    @property
    def n_episodes(self) -> int:
        return len(self.episode_lengths)

    @property
    def config(self) -> dict[str, Any]:
        """The writer's configuration stored in the manifest."""
        return self.manifest["config"]

    def episode(self, index: int) -> Episode:
        """Episode ``index`` (global order) with all its per-frame and per-episode arrays."""
        self._check_episode(index)
        arrays = self._shard(int(self._episode_shard[index]))
        start, length = int(self._episode_offset[index]), int(self.episode_lengths[index])
        local = int(self._episode_in_shard[index])
        rows = slice(start, start + length)
        extras, episode_extras = {}, {}
        for name, array in arrays.items():
            if name.startswith(_EPISODE_PREFIX):
                if name != "episode_starts":
                    episode_extras[name] = array[local]
            elif name not in REQUIRED_ARRAYS:
                extras[name] = array[rows]
        return Episode(index=index, frames=arrays["frames"][rows], actions=arrays["actions"][rows],
                       rewards=arrays["rewards"][rows], terminated=arrays["terminated"][rows], extras=extras,
                       episode_extras=episode_extras)  # fmt: skip

    def episodes(self) -> Iterator[Episode]:
        """All episodes in order (shards are loaded one after the other)."""
        for index in range(self.n_episodes):
            yield self.episode(index)

    def window(self, episode: int, start: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """Frames ``[start, start + length]`` (``length + 1`` of them) of an episode and the ``length`` actions
        between them: ``frames[k + 1]`` is the result of ``actions[k]`` taken at ``frames[k]``."""
        data = self.window_data(episode, start, length)
        return data["frames"], data["actions"][:-1]

    def window_data(self, episode: int, start: int, length: int) -> dict[str, np.ndarray]:
        """Every per-frame array over the ``length + 1`` frames of a window (``actions`` included, so its last
        entry is the action after the window, or -1); ``rewards[1:]`` are the rewards of the window's actions."""
        self._check_window(episode, start, length)
        arrays = self._shard(int(self._episode_shard[episode]))
        first = int(self._episode_offset[episode]) + start
        rows = slice(first, first + length + 1)
        return {k: v[rows] for k, v in arrays.items() if not k.startswith(_EPISODE_PREFIX)}

    def n_windows(self, length: int) -> int:
        """Number of distinct windows of ``length`` actions (``length + 1`` frames)."""
        return int(np.maximum(self.episode_lengths - length, 0).sum())

    def sample_window_index(self, n: int, length: int, rng: np.random.Generator) -> np.ndarray:
        """``int64[n, 2]`` ``(episode, start)`` pairs drawn uniformly (with replacement) from all valid windows."""
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ConfigError(f"sample_window_index needs n >= 1 windows, got {n!r}")
        _check_length(length)
        counts = np.maximum(self.episode_lengths - length, 0)
        total = int(counts.sum())
        if total == 0:
            longest = int(self.episode_lengths.max()) if self.n_episodes else 0
            raise ConfigError(f"no episode has the {length + 1} frames a window of length {length} needs "
                              f"(longest: {longest}); use a shorter length")  # fmt: skip
        flat = rng.integers(0, total, size=n)
        ends = np.cumsum(counts)
        episode = np.searchsorted(ends, flat, side="right")
        start = flat - (ends[episode] - counts[episode])
        return np.stack([episode, start], axis=1).astype(np.int64)

    def sample_windows(self, n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` windows drawn uniformly from all valid windows: ``frames uint8[n, length + 1, H, W, 3]`` and
        ``actions int64[n, length]`` (see :meth:`window`)."""
        index = self.sample_window_index(n, length, rng)
        frames = np.empty((n, length + 1, *self.frame_shape), dtype=np.uint8)
        actions = np.empty((n, length), dtype=np.int64)
        for i in np.argsort(self._episode_shard[index[:, 0]], kind="stable"):  # one shard load per shard
            frames[i], actions[i] = self.window(int(index[i, 0]), int(index[i, 1]), length)
        return frames, actions

    def _check_episode(self, index: int) -> None:
        if not isinstance(index, (int, np.integer)) or not 0 <= index < self.n_episodes:
            raise ConfigError(f"episode {index!r} is out of range; the dataset has {self.n_episodes} episodes")

    def _check_window(self, episode: int, start: int, length: int) -> None:
        self._check_episode(episode)
        _check_length(length)
        n = int(self.episode_lengths[episode])
        if not isinstance(start, (int, np.integer)) or start < 0 or start + length >= n:
            raise ConfigError(f"window start={start!r} length={length} does not fit episode {episode} of {n} frames "
                              f"(need 0 <= start <= {n - 1 - length})")  # fmt: skip

    def _shard(self, index: int) -> dict[str, np.ndarray]:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        info = self.shards[index]
        path = self.root / info.file
        arrays = load_shard(path, sha256=info.sha256 if self.verify else None)
        starts = arrays["episode_starts"]
        lengths = tuple(int(n) for n in np.diff(np.append(starts, len(arrays["frames"]))))
        if lengths != info.episode_lengths:
            raise DataError(f"shard {str(path)!r} holds {len(lengths)} episodes of lengths {_preview(lengths)} but "
                            f"the manifest lists {len(info.episode_lengths)} of lengths "
                            f"{_preview(info.episode_lengths)}; the manifest and the shard disagree")  # fmt: skip
        if arrays["frames"].shape[1:] != info.frame_shape:
            raise DataError(f"shard {str(path)!r} has frames of shape {arrays['frames'].shape[1:]} but the manifest "
                            f"lists {info.frame_shape}")  # fmt: skip
        self._cache[index] = arrays
        if self.max_cached_shards is not None:
            while len(self._cache) > self.max_cached_shards:
                self._cache.popitem(last=False)
        return arrays


def _preview(values: Sequence[int], limit: int = 6) -> str:
    return str(list(values[:limit]))[:-1] + (", ...]" if len(values) > limit else "]")


def _check_length(length: int) -> None:
    if not isinstance(length, (int, np.integer)) or length < 1:
        raise ConfigError(f"window length must be a positive number of actions, got {length!r}")
