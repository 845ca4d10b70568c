"""Clip datasets: MineWorld's validation layout and VPT contractor recordings.

**MineWorld validation layout** (``mineworld.md`` §8): a folder of ``<prefix>_<N>.mp4`` + ``<prefix>_<N>.jsonl``
pairs; each mp4 holds 16 frames of 384x224 (W x H), each jsonl one MineRL env action per frame. The official
``inference.py`` orders clips by ``int(name.split('_')[1].split('.')[0])`` (so ``clip_2`` comes before ``clip_10``);
:func:`mineworld_clip_number` reproduces that key and rejects names it cannot parse.

**VPT recordings** (``vpt_idm.md`` §7.1): ``<name>.mp4`` (640x360, 20 fps) + ``<name>.jsonl`` with one raw
contractor line (``keyboard``/``mouse`` fields) per frame. :class:`VPTRecording` streams them in chunks with env
actions from :func:`worldmodels.actions.minecraft.from_vpt_jsonl`; :class:`VPTDataset` indexes a folder or an
official ``{basedir, relpaths}`` index JSON.

Both read frames as ``uint8[T, H, W, 3]`` RGB and parse jsonl with ``json.loads`` only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from worldmodels.actions.minecraft import from_vpt_jsonl, is_null_vpt_line, validate_env_action
from worldmodels.data.jsonl import count_jsonl_lines, iter_jsonl, write_jsonl
from worldmodels.data.video import iter_frames, probe_video, read_video, write_video
from worldmodels.errors import ActionError, ConfigError, DataError, FrameError, MissingFileError

__all__ = [
    "MINEWORLD_FPS",
    "MINEWORLD_FRAMES",
    "MINEWORLD_SIZE",
    "VPT_FPS",
    "VPT_SIZE",
    "Clip",
    "MineWorldClips",
    "VPTChunk",
    "VPTDataset",
    "VPTRecording",
    "mineworld_clip_number",
    "write_mineworld_clip",
    "write_vpt_recording",
]

MINEWORLD_FRAMES = 16
"""Frames per MineWorld validation clip (1 context frame + 15 generated in the official protocol)."""
MINEWORLD_SIZE = (224, 384)
"""MineWorld frame size ``(H, W)``; its VQ-VAE tokenizes without resizing."""
MINEWORLD_FPS = 6
"""Frame rate MineWorld's ``inference.py`` writes videos at."""
VPT_SIZE = (360, 640)
"""VPT contractor recordings: 640x360 (W x H)."""
VPT_FPS = 20
"""VPT contractor recordings run at 20 Hz (MineRL ``MS_PER_STEP = 50``)."""


@dataclass(frozen=True)
class Clip:
    """One MineWorld clip.

    Attributes:
        name: the file stem, e.g. ``"clip_7"``.
        frames: ``uint8[T, H, W, 3]`` RGB.
        actions: ``T`` env-action dicts, line *t* of the jsonl belonging to frame *t* (validated dicts have int
            buttons and a ``float64[2]`` camera).
    """

    name: str
    frames: np.ndarray
    actions: list[dict[str, Any]]


def mineworld_clip_number(filename: str) -> int:
    """The sort key MineWorld's ``inference.py`` uses: ``int(name.split('_')[1].split('.')[0])``.

    ``clip_10.mp4`` -> 10. Raises DataError (instead of the official ``IndexError``/``ValueError``) for names the
    official key cannot parse, such as ``clip10.mp4`` (no ``_``) or ``my_clip_3.mp4`` (the prefix holds a ``_``).
    """
    try:
        return int(filename.split("_")[1].split(".")[0])
    except (IndexError, ValueError):
        raise DataError(
            f"clip file {filename!r} does not follow MineWorld's '<prefix>_<N>.mp4' naming (the official sort key is "
            "int(name.split('_')[1].split('.')[0])); rename it like 'clip_7.mp4' with no '_' inside the prefix"
        ) from None


def _wrap_action_error(path: Path, lineno: int, error: ActionError) -> DataError:
    return DataError(f"{path}: line {lineno}: {error}")


class MineWorldClips(Sequence[Clip]):
    """MineWorld's validation clips in one folder, in the official order, loaded one clip at a time.

    Args:
        root: the folder holding ``<prefix>_<N>.mp4`` + ``<prefix>_<N>.jsonl`` pairs (``validation/validation``).
        frames: the exact frames (and jsonl lines) per clip; ``None`` accepts any count, as long as the video and
            the jsonl agree.
        size: the ``(H, W)`` every video must have; ``None`` skips the check.
        validate: check each jsonl line with ``validate_env_action`` (and return the normalised dicts); with
            ``False`` the parsed JSON objects are returned as they are.
        limit: keep only the first ``limit`` clips (the official scripts cap at 500).

    Raises:
        MissingFileError: ``root`` is not a folder, holds no ``.mp4``, or a clip misses its partner file.
        DataError: a clip name cannot be parsed (see :func:`mineworld_clip_number`).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        frames: int | None = MINEWORLD_FRAMES,
        size: tuple[int, int] | None = MINEWORLD_SIZE,
        validate: bool = True,
        limit: int | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise MissingFileError(
                f"MineWorld clip folder {str(self.root)!r} does not exist; unzip validation.zip there"
            )
        if frames is not None and frames < 1:
            raise ConfigError(f"frames must be a positive count or None, got {frames!r}")
        if limit is not None and limit < 0:
            raise ConfigError(f"limit must be >= 0 or None, got {limit!r}")
        self.frames = frames
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.validate = validate
        files = [entry.name for entry in os.scandir(self.root) if entry.is_file()]
        videos = {name[: -len(".mp4")] for name in files if name.endswith(".mp4")}
        actions = {name[: -len(".jsonl")] for name in files if name.endswith(".jsonl")}
        if not videos and not actions:
            raise MissingFileError(f"{self.root} holds no '<prefix>_<N>.mp4' clips; point root at the unzipped clips")
        _check_partners(self.root, videos, actions)
        # The official key first, the name to break ties (os.listdir order is arbitrary).
        stems = sorted(videos, key=lambda stem: (mineworld_clip_number(stem + ".mp4"), stem))
        self._stems: list[str] = stems if limit is None else stems[:limit]

    @property
    def names(self) -> list[str]:
        """Clip names (file stems) in the official order."""
        return list(self._stems)

    def paths(self, index: int) -> tuple[Path, Path]:
        """``(mp4, jsonl)`` paths of clip ``index``."""
        stem = self._stems[index]
        return self.root / f"{stem}.mp4", self.root / f"{stem}.jsonl"

    def __len__(self) -> int:
        return len(self._stems)

    def __getitem__(self, index: int) -> Clip:  # type: ignore[override]
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"MineWorldClips indices must be integers, got {type(index).__name__}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"clip index {index} out of range for {len(self)} clips")
        video_path, jsonl_path = self.paths(int(index))
        actions = self._read_actions(jsonl_path)
        if self.frames is not None and len(actions) != self.frames:
            raise DataError(
                f"{jsonl_path}: has {len(actions)} lines, expected {self.frames} (one action per frame of "
                f"{video_path.name})"
            )
        frames = read_video(video_path, expected_frames=self.frames, expected_size=self.size)
        if len(frames) != len(actions):
            raise DataError(
                f"{video_path.name} has {len(frames)} frames but {jsonl_path.name} has {len(actions)} lines; a clip "
                "needs exactly one action line per frame"
            )
        return Clip(name=self._stems[int(index)], frames=frames, actions=actions)

    def __iter__(self) -> Iterator[Clip]:
        """Stream the clips in order, decoding one at a time."""
        for index in range(len(self)):
            yield self[index]

    def _read_actions(self, path: Path) -> list[dict[str, Any]]:
        actions = []
        for lineno, line in enumerate(iter_jsonl(path), start=1):
            if self.validate:
                try:
                    line = validate_env_action(line)
                except ActionError as error:
                    raise _wrap_action_error(path, lineno, error) from error
            actions.append(line)
        return actions


def _check_partners(root: Path, videos: set[str], actions: set[str]) -> None:
    if lonely := sorted(videos - actions):
        raise MissingFileError(
            f"{root}: {len(lonely)} video(s) without a jsonl partner, e.g. {lonely[0]}.mp4 needs {lonely[0]}.jsonl; "
            "add the action files or remove the videos"
        )
    if lonely := sorted(actions - videos):
        raise MissingFileError(
            f"{root}: {len(lonely)} jsonl file(s) without a video partner, e.g. {lonely[0]}.jsonl needs "
            f"{lonely[0]}.mp4; add the videos or remove the action files"
        )


def _check_clip_frames(frames: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    array = np.asarray(frames)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3 or len(array) == 0:
        raise FrameError(f"clip frames must be uint8[T, H, W, 3] with T >= 1, got {array.dtype}{list(array.shape)}")
    if size is not None and array.shape[1:3] != tuple(size):
        h, w = array.shape[1:3]
        raise FrameError(
            f"clip frames are {w}x{h} (W x H), expected {size[1]}x{size[0]} (W x H); resize to "
            f"{size[1]}x{size[0]} (W x H) first"
        )
    return array


def write_mineworld_clip(
    root: str | os.PathLike,
    name: str,
    frames: np.ndarray,
    actions: Sequence[Mapping[str, Any]],
    *,
    codec: str = "h264",
    fps: float = MINEWORLD_FPS,
    size: tuple[int, int] | None = MINEWORLD_SIZE,
) -> tuple[Path, Path]:
    """Write one clip as ``root/<name>.mp4`` + ``root/<name>.jsonl`` (each file atomically).

    Args:
        root: output folder (created if missing).
        name: ``<prefix>_<N>`` without extension; must parse with :func:`mineworld_clip_number`.
        frames: ``uint8[T, H, W, 3]`` RGB.
        actions: ``T`` MineRL env-action dicts (all 24 keys; validated).
        codec: see :data:`worldmodels.data.video.CODECS`; ``"h264-lossless"`` for a bit-exact clip.
        fps: frame rate stored in the mp4.
        size: required ``(H, W)``; ``None`` allows any size.

    Returns:
        ``(mp4_path, jsonl_path)``.

    Raises:
        DataError: unparsable ``name``. FrameError: bad frames. ActionError: a bad action (names its index).
    """
    if Path(name).name != name or name.endswith((".mp4", ".jsonl")):
        raise DataError(f"clip name {name!r} must be a bare '<prefix>_<N>' without folder or extension")
    mineworld_clip_number(name + ".mp4")
    array = _check_clip_frames(frames, size)
    if len(actions) != len(array):
        raise DataError(f"clip {name!r}: {len(array)} frames but {len(actions)} actions; give one action per frame")
    rows = []
    for index, action in enumerate(actions):
        try:
            rows.append(validate_env_action(action))
        except ActionError as error:
            raise ActionError(f"clip {name!r}, action {index}: {error}") from error
    root = Path(root)
    video_path, jsonl_path = root / f"{name}.mp4", root / f"{name}.jsonl"
    write_video(video_path, array, fps, codec=codec)
    write_jsonl(jsonl_path, rows)
    return video_path, jsonl_path


# --- VPT contractor recordings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class VPTChunk:
    """Consecutive frames of one VPT recording with their jsonl lines.

    Attributes:
        recording: the recording's name (mp4 stem).
        start: index of the first frame within the recording.
        frames: ``uint8[n, H, W, 3]`` RGB.
        raw_lines: the ``n`` parsed contractor lines, untouched.
        env_actions: the ``n`` MineRL env actions (``from_vpt_jsonl``).
        null: ``bool[n]``, VPT's null-action flag per line (``is_null_vpt_line``).
    """

    recording: str
    start: int
    frames: np.ndarray
    raw_lines: list[dict[str, Any]]
    env_actions: list[dict[str, Any]]
    null: np.ndarray

    def __len__(self) -> int:
        return len(self.frames)


class VPTRecording:
    """One VPT contractor recording: ``<name>.mp4`` with ``<name>.jsonl`` next to it.

    Args:
        mp4_path: the video; the jsonl is the same path with suffix ``.jsonl``.
        legacy_int_camera: passed to ``from_vpt_jsonl``: truncate the camera to whole degrees as the reference code
            does (off by default).
        expected_size: the ``(H, W)`` the video must have (640x360 for contractor data); ``None`` skips the check.
        size: ``(H, W)`` to resize frames to while decoding (swscale bilinear); ``None`` keeps 640x360.

    Raises:
        MissingFileError: the mp4 or its jsonl partner is missing.
    """

    def __init__(
        self,
        mp4_path: str | os.PathLike,
        *,
        legacy_int_camera: bool = False,
        expected_size: tuple[int, int] | None = VPT_SIZE,
        size: tuple[int, int] | None = None,
    ) -> None:
        self.mp4_path = Path(mp4_path)
        self.jsonl_path = self.mp4_path.with_suffix(".jsonl")
        if self.mp4_path.suffix != ".mp4":
            raise ConfigError(f"VPTRecording needs the .mp4 path, got {str(self.mp4_path)!r}")
        if not self.mp4_path.is_file():
            hint = f" (its jsonl {self.jsonl_path.name} exists)" if self.jsonl_path.is_file() else ""
            raise MissingFileError(f"VPT video {str(self.mp4_path)!r} does not exist{hint}; download or restore it")
        if not self.jsonl_path.is_file():
            raise MissingFileError(
                f"VPT video {self.mp4_path} has no jsonl partner {self.jsonl_path.name}; put the recording's "
                ".jsonl next to the .mp4"
            )
        self.legacy_int_camera = legacy_int_camera
        self.expected_size = expected_size
        self.size = size

    @property
    def name(self) -> str:
        """The recording's name (mp4 stem)."""
        return self.mp4_path.stem

    def __repr__(self) -> str:
        return f"VPTRecording({str(self.mp4_path)!r})"

    @cached_property
    def n_lines(self) -> int:
        """Number of jsonl lines (cheap: lines are counted, not parsed)."""
        return count_jsonl_lines(self.jsonl_path)

    def __len__(self) -> int:
        """Number of steps (= jsonl lines; :meth:`check` verifies the video agrees)."""
        return self.n_lines

    def check(self) -> None:
        """Verify the video's size and that its frame count equals the jsonl line count (no full decode).

        Raises:
            DataError: wrong frame size (with the resize to do) or frame count != line count (with both counts).
        """
        info = probe_video(self.mp4_path)
        if self.expected_size is not None and (info.height, info.width) != tuple(self.expected_size):
            h, w = self.expected_size
            raise DataError(
                f"{self.mp4_path}: frames are {info.width}x{info.height} (W x H), expected {w}x{h} (W x H) for VPT "
                f"contractor data; resize to {w}x{h} (W x H) first or pass expected_size=None"
            )
        if info.frames != self.n_lines:
            raise DataError(
                f"{self.mp4_path.name} has {info.frames} frames but {self.jsonl_path.name} has {self.n_lines} lines; "
                "a VPT recording needs exactly one jsonl line per frame (truncated video or jsonl?)"
            )

    def iter_chunks(self, n_frames: int, *, drop_last: bool = False) -> Iterator[VPTChunk]:
        """Stream the recording as chunks of ``n_frames`` consecutive steps (the last one may be shorter).

        Runs :meth:`check` first, so mismatched counts fail before anything is yielded; a video that decodes to
        fewer frames than its header claims still fails when the stream runs dry.

        Raises:
            DataError: see :meth:`check`; a malformed line or one ``from_vpt_jsonl`` rejects (file and line number);
                a decode failure or a truncated stream (both counts).
        """
        if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) or n_frames < 1:
            raise ConfigError(f"n_frames must be a positive integer, got {n_frames!r}")
        self.check()
        frames = iter_frames(self.mp4_path, size=self.size, expected_size=self.expected_size)
        buffer: list[tuple[np.ndarray, dict[str, Any], dict[str, Any], bool]] = []
        start = 0
        lineno = 0
        for lineno, line in enumerate(iter_jsonl(self.jsonl_path), start=1):
            try:
                action = from_vpt_jsonl(line, legacy_int_camera=self.legacy_int_camera)
                null = is_null_vpt_line(line)
            except ActionError as error:
                raise _wrap_action_error(self.jsonl_path, lineno, error) from error
            frame = next(frames, None)
            if frame is None:
                raise DataError(
                    f"{self.mp4_path}: truncated video: decoded {lineno - 1} frames but {self.jsonl_path.name} has "
                    f"{self.n_lines} lines; re-download or re-encode the video"
                )
            buffer.append((frame, line, action, null))
            if len(buffer) == n_frames:
                yield self._chunk(start, buffer)
                start += len(buffer)
                buffer = []
        if next(frames, None) is not None:
            raise DataError(
                f"{self.mp4_path.name} has more frames than the {lineno} lines of {self.jsonl_path.name}; a VPT "
                "recording needs exactly one jsonl line per frame"
            )
        if buffer and not drop_last:
            yield self._chunk(start, buffer)

    def _chunk(self, start: int, buffer: list[tuple[np.ndarray, dict[str, Any], dict[str, Any], bool]]) -> VPTChunk:
        return VPTChunk(
            recording=self.name,
            start=start,
            frames=np.stack([item[0] for item in buffer]),
            raw_lines=[item[1] for item in buffer],
            env_actions=[item[2] for item in buffer],
            null=np.array([item[3] for item in buffer], dtype=bool),
        )


def _is_url(text: str) -> bool:
    return "://" in text


class VPTDataset(Sequence[VPTRecording]):
    """VPT contractor recordings from a folder or an official index JSON ``{"basedir": ..., "relpaths": [...]}``.

    A folder is searched recursively for ``*.mp4`` (sorted by relative path); every mp4 needs its jsonl and every
    jsonl its mp4. For an index, each relpath (``data/6.13/<id>.mp4``; ``.mp4`` is appended if missing) is looked up
    under the local base folder both as is and flattened to its file name (VPT's download script saves files flat
    in its output folder).

    Args:
        source: a folder, or the index ``.json``.
        basedir: the local folder the index's relpaths live under; defaults to the index's ``basedir`` when that is
            a local path (relative to the index file), and must be given when it is a URL.
        legacy_int_camera, expected_size, size: passed to every :class:`VPTRecording`.

    Raises:
        MissingFileError: missing folder/index, a recording listed but absent, or a missing partner file.
        DataError: a malformed index, or an empty dataset.
        ConfigError: the index's basedir is a URL and no local ``basedir`` was given.
    """

    def __init__(
        self,
        source: str | os.PathLike,
        *,
        basedir: str | os.PathLike | None = None,
        legacy_int_camera: bool = False,
        expected_size: tuple[int, int] | None = VPT_SIZE,
        size: tuple[int, int] | None = None,
    ) -> None:
        self.source = Path(source)
        self._options: dict[str, Any] = {
            "legacy_int_camera": legacy_int_camera,
            "expected_size": expected_size,
            "size": size,
        }
        if self.source.is_dir():
            paths = self._scan_folder(self.source)
        elif self.source.is_file():
            paths = self._read_index(self.source, basedir)
        else:
            raise MissingFileError(f"VPT dataset source {str(self.source)!r} is neither a folder nor an index .json")
        if not paths:
            raise DataError(f"{self.source}: no VPT recordings (*.mp4 with *.jsonl) found")
        self.paths: list[Path] = paths
        for path in paths:  # fail now, not hours into training
            if not path.with_suffix(".jsonl").is_file():
                raise MissingFileError(
                    f"VPT video {path} has no jsonl partner {path.with_suffix('.jsonl').name}; put the recording's "
                    ".jsonl next to the .mp4"
                )

    @staticmethod
    def _scan_folder(root: Path) -> list[Path]:
        videos = {p.relative_to(root).with_suffix("") for p in root.rglob("*.mp4") if p.is_file()}
        actions = {p.relative_to(root).with_suffix("") for p in root.rglob("*.jsonl") if p.is_file()}
        _check_partners(root, {str(v) for v in videos}, {str(a) for a in actions})
        return [root / f"{stem}.mp4" for stem in sorted(videos, key=str)]

    @staticmethod
    def _read_index(index: Path, basedir: str | os.PathLike | None) -> list[Path]:
        try:
            data = json.loads(index.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise DataError(
                f"{index}: not a valid JSON index ({e}); expected {{\"basedir\": ..., \"relpaths\": [...]}}"
            ) from e
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("relpaths"), list)
            or not all(isinstance(r, str) and r for r in data["relpaths"])
        ):
            raise DataError(f"{index}: expected a JSON object {{\"basedir\": str, \"relpaths\": [str, ...]}}")
        if basedir is not None:
            base = Path(basedir)
        else:
            declared = data.get("basedir", "")
            if not isinstance(declared, str):
                raise DataError(f"{index}: 'basedir' must be a string, got {declared!r}")
            if _is_url(declared):
                raise ConfigError(
                    f"{index}: basedir {declared!r} is a URL; download the recordings (mp4 + jsonl) and pass "
                    "basedir=<local folder>"
                )
            base = index.parent / declared
        paths, missing = [], []
        for relpath in data["relpaths"]:
            rel = relpath if relpath.endswith(".mp4") else relpath + ".mp4"
            candidates = (base / rel, base / Path(rel).name)
            found = next((c for c in candidates if c.is_file()), None)
            if found is None:
                missing.append(rel)
            else:
                paths.append(found)
        if missing:
            raise MissingFileError(
                f"{index}: {len(missing)} of {len(data['relpaths'])} recordings are missing under {base}, e.g. "
                f"{missing[0]!r}; download them or remove them from the index"
            )
        return paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> VPTRecording:  # type: ignore[override]
        return VPTRecording(self.paths[index], **self._options)

    def __iter__(self) -> Iterator[VPTRecording]:
        for path in self.paths:
            yield VPTRecording(path, **self._options)

    def iter_chunks(self, n_frames: int, *, drop_last: bool = False) -> Iterator[VPTChunk]:
        """Chunks of every recording in order; a chunk never spans two recordings."""
        for recording in self:
            yield from recording.iter_chunks(n_frames, drop_last=drop_last)


def write_vpt_recording(
    mp4_path: str | os.PathLike,
    frames: np.ndarray,
    lines: Sequence[Mapping[str, Any]],
    *,
    fps: float = VPT_FPS,
    codec: str = "h264",
) -> VPTRecording:
    """Write ``<name>.mp4`` + ``<name>.jsonl`` (raw contractor lines, written as given) and open them.

    Raises:
        DataError: the frame and line counts differ. FrameError: bad frames.
    """
    mp4_path = Path(mp4_path)
    if mp4_path.suffix != ".mp4":
        raise ConfigError(f"VPT recordings are .mp4 files, got {str(mp4_path)!r}")
    array = _check_clip_frames(frames, None)
    if len(lines) != len(array):
        raise DataError(f"{mp4_path.name}: {len(array)} frames but {len(lines)} jsonl lines; give one line per frame")
    write_video(mp4_path, array, fps, codec=codec)
    write_jsonl(mp4_path.with_suffix(".jsonl"), lines)
    return VPTRecording(mp4_path, expected_size=(array.shape[1], array.shape[2]))
