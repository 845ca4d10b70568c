"""Start scenes: where a world-model episode's context (real frames + the actions between them) comes from.

A video world model cannot invent its first frame, so every reset needs a context. ``reset(options=...)`` can
pass one explicitly; otherwise the env asks its :class:`SceneSource`, drawing with the env's own seeded generator
so that ``reset(seed=s)`` is reproducible.

Named sources (``scenes="crafter"``) are registered by the package that provides them (:func:`register_scenes`,
like Gymnasium's env ids: an entry point string, imported when the name is first used), so this module knows no
domain's scenes.
"""

from __future__ import annotations

import importlib
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


SceneFactory = Callable[..., SceneSource]
"""Builds a named source: called as ``factory(frame_size=(H, W), context_frames=T)``."""


@dataclass(frozen=True)
class NamedScenes:
    """A registered scene source: the action domain its frames belong to and where its factory lives."""

    domain: str
    entry_point: str | SceneFactory
    """A :data:`SceneFactory`, or ``"module:attribute"`` naming one (imported on first use, so registering costs
    nothing)."""

    def load(self) -> SceneFactory:
        if callable(self.entry_point):
            return self.entry_point
        module, _, attribute = self.entry_point.partition(":")
        return getattr(importlib.import_module(module), attribute)


NAMED_SCENES: dict[str, NamedScenes] = {}
"""Scene source name -> its registration (:func:`register_scenes`)."""


def register_scenes(name: str, entry_point: str | SceneFactory, *, domain: str) -> None:
    """Make ``scenes=name`` build a scene source for world models of ``domain``.

    Args:
        name: what env kwargs pass as ``scenes`` (e.g. ``"crafter"``).
        entry_point: a :data:`SceneFactory`, or ``"module:attribute"`` naming one.
        domain: the action domain (``worldmodels.actions`` name) whose models the scenes fit.

    Raises:
        ConfigError: ``name`` is registered already with another entry point or domain.
    """
    registration = NamedScenes(domain=domain, entry_point=entry_point)
    if NAMED_SCENES.get(name, registration) != registration:
        raise ConfigError(
            f"scenes {name!r} is registered already ({NAMED_SCENES[name]}); pick another name for {registration}"
        )
    NAMED_SCENES[name] = registration


def resolve_scenes(scenes: object, *, domain: ActionDomain, frame_size: tuple[int, int], context_frames: int = 1) -> SceneSource | None:
    """Turn the ``scenes`` env kwarg into a :class:`SceneSource`.

    Accepts ``None`` (contexts must come through ``reset(options=...)``), a SceneSource, a list of :class:`Scene`,
    a registered name (:func:`register_scenes`; ``"crafter"``: real frames of the game, for Crafter models), or a
    directory of MineWorld-layout clips.
    """
    if scenes is None or isinstance(scenes, SceneSource):
        return scenes  # type: ignore[return-value]
    if isinstance(scenes, (list, tuple)):
        return ListScenes(scenes)
    if isinstance(scenes, Callable):  # type: ignore[arg-type]
        return _CallableScenes(scenes)
    if isinstance(scenes, str) and scenes in NAMED_SCENES:
        named = NAMED_SCENES[scenes]
        if domain.name != named.domain:
            raise ConfigError(
                f"scenes={scenes!r} are frames of the {named.domain!r} domain, this world model speaks "
                f"{domain.name!r}; pass scenes of its own domain"
            )
        return named.load()(frame_size=frame_size, context_frames=context_frames)
    if isinstance(scenes, (str, Path)) and Path(scenes).is_dir():
        return ClipScenes(scenes, context_frames=context_frames, frame_size=frame_size)
    names = ", ".join(repr(name) for name in sorted(NAMED_SCENES))
    raise ConfigError(
        f"scenes={scenes!r} is not understood: pass None, a list of Scene, a SceneSource, a registered name "
        f"({names or 'none registered'}), or a directory of clip_N.mp4 + clip_N.jsonl files"
    )


class _CallableScenes:
    def __init__(self, fn: Callable[[np.random.Generator], Scene]):
        self.fn = fn

    def sample(self, rng: np.random.Generator) -> Scene:
        return self.fn(rng)
