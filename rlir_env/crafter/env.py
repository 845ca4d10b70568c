"""The real game Crafter (``danijar/crafter`` 1.8.3) as a Gymnasium environment: the ground truth of the default world.

``crafter.Env`` speaks the old gym API (``reset() -> obs``, ``step() -> (obs, reward, done, info)``) and seeds each
world with ``hash((seed, episode))``, so its worlds depend on how many episodes an instance has played. This wrapper
makes every world depend only on the seed given to :meth:`CrafterEnv.reset`: each reset draws a world seed from
``self.np_random`` and restarts Crafter's episode counter. All in-episode randomness (cows, zombies, sapling drops,
the night-time noise drawn into the frames) comes from the world's own ``RandomState``, so a seed and an action
sequence reproduce a rollout exactly.

One fix is needed for that: crafter keeps the creatures of each world chunk in a ``set``, whose iteration order
follows the objects' memory addresses, and despawns ``creatures[random.randint(len(creatures))]`` from it, so plain
crafter rollouts differ between processes (and between instances of one process). The wrapped world keeps chunk
members in insertion order instead (:class:`_OrderedChunksWorld`); the game is otherwise untouched.

Semantic ids (``info["semantic"]``, indexed ``[x, y]`` like ``player_pos``) are Crafter's material ids followed by its
object ids; :data:`SEMANTIC_NAMES` lists them in id order.
"""

from __future__ import annotations

import collections
from typing import Any

import crafter
import gymnasium as gym
import numpy as np
from crafter import constants as crafter_constants
from crafter import engine as crafter_engine
from gymnasium.error import ResetNeeded

from worldmodels.actions import crafter as crafter_actions
from worldmodels.errors import ActionError, ConfigError

__all__ = [
    "ACHIEVEMENTS",
    "CRAFTER_FPS",
    "INVENTORY_ITEMS",
    "SEMANTIC_IDS",
    "SEMANTIC_NAMES",
    "CrafterEnv",
]

ACHIEVEMENTS: tuple[str, ...] = tuple(crafter_constants.achievements)
"""Crafter's 22 achievements in its own (alphabetical) order; the columns of recorded ``achievements`` arrays."""

INVENTORY_ITEMS: tuple[str, ...] = tuple(crafter_constants.items)
"""Crafter's 16 inventory entries (health, food, drink, energy, then items) in ``data.yaml`` order."""

SEMANTIC_NAMES: tuple[str, ...] = (
    "none", *crafter_constants.materials, "player", "cow", "zombie", "skeleton", "arrow", "plant",
)  # fmt: skip
"""Names of the ids in ``info["semantic"]``: ``crafter.engine.World`` numbers ``[None, *materials]`` from 0 and
``crafter.Env`` numbers its ``SemanticView`` objects ``[Player, Cow, Zombie, Skeleton, Arrow, Plant]`` after them."""

SEMANTIC_IDS: dict[str, int] = {name: index for index, name in enumerate(SEMANTIC_NAMES)}
"""``SEMANTIC_NAMES`` inverted: name -> id."""

CRAFTER_FPS = 5
"""Playback rate for rendering and videos: the default ``--fps`` of Crafter's own GUI (``crafter/run_gui.py``)."""

_WORLD_SEED_HIGH = 2**31 - 1  # Crafter reduces its world seeds modulo 2**31 - 1 as well.


class CrafterEnv(gym.Env[np.ndarray, np.int64]):
    """Crafter with the Gymnasium API, deterministic per reset seed.

    Observations are ``uint8[size, size, 3]`` RGB frames (the local 9x7 view plus the inventory rows), actions are
    ``Discrete(17)`` (:mod:`worldmodels.actions.crafter`). The reward is Crafter's: +1 on a step that unlocks at
    least one achievement for the first time in the episode, plus 0.1 per health point gained (minus per lost).

    ``terminated`` is True when the player dies; ``truncated`` is True when Crafter's episode ``length`` is reached
    and the player is alive (a death on the last step counts as termination only). Stepping after either raises
    ``gymnasium.error.ResetNeeded``.

    ``info`` (returned by ``reset`` and ``step``, fresh objects every call, nothing time-dependent):

    * ``achievements``: ``dict[str, int]`` how often each achievement happened this episode.
    * ``inventory``: ``dict[str, int]`` health, food, drink, energy and items.
    * ``player_pos``: ``int64[2]`` the player's ``(x, y)`` cell; ``facing``: ``int64[2]`` the direction it faces.
    * ``sleeping``: bool; ``discount``: ``0.0`` after death, else ``1.0``.
    * ``semantic``: ``uint8[area]`` map of the whole world (ids in :data:`SEMANTIC_NAMES`).
    * ``unlocked``: ``tuple[str, ...]`` achievements unlocked for the first time in this episode at this step
      (sorted; the events that earn Crafter's +1 reward).

    Args:
        size: Observation height and width in pixels.
        length: Crafter's episode length (truncation); ``None`` for no limit.
        area: World size in cells.
        view: Crafter's view grid in cells (its bottom rows show the inventory).
        render_mode: ``None`` or ``"rgb_array"``; ``gymnasium.make(..., render_mode="human")`` adds Gymnasium's
            ``HumanRendering`` on top of ``"rgb_array"``.
        render_size: Side of the frames returned by :meth:`render` (default ``size``).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": CRAFTER_FPS}

    def __init__(
        self,
        size: int = 64,
        *,
        length: int | None = 10000,
        area: tuple[int, int] = (64, 64),
        view: tuple[int, int] = (9, 9),
        render_mode: str | None = None,
        render_size: int | None = None,
    ) -> None:
        self.size = _positive_int(size, "size")
        self.length = None if length is None else _positive_int(length, "length")
        self.render_size = self.size if render_size is None else _positive_int(render_size, "render_size")
        # an instance copy: Gymnasium 1.1's SyncVectorEnv writes autoreset_mode into its envs' metadata, which would
        # otherwise change the class attribute for every later CrafterEnv
        self.metadata = dict(type(self).metadata)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError(
                f"CrafterEnv render_mode={render_mode!r} is not supported; use None or 'rgb_array' "
                "(for a window use gymnasium.make(..., render_mode='human'), which wraps 'rgb_array')"
            )
        self.render_mode = render_mode
        area = (_positive_int(area[0], "area[0]"), _positive_int(area[1], "area[1]"))
        view = (_positive_int(view[0], "view[0]"), _positive_int(view[1], "view[1]"))
        # seed=0 only keeps crafter from touching numpy's global RNG; every reset replaces it.
        self._game = crafter.Env(area=area, view=view, size=(self.size, self.size), length=self.length, seed=0)
        self._game._world.__class__ = _OrderedChunksWorld  # deterministic creature bookkeeping (module docstring)
        self.observation_space = gym.spaces.Box(0, 255, (self.size, self.size, 3), np.uint8)
        # A fresh instance equal to ACTION_SPACE: spaces carry their own RNG, which must not be shared between envs.
        self.action_space = gym.spaces.Discrete(crafter_actions.N_ACTIONS)
        self.world_seed: int | None = None
        """Seed of the current world, drawn from ``np_random`` at reset."""
        self._obs: np.ndarray | None = None
        self._unlocked: set[str] = set()
        self._episode_over = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start a new world drawn from ``np_random`` (seeded by ``seed`` when given); ``options`` must be empty."""
        super().reset(seed=seed)
        if options:
            raise ConfigError(f"CrafterEnv.reset takes no options, got {sorted(options)}; pass options=None")
        self.world_seed = int(self.np_random.integers(0, _WORLD_SEED_HIGH))
        # crafter seeds the world with hash((self._seed, self._episode)): pin both so only world_seed matters.
        self._game._seed = self.world_seed
        self._game._episode = 0
        obs = self._game.reset()
        self._obs = np.ascontiguousarray(obs)
        self._unlocked = set()
        self._episode_over = False
        info = self._info(semantic=self._game._sem_view(), discount=1.0, unlocked=())
        return self._obs.copy(), info

    def step(self, action: int | np.integer) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Apply one of the 17 actions; see the class docstring for termination and ``info``."""
        if self._obs is None:
            raise ResetNeeded("CrafterEnv.step called before reset(); call env.reset(seed=...) first")
        if self._episode_over:
            raise ResetNeeded("CrafterEnv.step called after the episode ended (terminated or truncated); call reset()")
        index = _action_index(action)
        obs, reward, done, game_info = self._game.step(index)
        terminated = game_info["discount"] == 0.0
        truncated = bool(done) and not terminated
        self._episode_over = terminated or truncated
        achieved = (name for name, count in game_info["achievements"].items() if count > 0)
        unlocked = tuple(sorted(name for name in achieved if name not in self._unlocked))
        self._unlocked.update(unlocked)
        self._obs = np.ascontiguousarray(obs)
        info = self._info(semantic=game_info["semantic"], discount=float(game_info["discount"]), unlocked=unlocked)
        return self._obs.copy(), float(reward), terminated, truncated, info

    def render(self) -> np.ndarray | None:
        """The current frame (``uint8[render_size, render_size, 3]``) in ``"rgb_array"`` mode, else None."""
        if self.render_mode is None:
            gym.logger.warn("CrafterEnv.render() called without a render_mode; create it with render_mode='rgb_array'")
            return None
        if self._obs is None:
            raise ResetNeeded("CrafterEnv.render called before reset(); call env.reset(seed=...) first")
        if self.render_size == self.size:
            return self._obs.copy()
        # Crafter draws night-time noise from the world's RNG while rendering; restore it so that rendering never
        # changes what happens next.
        random = self._game._world.random
        state = random.get_state()
        try:
            frame = self._game.render((self.render_size, self.render_size))
        finally:
            random.set_state(state)
        return np.ascontiguousarray(frame)

    def _info(self, *, semantic: np.ndarray, discount: float, unlocked: tuple[str, ...]) -> dict[str, Any]:
        player = self._game._player
        return {
            "achievements": dict(player.achievements),
            "inventory": dict(player.inventory),
            "player_pos": np.array(player.pos, dtype=np.int64),
            "facing": np.array(player.facing, dtype=np.int64),
            "sleeping": bool(player.sleeping),
            "discount": discount,
            "semantic": semantic,
            "unlocked": unlocked,
        }


class _InsertionOrderedSet(dict):
    """The part of the ``set`` interface crafter's ``World`` uses for chunk members, iterating in insertion order."""

    def add(self, item: Any) -> None:
        self[item] = None

    def remove(self, item: Any) -> None:
        del self[item]


class _OrderedChunksWorld(crafter_engine.World):
    """``crafter.engine.World`` whose per-chunk creature collections iterate in a reproducible order."""

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed=seed)
        self._chunks = collections.defaultdict(_InsertionOrderedSet)


class CrafterVectorEnv(gym.vector.SyncVectorEnv):
    """``num_envs`` :class:`CrafterEnv` stepped in turn (the vector env of ``RLIR-CrafterReal-v0``), which checks
    that a step gets exactly one action per env before any env moves (Gymnasium's ``SyncVectorEnv`` would fail
    inside its loop, or silently ignore extra actions)."""

    def __init__(self, num_envs: int = 1, *, autoreset_mode: Any = None, copy: bool = True, **kwargs: Any) -> None:
        num_envs = _positive_int(num_envs, "num_envs")
        options = {"copy": copy} | ({} if autoreset_mode is None else {"autoreset_mode": autoreset_mode})
        super().__init__([lambda: CrafterEnv(**kwargs) for _ in range(num_envs)], **options)

    def step(self, actions: Any):
        array = np.asarray(actions)
        if array.shape != (self.num_envs,):
            raise ActionError(
                f"RLIR-CrafterReal-v0 with {self.num_envs} envs takes {self.num_envs} actions (shape ({self.num_envs},)), "
                f"got shape {array.shape}: {np.array2string(array.reshape(-1)[:8], separator=', ')}"
            )
        crafter_actions.validate_compact(array)  # every action checked before any env steps
        return super().step(array)


def _action_index(action: Any) -> int:
    array = np.asarray(action)
    if array.shape != () or array.dtype.kind not in "iuf":  # not bool, str or object
        raise ActionError(
            f"CrafterEnv.step takes one integer action in [0, {crafter_actions.N_ACTIONS}), got {action!r}; "
            "pass a single int (see worldmodels.actions.crafter.ACTION_NAMES)"
        )
    return int(crafter_actions.validate_compact(array))


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ConfigError(f"CrafterEnv {name} must be a positive integer, got {value!r}")
    return int(value)
