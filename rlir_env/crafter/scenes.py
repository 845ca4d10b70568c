"""Start scenes from the real game for Crafter world models.

A Crafter world model's episode starts from real frames. :class:`CrafterScenes` draws them from a pool shipped with
the package (``start_scenes.npz``: consecutive real frames and the actions between them, cut from recorded play),
so a reset costs microseconds instead of a world generation (:func:`build_scene_pool` makes it); without the file it
falls back to fresh worlds played by the recording policy (:func:`crafter_scene`).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from rlir_env.scenes import Scene
from worldmodels.errors import ConfigError, DataError

BUNDLED_POOL = Path(str(resources.files("rlir_env.crafter") / "start_scenes.npz"))


def crafter_scene(
    seed: int,
    *,
    size: tuple[int, int] = (72, 72),
    context_frames: int = 1,
    warmup_steps: int = 0,
    policy: str = "mixture",
) -> Scene:
    """A start scene from a fresh real Crafter world: reset with ``seed``, play ``warmup_steps`` steps of ``policy``,
    then record ``context_frames`` frames and the actions between them."""
    from rlir_env.crafter.env import CrafterEnv
    from rlir_env.crafter.policies import make_policy

    if size[0] != size[1]:
        raise ConfigError(f"Crafter frames are square, got size {size}")
    env = CrafterEnv(size=size[0])
    obs, info = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    agent = make_policy(policy)
    agent.reset(rng)
    frames, actions = [obs], []
    for _ in range(warmup_steps + context_frames - 1):
        action = agent.act(obs, info)
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:  # died during warm-up: start again from another world
            return crafter_scene(seed + 1_000_003, size=size, context_frames=context_frames, warmup_steps=warmup_steps)
        frames.append(obs)
        actions.append(action)
    keep = context_frames - 1
    return Scene(frames=np.stack(frames[-context_frames:]), actions=np.array(actions[len(actions) - keep :], dtype=np.int64))


def build_scene_pool(
    data_dir: str | Path, out: str | Path, *, n_scenes: int = 256, scene_frames: int = 4, seed: int = 0
) -> Path:
    """Cut ``n_scenes`` windows of ``scene_frames`` consecutive real frames (and the actions between them) from a
    recording (:mod:`worldmodels.data.shards`) into a pool file for :class:`CrafterScenes`; deterministic from
    ``seed``. Returns the written path (an ``.npz``, compressed: Crafter frames compress about 25x)."""
    from worldmodels.data.shards import ShardDataset

    if n_scenes < 1 or scene_frames < 2:
        raise ConfigError(f"need n_scenes >= 1 and scene_frames >= 2, got {n_scenes} and {scene_frames}")
    frames, actions = ShardDataset(data_dir).sample_windows(n_scenes, scene_frames - 1, np.random.default_rng(seed))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, frames=frames, actions=actions)
    return out


def crafter_scenes(frame_size: tuple[int, int], context_frames: int) -> CrafterScenes:
    """``scenes="crafter"`` (registered by :mod:`rlir_env`): the bundled pool of real frames at ``frame_size``."""
    return CrafterScenes(size=frame_size, context_frames=context_frames)


class CrafterScenes:
    """Start scenes for Crafter models: windows of ``context_frames`` real frames from the bundled pool.

    Args:
        size: frame size the model expects (the pool is 72x72; other sizes fall back to fresh worlds).
        context_frames: frames per scene.
        pool: an ``.npz`` with ``frames uint8[N, T, H, W, 3]`` and ``actions int64[N, T-1]``; default the bundled pool.
    """

    def __init__(self, size: tuple[int, int] = (72, 72), context_frames: int = 1, pool: str | Path | None = None):
        self.size = tuple(size)
        self.context_frames = context_frames
        path = Path(pool) if pool is not None else BUNDLED_POOL
        self.frames = self.actions = None
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as data:
                    frames, actions = data["frames"], data["actions"]
            except (OSError, ValueError, KeyError) as error:
                raise DataError(f"start-scene pool {path} cannot be read ({error})") from None
            if frames.shape[2:4] == self.size and frames.shape[1] >= context_frames:
                self.frames, self.actions = frames, actions
        elif pool is not None:
            raise DataError(f"start-scene pool {path} does not exist")

    def sample(self, rng: np.random.Generator) -> Scene:
        if self.frames is None:
            return crafter_scene(int(rng.integers(2**31 - 1)), size=self.size, context_frames=self.context_frames)
        index = int(rng.integers(len(self.frames)))
        start = int(rng.integers(self.frames.shape[1] - self.context_frames + 1))
        stop = start + self.context_frames
        return Scene(frames=self.frames[index, start:stop], actions=self.actions[index, start : stop - 1])
