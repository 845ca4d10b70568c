"""Evaluation suites: versioned, hashed manifests of start frames + action scripts (+ optional ground truth).

A suite is a directory with two files:

* ``manifest.json`` — name, version, domain, frame size, protocol, item ids, and the sha256 of every data array;
* ``data.npz`` — ``context_frames uint8[N, C, H, W, 3]``, ``context_actions int64[N, C-1, *A]``,
  ``actions int64[N, F, *A]`` and, when known, ``ground_truth uint8[N, F, H, W, 3]``.

The suite's identity is the sha256 of its canonical manifest (``Suite.sha256``). Editing the data breaks the
per-array hashes; editing the manifest changes the suite hash, which registered suites pin. Either way loading fails
with an :class:`~worldmodels.errors.IntegrityError`, so no edited suite is silently scored.

**Protocol** (MineWorld's, the default): one real context frame, then ``F = 15`` actions; the model generates frames
``1..F``; generated frame ``k`` is conditioned on action ``k`` and the IDM's reading of frame ``k`` is scored
against action ``k``. For the MineWorld validation layout this is "real frame 0 + jsonl lines 1..15 → 15 frames
scored against lines 1..15". The ``offset`` option of the builders conditions on lines ``1+offset .. 15+offset``
instead, to study the frame/action alignment question (``vpt_idm.md`` §10.3).
"""

from __future__ import annotations

import copy
import itertools
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from worldmodels.actions import get_domain, minecraft
from worldmodels.data.resize import resize_linear_uint8
from worldmodels.errors import DataError, IntegrityError, MissingFileError
from worldmodels.hashing import sha256_array, sha256_json
from worldmodels.runtime.files import atomic_output

SUITE_FORMAT = "rlir-suite"
SUITE_SCHEMA_VERSION = 1
_ARRAYS = ("context_frames", "context_actions", "actions", "ground_truth", "score_actions")


@dataclass(frozen=True)
class SuiteItem:
    """One evaluation clip."""

    id: str
    context_frames: np.ndarray  # uint8[C, H, W, 3]
    context_actions: np.ndarray  # int64[C-1, *A]
    actions: np.ndarray  # int64[F, *A]
    ground_truth: np.ndarray | None  # uint8[F, H, W, 3]
    score_actions: np.ndarray | None = None
    """Minecraft only: the recorded env actions ``float64[F, 25]`` (23 buttons in ``BUTTON_KEYS`` order, then camera
    pitch and yaw in degrees) that the official metric scores against. The compact ``actions`` the model is
    conditioned on lose information the metric uses (camera degrees below a MineWorld bin, use + attack together)."""


@dataclass(frozen=True)
class Suite:
    """A loaded, verified suite. Index it for :class:`SuiteItem`s; ``len(suite)`` items."""

    manifest: dict[str, Any]
    arrays: dict[str, np.ndarray]
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def version(self) -> int:
        return self.manifest["version"]

    @property
    def domain(self) -> str:
        return self.manifest["domain"]

    @property
    def frame_size(self) -> tuple[int, int]:
        return tuple(self.manifest["frame_size"])

    @property
    def n_frames(self) -> int:
        """Generated frames per item (``F``)."""
        return self.manifest["n_frames"]

    @property
    def item_ids(self) -> list[str]:
        return list(self.manifest["items"])

    @property
    def has_ground_truth(self) -> bool:
        return "ground_truth" in self.arrays

    @property
    def sha256(self) -> str:
        """sha256 of the canonical manifest: the suite's identity in result bundles and the leaderboard."""
        return sha256_json(self.manifest)

    def __len__(self) -> int:
        return len(self.manifest["items"])

    def __getitem__(self, index: int) -> SuiteItem:
        a = self.arrays
        return SuiteItem(
            id=self.manifest["items"][index],
            context_frames=a["context_frames"][index],
            context_actions=a["context_actions"][index],
            actions=a["actions"][index],
            ground_truth=a["ground_truth"][index] if "ground_truth" in a else None,
            score_actions=a["score_actions"][index] if "score_actions" in a else None,
        )

    def __iter__(self) -> Iterator[SuiteItem]:
        return (self[i] for i in range(len(self)))

    def index_of(self, item_id: str) -> int:
        try:
            return self.manifest["items"].index(item_id)
        except ValueError:
            raise DataError(f"suite {self.name!r} has no item {item_id!r}") from None


def make_suite(
    name: str,
    version: int,
    domain: str,
    items: Sequence[SuiteItem],
    *,
    description: str = "",
    protocol: dict[str, Any] | None = None,
    fps: float | None = None,
) -> Suite:
    """Assemble a suite from items (validates shapes and actions; computes the manifest with array hashes)."""
    if not items:
        raise DataError(f"suite {name!r} needs at least one item")
    action_domain = get_domain(domain)
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise DataError(f"suite {name!r} has duplicate item ids")
    for field in ("ground_truth", "score_actions"):
        present = [getattr(item, field) is not None for item in items]
        if any(present) and not all(present):
            raise DataError(f"suite {name!r}: either every item has {field} or none has")
    try:
        arrays = {
            "context_frames": np.stack([item.context_frames for item in items]),
            "context_actions": np.stack([action_domain.validate(item.context_actions) for item in items]),
            "actions": np.stack([action_domain.validate(item.actions) for item in items]),
        }
        if items[0].ground_truth is not None:
            arrays["ground_truth"] = np.stack([item.ground_truth for item in items])
        if items[0].score_actions is not None:
            arrays["score_actions"] = np.stack([item.score_actions for item in items]).astype(np.float64)
    except ValueError as error:
        raise DataError(f"suite {name!r}: items disagree in shape ({error})") from None
    frames = arrays["context_frames"]
    if frames.dtype != np.uint8 or frames.ndim != 5 or frames.shape[-1] != 3:
        raise DataError(f"context frames must be uint8[N, C, H, W, 3], got {frames.dtype}{list(frames.shape)}")
    manifest = {
        "format": SUITE_FORMAT,
        "schema_version": SUITE_SCHEMA_VERSION,
        "name": name,
        "version": int(version),
        "domain": domain,
        "description": description,
        "frame_size": [int(frames.shape[2]), int(frames.shape[3])],
        "fps": fps,
        "context_frames": int(frames.shape[1]),
        "n_frames": int(arrays["actions"].shape[1]),
        "protocol": protocol or {"offset": 0},
        "items": ids,
        "arrays": {key: sha256_array(value) for key, value in arrays.items()},
    }
    suite = Suite(manifest=manifest, arrays=arrays)
    _check_consistent(suite, source=name)
    return suite


def first_items(suite: Suite, n: int) -> Suite:
    """The suite cut to its first ``n`` items, for a quick look (``rlir eval --items N``). It is another suite: its
    name says so and its manifest records what it was cut from, so its bundles never rank with the full suite's."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DataError(f"--items must be a positive number of items, got {n!r}")
    if n >= len(suite):
        return suite
    protocol = dict(suite.manifest.get("protocol") or {}, first_items_of={"name": suite.name, "sha256": suite.sha256})
    return make_suite(f"{suite.name}-first{n}", suite.version, suite.domain, [suite[i] for i in range(n)],
                      description=f"the first {n} items of {suite.name}", protocol=protocol,
                      fps=suite.manifest.get("fps"))  # fmt: skip


def save_suite(suite: Suite, directory: str | Path) -> Path:
    """Write ``manifest.json`` and ``data.npz`` atomically into ``directory``; returns it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _atomic_write(directory / "data.npz", lambda f: np.savez_compressed(f, **suite.arrays))
    text = json.dumps(suite.manifest, indent=1, sort_keys=True) + "\n"
    _atomic_write(directory / "manifest.json", lambda f: f.write(text.encode()))
    return directory


def load_suite(name_or_path: str | Path, *, expected_sha256: str | None = None) -> Suite:
    """Load and verify a suite by registered name (e.g. ``"crafter-af-v1"``) or directory path.

    Raises:
        MissingFileError: the directory or one of its files is missing.
        IntegrityError: an array or (for registered suites) the manifest does not match its pinned sha256.
        DataError: malformed manifest or arrays, or an unknown suite name.
    """
    text = str(name_or_path)
    if text in REGISTERED_SUITES:
        directory, pinned = REGISTERED_SUITES[text]
        expected_sha256 = expected_sha256 or pinned
    elif Path(text).exists():
        directory = Path(text)
    else:
        raise DataError(
            f"unknown suite {text!r}: not a registered suite ({', '.join(sorted(REGISTERED_SUITES)) or 'none'}) "
            "and not an existing suite directory"
        )
    manifest_path, data_path = directory / "manifest.json", directory / "data.npz"
    for path in (manifest_path, data_path):
        if not path.is_file():
            raise MissingFileError(f"suite file {path} is missing; a suite directory holds manifest.json and data.npz")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(f"{manifest_path}: not valid JSON ({error.msg}, line {error.lineno})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != SUITE_FORMAT:
        raise DataError(f"{manifest_path}: not an rlir suite manifest (missing \"format\": \"{SUITE_FORMAT}\")")
    if manifest.get("schema_version") != SUITE_SCHEMA_VERSION:
        raise DataError(f"{manifest_path}: schema_version {manifest.get('schema_version')!r} is not supported")
    suite = Suite(manifest=manifest, arrays=_load_arrays(data_path, manifest), path=directory)
    if expected_sha256 is not None and suite.sha256 != expected_sha256:
        raise IntegrityError(
            f"suite {suite.name!r} at {directory} has manifest sha256 {suite.sha256}, expected {expected_sha256}: "
            "the suite was edited; restore the original files (or give the edited suite a new name and version)"
        )
    _check_consistent(suite, source=str(directory))
    return suite


def _load_arrays(data_path: Path, manifest: dict[str, Any]) -> dict[str, np.ndarray]:
    try:
        with np.load(data_path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"{data_path}: cannot be read as an npz archive ({error})") from None
    expected = manifest.get("arrays", {})
    if set(arrays) != set(expected):
        raise DataError(f"{data_path}: holds arrays {sorted(arrays)}, manifest lists {sorted(expected)}")
    for key, value in arrays.items():
        if sha256_array(value) != expected[key]:
            raise IntegrityError(
                f"{data_path}: array {key!r} does not match its sha256 in manifest.json: the suite data was edited "
                "or corrupted; restore the original data.npz"
            )
    return arrays


def _check_consistent(suite: Suite, *, source: str) -> None:
    a, m = suite.arrays, suite.manifest
    n = len(m["items"])
    domain = get_domain(m["domain"])
    h, w = m["frame_size"]
    expect = {
        "context_frames": (n, m["context_frames"], h, w, 3),
        "context_actions": (n, m["context_frames"] - 1, *domain.compact_shape),
        "actions": (n, m["n_frames"], *domain.compact_shape),
        "ground_truth": (n, m["n_frames"], h, w, 3),
        "score_actions": (n, m["n_frames"], 25),
    }
    for key in _ARRAYS:
        if key in a and tuple(a[key].shape) != expect[key]:
            raise DataError(f"suite {source}: array {key!r} has shape {list(a[key].shape)}, expected {list(expect[key])}")
    for key in ("context_frames", "ground_truth"):
        if key in a and a[key].dtype != np.uint8:
            raise DataError(f"suite {source}: {key} must be uint8, got {a[key].dtype}")


def _atomic_write(path: Path, write) -> None:
    with atomic_output(path) as tmp, open(tmp, "wb") as f:  # a plain new file: umask mode, unlike mkstemp's 0600
        write(f)
        f.flush()
        os.fsync(f.fileno())


def bundled_suite_dir(name: str) -> Path:
    """Directory of a suite shipped inside the package (``evaluation/suite_data/<name>``)."""
    return Path(str(resources.files("evaluation") / "suite_data" / name))


REGISTERED_SUITES: dict[str, tuple[Path, str]] = {}
"""Registered suite name -> (directory, pinned manifest sha256). Filled by :func:`register_suite`."""


def register_suite(name: str, directory: Path, sha256: str) -> None:
    REGISTERED_SUITES[name] = (directory, sha256)


def suite_from_mineworld_validation(
    root: str | Path,
    *,
    name: str = "mineworld-val",
    version: int = 1,
    offset: int = 0,
    n_frames: int = 15,
    limit: int | None = 500,
) -> Suite:
    """Build a suite from the MineWorld validation layout (``<prefix>_<N>.mp4`` + ``.jsonl``, 16 frames of 384x224).

    Official protocol (``offset=0``): context = real frame 0; actions = jsonl lines ``1..n_frames``; ground truth =
    frames ``1..n_frames``. ``offset=k`` conditions on lines ``1+k .. n_frames+k`` instead (ground truth unchanged), to
    study how generated frames align with action lines. Clips are taken in the official order (by N), at most
    ``limit`` (the official scripts cap at 500).
    """
    from worldmodels.data.clips import MineWorldClips

    clips = MineWorldClips(root, frames=None, size=(224, 384), limit=limit)
    first, last = 1 + offset, n_frames + offset
    items = []
    for clip in clips:
        if first < 0 or last >= len(clip.actions) or n_frames >= len(clip.frames):
            raise DataError(
                f"clip {clip.name} has {len(clip.frames)} frames; offset={offset} with n_frames={n_frames} needs "
                f"action lines {first}..{last} and frames 0..{n_frames}"
            )
        items.append(
            SuiteItem(
                id=clip.name,
                context_frames=clip.frames[:1],
                context_actions=np.zeros((0, 9), dtype=np.int64),
                actions=minecraft.to_compact(clip.actions[first : last + 1]),
                ground_truth=clip.frames[1 : n_frames + 1],
                score_actions=env_actions_to_array(clip.actions[first : last + 1]),
            )
        )
    protocol = {
        "offset": offset,
        "source": "mineworld-validation",
        "alignment": f"generated frame k (1..{n_frames}) is conditioned on and scored against jsonl line k+{offset}",
    }
    return make_suite(name, version, "minecraft", items, protocol=protocol, fps=20.0,
                      description=f"MineWorld validation clips from {Path(root).name}")  # fmt: skip


def env_actions_to_array(actions: Sequence[dict[str, Any]]) -> np.ndarray:
    """MineRL env actions -> ``float64[F, 25]`` (buttons in ``BUTTON_KEYS`` order, then camera pitch, yaw)."""
    rows = [minecraft.validate_env_action(a) for a in actions]
    return np.array([[r[k] for k in minecraft.BUTTON_KEYS] + list(r["camera"]) for r in rows], dtype=np.float64)


def array_to_env_actions(array: np.ndarray) -> list[dict[str, Any]]:
    """Inverse of :func:`env_actions_to_array`: ``float64[F, 25]`` -> MineRL env action dicts."""
    keys = minecraft.BUTTON_KEYS
    return [{k: int(row[i]) for i, k in enumerate(keys)} | {"camera": np.array(row[-2:])} for row in np.asarray(array)]


def suite_from_vpt_recordings(
    source: str | Path,
    *,
    name: str = "vpt-af",
    version: int = 1,
    n_frames: int = 15,
    frame_size: tuple[int, int] = (224, 384),
    max_items: int | None = 500,
    skip_gui: bool = True,
    skip_null: bool = True,
) -> Suite:
    """Build a suite from VPT contractor recordings (640x360 mp4 + raw jsonl), MineWorld-style.

    Each recording is cut into consecutive clips of ``n_frames + 1`` frames, squash-resized to ``frame_size`` with
    OpenCV's INTER_LINEAR arithmetic (as MineWorld's demo does). Action line ``k`` of a clip is taken at frame ``k``;
    the model is conditioned on lines ``0..n_frames-1`` and generates frames ``1..n_frames`` (frame ``k`` follows line
    ``k-1``: the VPT convention). Clips with a GUI open (``isGuiOpen``) or a null action are skipped by default, as
    MineWorld's training data filtering does.
    """
    import torch

    from worldmodels.data.clips import VPTDataset

    items: list[SuiteItem] = []
    for chunk in VPTDataset(source).iter_chunks(n_frames + 1, drop_last=True):
        if skip_gui and any(line.get("isGuiOpen") for line in chunk.raw_lines):
            continue
        if skip_null and any(chunk.null[:n_frames]):
            continue
        frames = resize_linear_uint8(torch.from_numpy(np.ascontiguousarray(chunk.frames)), *frame_size).numpy()
        actions = chunk.env_actions[:n_frames]
        items.append(
            SuiteItem(
                id=f"{chunk.recording}-{chunk.start:06d}",
                context_frames=frames[:1],
                context_actions=np.zeros((0, 9), dtype=np.int64),
                actions=minecraft.to_compact(actions),
                ground_truth=frames[1:],
                score_actions=env_actions_to_array(actions),
            )
        )
        if max_items is not None and len(items) >= max_items:
            break
    protocol = {"offset": -1, "source": "vpt-recordings",
                "alignment": "generated frame k (1..n) is conditioned on and scored against action line k-1"}  # fmt: skip
    return make_suite(name, version, "minecraft", items, protocol=protocol, fps=20.0,
                      description=f"VPT contractor clips from {Path(source).name}")  # fmt: skip


@dataclass
class CrafterClip:
    """One clip drawn by :func:`crafter_clips`: the context frame, the actions and the real frames they lead to, and,
    when asked for, the game itself at the context frame (so the clip can be played again from its start)."""

    context_frame: np.ndarray
    actions: np.ndarray
    frames: np.ndarray
    scene: Any = None


def crafter_clips(
    n_items: int, *, seed: int, n_frames: int, size: int, max_warmup: int, policy: str, keep_scenes: bool = False
) -> Iterator[CrafterClip]:
    """The real-game clips of :func:`suite_from_crafter`, in order: clip ``i`` resets Crafter from a seed derived
    from ``(seed, i, attempt)``, plays ``0..max_warmup`` warm-up steps of ``policy`` and records one context frame and
    ``n_frames`` steps; a clip in which the player dies is drawn again with the next attempt. ``keep_scenes`` adds a
    copy of the game at each context frame (``CrafterClip.scene``)."""
    from rlir_env.crafter.env import CrafterEnv
    from rlir_env.crafter.policies import make_policy

    env = CrafterEnv(size=size)
    for index in range(n_items):
        for attempt in itertools.count():
            rng = np.random.default_rng([seed, index, attempt])
            obs, info = env.reset(seed=int(rng.integers(2**31 - 1)))
            agent = make_policy(policy)
            agent.reset(rng)
            total = int(rng.integers(max_warmup + 1)) + n_frames
            frames, actions, scene, died = [obs], [], None, False
            for step in range(total):
                if keep_scenes and step == total - n_frames:
                    scene = copy.deepcopy(env)
                action = agent.act(obs, info)
                obs, _, terminated, truncated, info = env.step(action)
                frames, actions = (frames + [obs])[-(n_frames + 1) :], (actions + [action])[-n_frames:]
                if terminated or truncated:
                    died = True
                    break
            if not died:
                yield CrafterClip(frames[0], np.array(actions, dtype=np.int64), np.stack(frames[1:]), scene)
                break


def suite_from_crafter(
    *,
    name: str = "crafter-af-v1",
    version: int = 1,
    n_items: int = 256,
    seed: int = 33,
    n_frames: int = 15,
    size: int = 72,
    max_warmup: int = 120,
    policy: str = "mixture",
) -> Suite:
    """Clips from the real game: item ``i`` resets Crafter from a seed derived from ``(seed, i)``, plays a random
    number (``0..max_warmup``) of warm-up steps with the recording ``policy`` so scenes are not all at spawn, then
    records one context frame, ``n_frames`` actions of the same policy and the ``n_frames`` real frames they lead
    to. A clip in which the player dies is redrawn from the next seed. Deterministic from ``seed``
    (:func:`crafter_clips` draws them).
    """
    clips = crafter_clips(n_items, seed=seed, n_frames=n_frames, size=size, max_warmup=max_warmup, policy=policy)
    items = [
        SuiteItem(
            id=f"{name}-{index:04d}",
            context_frames=clip.context_frame[None],
            context_actions=np.zeros((0,), dtype=np.int64),
            actions=clip.actions,
            ground_truth=clip.frames,
        )
        for index, clip in enumerate(clips)
    ]
    protocol = {"offset": 0, "source": "crafter", "seed": seed, "policy": policy, "max_warmup": max_warmup,
                "alignment": "generated frame k (1..n) is conditioned on action k and shows its result"}  # fmt: skip
    return make_suite(name, version, "crafter", items, protocol=protocol, fps=5.0,
                      description=f"{n_items} clips of real Crafter ({size}x{size}), 1 context frame + {n_frames} actions")  # fmt: skip


CRAFTER_SUITE = "crafter-af-v1"
CRAFTER_SUITE_SHA256 = "1ce5ac105c796d5e2e7ca9afb6b87538a2e1fb16069d55b68544e1c08188920f"
"""Manifest sha256 of the bundled ``crafter-af-v1``: ``rlir suite build-crafter DIR --items 256 --seed 33``
(``suite_from_crafter(n_items=256, seed=33)``) rebuilds exactly this suite."""

register_suite(CRAFTER_SUITE, bundled_suite_dir(CRAFTER_SUITE), CRAFTER_SUITE_SHA256)
