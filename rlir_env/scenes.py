"""Start scenes: where a world-model episode's context (real frames + the actions between them) comes from.

A video world model cannot invent its first frame, so every reset needs a context. ``reset(options=...)`` can
pass one explicitly; otherwise the env asks its :class:`SceneSource`, drawing with the env's own seeded generator
so that ``reset(seed=s)`` is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from worldmodels.actions import ActionDomain
from worldmodels.errors import ConfigError, FrameError


@dataclass(frozen=True)
class Scene:
    """A context: ``frames uint8[T, H, W, 3]`` and the ``T - 1`` compact actions between them."""

    frames: np.ndarray
    actions: np.ndarray


@runtime_checkable
class SceneSource(Protocol):
    def sample(self, rng: np.random.Generator) -> Scene:
        """Draw one start scene using ``rng`` (the env's seeded generator) for every random choice."""
        ...


class ListScenes:
    """A fixed list of scenes; each reset picks one uniformly."""

    def __init__(self, scenes: Sequence[Scene]):
        if not scenes:
            raise ConfigError("ListScenes needs at least one scene")
        self.scenes = list(scenes)

    def sample(self, rng: np.random.Generator) -> Scene:
        return self.scenes[int(rng.integers(len(self.scenes)))]


class ClipScenes:
    """Scenes cut from a directory of clips in the MineWorld validation layout (``clip_N.mp4`` + ``clip_N.jsonl``).

    Each reset picks a clip and a start index, and uses ``context_frames`` consecutive frames with their actions.
    """

    def __init__(self, root: str | Path, *, context_frames: int = 1, frame_size: tuple[int, int] = (224, 384)):
        from worldmodels.actions import minecraft
        from worldmodels.data.clips import MineWorldClips

        self._to_compact = minecraft.to_compact
        self.clips = MineWorldClips(root, size=frame_size, frames=None)
        self.context_frames = context_frames

    def sample(self, rng: np.random.Generator) -> Scene:
        clip = self.clips[int(rng.integers(len(self.clips)))]
        if len(clip.frames) < self.context_frames:
            raise FrameError(f"clip {clip.name} has {len(clip.frames)} frames, fewer than context_frames={self.context_frames}")
        start = int(rng.integers(len(clip.frames) - self.context_frames + 1))
        stop = start + self.context_frames
        # Line k of a clip is the action taken at frame k (it leads to frame k + 1).
        actions = self._to_compact(clip.actions[start : stop - 1]) if stop - 1 > start else None
        return Scene(frames=clip.frames[start:stop], actions=actions)


def resolve_scenes(scenes: object, *, domain: ActionDomain, frame_size: tuple[int, int], context_frames: int = 1) -> SceneSource | None:
    """Turn the ``scenes`` env kwarg into a :class:`SceneSource`.

    Accepts ``None`` (contexts must come through ``reset(options=...)``), a SceneSource, a list of :class:`Scene`,
    ``"crafter"`` (fresh worlds of the real game, for Crafter models), or a directory of MineWorld-layout clips.
    """
    if scenes is None or isinstance(scenes, SceneSource):
        return scenes  # type: ignore[return-value]
    if isinstance(scenes, (list, tuple)):
        return ListScenes(scenes)
    if isinstance(scenes, Callable):  # type: ignore[arg-type]
        return _CallableScenes(scenes)
    if scenes == "crafter":
        if domain.name != "crafter":
            raise ConfigError(f"scenes='crafter' needs a Crafter world model, this one speaks {domain.name!r}")
        from rlir_env.crafter.scenes import CrafterScenes

        return CrafterScenes(size=frame_size, context_frames=context_frames)
    if isinstance(scenes, (str, Path)) and Path(scenes).is_dir():
        return ClipScenes(scenes, context_frames=context_frames, frame_size=frame_size)
    raise ConfigError(
        f"scenes={scenes!r} is not understood: pass None, a list of Scene, a SceneSource, 'crafter', "
        "or a directory of clip_N.mp4 + clip_N.jsonl files"
    )


class _CallableScenes:
    def __init__(self, fn: Callable[[np.random.Generator], Scene]):
        self.fn = fn

    def sample(self, rng: np.random.Generator) -> Scene:
        return self.fn(rng)
