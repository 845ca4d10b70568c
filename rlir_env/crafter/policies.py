"""Behaviour policies that generate Crafter training data: random, scripted, and a mixture of both.

Every policy follows the same two-call protocol, so the recorder can drive any of them:

* ``reset(rng)`` at the start of an episode hands the policy the ``numpy.random.Generator`` it draws from (its only
  source of randomness, so a generator state and a seed reproduce the same actions);
* ``act(obs, info) -> int`` returns the next action index for the observation and ``info`` of :class:`CrafterEnv`.

:class:`ScriptedExplorer` reads the ground truth in ``info`` (``semantic``, ``inventory``, ``player_pos``,
``facing``, ``sleeping``) to walk to resources, face them and ``do``, place things and craft, so that the recorded
actions cover what random play rarely reaches (tables, pickaxes, stone).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
from crafter import constants as crafter_constants

from rlir_env.crafter.env import SEMANTIC_IDS
from worldmodels.actions.crafter import N_ACTIONS, action_index
from worldmodels.errors import ConfigError

__all__ = [
    "DecorrelatedPolicy",
    "MixturePolicy",
    "PersistentRandomPolicy",
    "Policy",
    "ScriptedExplorer",
    "make_policy",
    "POLICY_NAMES",
]


@runtime_checkable
class Policy(Protocol):
    """What the recorder needs from a behaviour policy."""

    def reset(self, rng: np.random.Generator) -> None:
        """Start an episode, drawing all randomness from ``rng`` from now on."""

    def act(self, obs: np.ndarray, info: Mapping[str, Any]) -> int:
        """The action index for this step."""


class PersistentRandomPolicy:
    """Uniformly random actions, each held for a geometric number of steps.

    After every step the current action is kept with probability ``repeat_p`` and otherwise redrawn (possibly the
    same action again), so a hold lasts ``1 / (1 - repeat_p)`` draws on average; ``repeat_p=0`` is i.i.d. uniform.

    Args:
        repeat_p: Probability of keeping the previous action, in ``[0, 1)``.
        action_weights: Optional relative weights of the 17 actions (default uniform).
    """

    def __init__(self, repeat_p: float = 0.8, action_weights: Sequence[float] | None = None) -> None:
        if not 0.0 <= repeat_p < 1.0:
            raise ConfigError(f"PersistentRandomPolicy repeat_p must be in [0, 1), got {repeat_p!r}")
        self.repeat_p = float(repeat_p)
        self.action_p = _normalised(action_weights, N_ACTIONS, "action_weights")
        self._rng: np.random.Generator | None = None
        self._action: int | None = None

    def reset(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._action = None

    def act(self, obs: np.ndarray | None = None, info: Mapping[str, Any] | None = None) -> int:
        rng = _require_rng(self._rng, self)
        if self._action is None or rng.random() >= self.repeat_p:
            self._action = int(rng.choice(N_ACTIONS, p=self.action_p))
        return self._action


# Action indices and the ids of semantic map cells the explorer cares about.
_NOOP, _DO, _SLEEP = action_index("noop"), action_index("do"), action_index("sleep")
_MOVES: dict[tuple[int, int], int] = {
    (-1, 0): action_index("move_left"),
    (1, 0): action_index("move_right"),
    (0, -1): action_index("move_up"),
    (0, 1): action_index("move_down"),
}
_DIRECTIONS: tuple[tuple[int, int], ...] = tuple(_MOVES)
_WALKABLE = np.array([SEMANTIC_IDS[name] for name in crafter_constants.walkable])  # objects overwrite these cells
_HOSTILE = np.array([SEMANTIC_IDS["zombie"], SEMANTIC_IDS["skeleton"]])
_TABLE, _FURNACE, _GRASS, _PLANT = (SEMANTIC_IDS[name] for name in ("table", "furnace", "grass", "plant"))
_ENERGY_MAX = crafter_constants.items["energy"]["max"]
_ITEM_MAX = {name: spec["max"] for name, spec in crafter_constants.items.items()}
_TOOLS = ("wood_pickaxe", "wood_sword", "stone_pickaxe", "stone_sword", "iron_pickaxe", "iron_sword")
_PLACE_WHERE = {
    name: np.array([SEMANTIC_IDS[m] for m in spec["where"]]) for name, spec in crafter_constants.place.items()
}
_PLACE_COST = {name: dict(spec["uses"]) for name, spec in crafter_constants.place.items()}
# Resources to walk to: goal name -> semantic ids of target cells.
_TARGETS: dict[str, np.ndarray] = {
    name: np.array([SEMANTIC_IDS[t] for t in targets])
    for name, targets in {
        "water": ("water",), "cow": ("cow",), "tree": ("tree",), "stone": ("stone",), "coal": ("coal",),
        "iron": ("iron",), "diamond": ("diamond",), "table": ("table",),
    }.items()
}  # fmt: skip


class ScriptedExplorer:
    """A goal-driven Crafter player that makes movement, ``do``, placing and crafting all common in the data.

    Each step it, in priority order: keeps sleeping while asleep and sleeps when energy is low; attacks an adjacent
    zombie or skeleton; crafts a missing tool (sometimes an extra one) when a table (and, for iron tools, a
    furnace) is within reach; places a table when none is near and it holds the wood, a furnace next to a table,
    saplings on grass and, now and then, stone; and otherwise pursues a goal: water when thirsty, cows when hungry,
    then trees, stone, coal, iron, diamonds, a table to craft at, or grass for saplings, chosen at random with
    weights that follow the inventory and held for a while. Goals are reached by breadth-first search over
    walkable, object-free cells of ``info["semantic"]`` (never through lava) within ``search_radius`` cells; a
    target is faced (a move toward a solid cell only turns the player) and then used with ``do``. Without a
    reachable target it wanders in a persistent random direction.

    Args:
        search_radius: Half-width in cells of the square searched for targets.
        sleep_energy: Sleep when energy is at or below this (and no zombie or skeleton is within ``safe_radius``).
        safe_radius: Half-width in cells of the square that must be free of zombies and skeletons to fall asleep.
        thirst: Seek water first when drink is at or below this.
        hunger: Seek cows first when food is at or below this.
        goal_steps: Mean number of steps a goal is pursued before it is re-chosen.
        p_extra_craft: Per-step probability of crafting a tool already owned (when at a table with resources).
        p_place_stone: Per-step probability of placing a held stone on a suitable faced cell.
        p_place_plant: Per-step probability of planting a held sapling on faced grass.
        p_turn: Per-step probability of picking a new direction while wandering.
        random_ties: Break ties between equally short paths at random (the breadth-first search visits the four
            directions in a random order on every call) instead of always preferring the same direction, so that
            walks to a target zigzag rather than run straight (default False: the behaviour of the v1 recordings).
    """

    def __init__(
        self,
        *,
        search_radius: int = 12,
        sleep_energy: int = 2,
        safe_radius: int = 6,
        thirst: int = 4,
        hunger: int = 4,
        goal_steps: int = 40,
        p_extra_craft: float = 0.05,
        p_place_stone: float = 0.1,
        p_place_plant: float = 0.5,
        p_turn: float = 0.15,
        random_ties: bool = False,
    ) -> None:
        for name, value in dict(search_radius=search_radius, goal_steps=goal_steps).items():
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"ScriptedExplorer {name} must be a positive integer, got {value!r}")
        for name, value in dict(p_extra_craft=p_extra_craft, p_place_stone=p_place_stone,
                                p_place_plant=p_place_plant, p_turn=p_turn).items():  # fmt: skip
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"ScriptedExplorer {name} must be a probability in [0, 1], got {value!r}")
        self.search_radius = int(search_radius)
        self.sleep_energy = int(sleep_energy)
        self.safe_radius = int(safe_radius)
        self.thirst = int(thirst)
        self.hunger = int(hunger)
        self.goal_steps = int(goal_steps)
        self.p_extra_craft = float(p_extra_craft)
        self.p_place_stone = float(p_place_stone)
        self.p_place_plant = float(p_place_plant)
        self.p_turn = float(p_turn)
        self.random_ties = bool(random_ties)
        self._rng: np.random.Generator | None = None
        self._goal: str | None = None
        self._goal_left = 0
        self._heading: tuple[int, int] | None = None

    def reset(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._goal = None
        self._goal_left = 0
        self._heading = None

    def act(self, obs: np.ndarray | None, info: Mapping[str, Any]) -> int:
        rng = _require_rng(self._rng, self)
        sem = info["semantic"]
        pos = (int(info["player_pos"][0]), int(info["player_pos"][1]))
        facing = (int(info["facing"][0]), int(info["facing"][1]))
        inv = info["inventory"]

        if info["sleeping"] and inv["energy"] < _ENERGY_MAX:
            return _SLEEP  # Crafter ignores other actions while asleep; say so in the labels.
        # Zombies hit sleepers for 7 instead of 2: only lie down when none is around (or energy is gone).
        if inv["energy"] <= self.sleep_energy and (
            inv["energy"] == 0 or not np.isin(_window(sem, pos, self.safe_radius), _HOSTILE).any()
        ):
            return _SLEEP
        hostile = _adjacent_direction(sem, pos, _HOSTILE)
        if hostile is not None:
            return _DO if facing == hostile else _MOVES[hostile]

        near = _window(sem, pos, 1)
        action = self._craft(inv, near)
        if action is not None:
            return action
        action = self._place(sem, pos, facing, inv, near)
        if action is not None:
            return action
        plant = _adjacent_direction(sem, pos, np.array([_PLANT]))
        if plant is not None and rng.random() < 0.05:  # eats the plant if it has ripened, else does nothing
            return _DO if facing == plant else _MOVES[plant]
        return self._pursue_goal(sem, pos, facing, inv)

    # -- crafting and placing -------------------------------------------------------------------------------------

    def _craft(self, inv: Mapping[str, int], near: np.ndarray) -> int | None:
        if not (near == _TABLE).any():
            return None
        furnace = bool((near == _FURNACE).any())
        for tool in _TOOLS:
            spec = crafter_constants.make[tool]
            if "furnace" in spec["nearby"] and not furnace:
                continue
            if any(inv[item] < amount for item, amount in spec["uses"].items()) or inv[tool] >= _ITEM_MAX[tool]:
                continue
            if inv[tool] == 0 or self._rng.random() < self.p_extra_craft:
                return action_index(f"make_{tool}")
        return None

    def _place(self, sem: np.ndarray, pos: tuple[int, int], facing: tuple[int, int], inv: Mapping[str, int],
               near: np.ndarray) -> int | None:  # fmt: skip
        rng = self._rng
        ahead = _cell(sem, (pos[0] + facing[0], pos[1] + facing[1]))
        wants = []
        missing_wood_tool = inv["wood_pickaxe"] == 0 or inv["wood_sword"] == 0
        table_cost = _PLACE_COST["table"]["wood"]
        if not (_window(sem, pos, 4) == _TABLE).any() and (
            inv["wood"] >= table_cost + missing_wood_tool or inv["wood"] >= _ITEM_MAX["wood"] - 1
        ):
            wants.append("table")
        furnace_cost = _PLACE_COST["furnace"]["stone"]
        if (near == _TABLE).any() and not (_window(sem, pos, 3) == _FURNACE).any():
            if inv["stone"] >= furnace_cost + (inv["stone_pickaxe"] == 0):
                wants.append("furnace")
        if inv["sapling"] >= 1 and rng.random() < self.p_place_plant:
            wants.append("plant")
        keep = 1 if inv["stone_pickaxe"] == 0 or inv["stone_sword"] == 0 else 0
        if inv["stone"] > keep and rng.random() < self.p_place_stone:
            wants.append("stone")
        for name in wants:
            if ahead is not None and ahead in _PLACE_WHERE[name]:
                return action_index(f"place_{name}")
        if wants and wants[0] in ("table", "furnace") and rng.random() < 0.5:
            # Step somewhere free so that a different cell lies ahead (placing needs a suitable faced cell).
            free = [d for d in _DIRECTIONS if _is_free(sem, (pos[0] + d[0], pos[1] + d[1]))]
            if free:
                return _MOVES[free[int(rng.integers(len(free)))]]
        return None

    # -- goals and navigation ---------------------------------------------------------------------------------------

    def _goal_weights(self, inv: Mapping[str, int], sem: np.ndarray, pos: tuple[int, int]) -> dict[str, float]:
        weights = {"wander": 0.3}
        if inv["drink"] < _ITEM_MAX["drink"]:
            weights["water"] = 0.4
        if inv["food"] < _ITEM_MAX["food"]:
            weights["cow"] = 0.4
        weights["tree"] = 2.0 if inv["wood_pickaxe"] == 0 else (1.0 if inv["wood"] < 5 else 0.2)
        if inv["wood_pickaxe"]:
            weights["stone"] = 1.0 if inv["stone"] < 5 else 0.2
            weights["coal"] = 0.5 if inv["coal"] < 2 else 0.05
        if inv["stone_pickaxe"]:
            weights["iron"] = 0.5 if inv["iron"] < 2 else 0.05
        if inv["iron_pickaxe"]:
            weights["diamond"] = 1.0
        if inv["sapling"] == 0:
            weights["sapling"] = 0.3
        craftable = any(
            inv[tool] == 0 and all(inv[item] >= amount for item, amount in crafter_constants.make[tool]["uses"].items())
            for tool in _TOOLS
        )
        if craftable and (_window(sem, pos, self.search_radius) == _TABLE).any():
            weights["table"] = 3.0
        return weights

    def _pursue_goal(self, sem: np.ndarray, pos: tuple[int, int], facing: tuple[int, int],
                     inv: Mapping[str, int]) -> int:  # fmt: skip
        rng = self._rng
        weights = self._goal_weights(inv, sem, pos)
        urgent = "water" if inv["drink"] <= self.thirst else "cow" if inv["food"] <= self.hunger else None
        if urgent is not None and self._goal != urgent:
            self._goal, self._goal_left = urgent, self._goal_steps_draw()
        elif self._goal not in weights or self._goal_left <= 0:
            names = list(weights)
            p = np.array([weights[n] for n in names])
            self._goal, self._goal_left = names[int(rng.choice(len(names), p=p / p.sum()))], self._goal_steps_draw()
        self._goal_left -= 1

        if self._goal == "sapling":
            if _cell(sem, (pos[0] + facing[0], pos[1] + facing[1])) == _GRASS:
                return _DO  # grass gives a sapling with probability 0.1
            grass = [d for d in _DIRECTIONS if _cell(sem, (pos[0] + d[0], pos[1] + d[1])) == _GRASS]
            if grass:
                return _MOVES[grass[int(rng.integers(len(grass)))]]
        elif self._goal in _TARGETS:
            targets = _TARGETS[self._goal]
            adjacent = _adjacent_direction(sem, pos, targets)
            if adjacent is not None:
                return _DO if facing == adjacent else _MOVES[adjacent]  # moving into a solid cell only turns
            order = tuple(_DIRECTIONS[i] for i in rng.permutation(4)) if self.random_ties else _DIRECTIONS
            step = _first_step_towards(sem, pos, targets, self.search_radius, order)
            if step is not None:
                return _MOVES[step]
            self._goal, self._goal_left = "wander", self._goal_steps_draw() // 2  # nothing reachable: look around
        return self._wander(sem, pos)

    def _wander(self, sem: np.ndarray, pos: tuple[int, int]) -> int:
        rng = self._rng
        heading = self._heading
        blocked = heading is not None and not _is_free(sem, (pos[0] + heading[0], pos[1] + heading[1]))
        if heading is None or blocked or rng.random() < self.p_turn:
            free = [d for d in _DIRECTIONS if _is_free(sem, (pos[0] + d[0], pos[1] + d[1]))]
            if not free:
                self._heading = None
                return _NOOP
            heading = free[int(rng.integers(len(free)))]
            self._heading = heading
        return _MOVES[heading]

    def _goal_steps_draw(self) -> int:
        return int(self._rng.integers(self.goal_steps // 2, self.goal_steps * 3 // 2 + 1))


class MixturePolicy:
    """Alternate between policies in segments, plus epsilon-random actions.

    At the start of each segment one component is picked with probability proportional to ``weights``; segments
    last a geometric number of steps with mean ``segment_mean``. On every step, with probability ``epsilon``, the
    chosen action is replaced by a uniformly random one.

    Args:
        components: The policies to mix (default: a :class:`ScriptedExplorer` and a
            :class:`PersistentRandomPolicy`).
        weights: Relative weight of each component (default ``(0.7, 0.3)``).
        segment_mean: Mean segment length in steps.
        epsilon: Probability of a uniformly random action on any step.
    """

    def __init__(
        self,
        components: Sequence[Policy] | None = None,
        weights: Sequence[float] | None = None,
        *,
        segment_mean: float = 40.0,
        epsilon: float = 0.05,
    ) -> None:
        self.components = list(components) if components is not None else [ScriptedExplorer(), PersistentRandomPolicy()]
        if not self.components:
            raise ConfigError("MixturePolicy needs at least one component policy")
        if weights is None and components is None:
            weights = (0.7, 0.3)
        self.weights = _normalised(weights, len(self.components), "weights")
        if not segment_mean >= 1.0:
            raise ConfigError(f"MixturePolicy segment_mean must be >= 1 step, got {segment_mean!r}")
        if not 0.0 <= epsilon <= 1.0:
            raise ConfigError(f"MixturePolicy epsilon must be a probability in [0, 1], got {epsilon!r}")
        self.segment_mean = float(segment_mean)
        self.epsilon = float(epsilon)
        self._rng: np.random.Generator | None = None
        self._active = 0
        self._segment_left = 0

    @property
    def active(self) -> int:
        """Index of the component that chooses actions in the current segment."""
        return self._active

    def reset(self, rng: np.random.Generator) -> None:
        self._rng = rng
        for component in self.components:
            component.reset(rng)
        self._segment_left = 0

    def act(self, obs: np.ndarray | None, info: Mapping[str, Any]) -> int:
        rng = _require_rng(self._rng, self)
        if self._segment_left <= 0:
            self._active = int(rng.choice(len(self.components), p=self.weights))
            self._segment_left = int(rng.geometric(1.0 / self.segment_mean))
        self._segment_left -= 1
        action = self.components[self._active].act(obs, info)
        if rng.random() < self.epsilon:
            action = int(rng.integers(N_ACTIONS))
        return int(action)


class DecorrelatedPolicy:
    """A scripted explorer interleaved step by step with independent random actions (the v2 recordings).

    The v1 ``mixture`` holds actions: its random component repeats the last action with probability 0.8 and its
    explorer walks straight to targets, so the action at ``t`` can be read off the motion in the frames before it
    (``bench/action_predictability.py``), and a world model trained on it learns to continue the past motion and
    ignore the action token. Here every step is, independently, with probability ``p_random`` a fresh random
    action (no persistence; ``sleep`` down-weighted, since a sleeper ignores all actions until rested) and
    otherwise the :class:`ScriptedExplorer`'s action (it is asked every step, so its goals keep progressing; it
    breaks path ties at random and turns often while wandering). The explorer still reaches collecting, placing,
    crafting, eating and sleeping. While the player sleeps the game ignores actions, so the label is the explorer's
    ``sleep`` (what the game does), never a random action that had no effect.

    Args:
        p_random: Per-step probability of a random action instead of the explorer's.
        random_weights: Relative weights of the 17 actions for the random steps (default: 1 each, ``sleep`` 0.2).
        explorer: Keyword arguments for the :class:`ScriptedExplorer` (default ``random_ties=True, p_turn=0.5``).
    """

    def __init__(
        self,
        p_random: float = 0.5,
        random_weights: Sequence[float] | None = None,
        explorer: Mapping[str, Any] | None = None,
    ) -> None:
        if not 0.0 <= p_random <= 1.0:
            raise ConfigError(f"DecorrelatedPolicy p_random must be a probability in [0, 1], got {p_random!r}")
        if random_weights is None:
            random_weights = [0.2 if i == _SLEEP else 1.0 for i in range(N_ACTIONS)]
        self.p_random = float(p_random)
        self.random_p = _normalised(random_weights, N_ACTIONS, "random_weights")
        self.explorer = ScriptedExplorer(**{"random_ties": True, "p_turn": 0.5, **dict(explorer or {})})
        self._rng: np.random.Generator | None = None

    def reset(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self.explorer.reset(rng)

    def act(self, obs: np.ndarray | None, info: Mapping[str, Any]) -> int:
        rng = _require_rng(self._rng, self)
        action = self.explorer.act(obs, info)
        if info["sleeping"]:
            return int(action)
        if self.p_random > 0.0 and rng.random() < self.p_random:  # p_random=0 plays exactly as the explorer
            action = int(rng.choice(N_ACTIONS, p=self.random_p))
        return int(action)


POLICY_NAMES = ("mixture", "explorer", "random", "uniform", "decorrelated")
"""Names accepted by :func:`make_policy`."""


def make_policy(name: str, **kwargs: Any) -> Policy:
    """Build a policy by name: ``"mixture"`` (default mixture, the v1 recordings), ``"explorer"``, ``"random"``
    (persistent random), ``"uniform"`` (i.i.d. uniform) or ``"decorrelated"`` (:class:`DecorrelatedPolicy`, the v2
    recordings); ``kwargs`` go to the constructor."""
    if name == "mixture":
        return MixturePolicy(**kwargs)
    if name == "explorer":
        return ScriptedExplorer(**kwargs)
    if name == "random":
        return PersistentRandomPolicy(**kwargs)
    if name == "uniform":
        return PersistentRandomPolicy(repeat_p=0.0, **kwargs)
    if name == "decorrelated":
        return DecorrelatedPolicy(**kwargs)
    raise ConfigError(f"unknown Crafter behaviour policy {name!r}; choose one of {', '.join(POLICY_NAMES)}")


# -- helpers on the semantic map (indexed [x, y]) ------------------------------------------------------------------


def _cell(sem: np.ndarray, pos: tuple[int, int]) -> int | None:
    if 0 <= pos[0] < sem.shape[0] and 0 <= pos[1] < sem.shape[1]:
        return int(sem[pos])
    return None


def _is_free(sem: np.ndarray, pos: tuple[int, int]) -> bool:
    cell = _cell(sem, pos)
    return cell is not None and cell in _WALKABLE


def _window(sem: np.ndarray, pos: tuple[int, int], radius: int) -> np.ndarray:
    x, y = pos
    return sem[max(0, x - radius) : x + radius + 1, max(0, y - radius) : y + radius + 1]


def _adjacent_direction(sem: np.ndarray, pos: tuple[int, int], ids: np.ndarray) -> tuple[int, int] | None:
    for d in _DIRECTIONS:
        cell = _cell(sem, (pos[0] + d[0], pos[1] + d[1]))
        if cell is not None and cell in ids:
            return d
    return None


def _first_step_towards(sem: np.ndarray, pos: tuple[int, int], targets: np.ndarray, radius: int,
                        order: Sequence[tuple[int, int]] = _DIRECTIONS) -> tuple[int, int] | None:  # fmt: skip
    """First move of a shortest walk (within a square of ``radius``) to a free cell next to a target cell; among
    equally short walks, the one the search meets first when it expands directions in ``order``."""
    x0, y0 = max(0, pos[0] - radius), max(0, pos[1] - radius)
    window = sem[x0 : pos[0] + radius + 1, y0 : pos[1] + radius + 1]
    target = np.isin(window, targets)
    if not target.any():
        return None
    free = np.isin(window, _WALKABLE)
    goal = np.zeros_like(target)
    goal[1:] |= target[:-1]
    goal[:-1] |= target[1:]
    goal[:, 1:] |= target[:, :-1]
    goal[:, :-1] |= target[:, 1:]
    goal &= free
    if not goal.any():
        return None
    width, height = window.shape
    start = (pos[0] - x0, pos[1] - y0)
    first: dict[tuple[int, int], tuple[int, int]] = {start: (0, 0)}
    queue = deque([start])
    while queue:
        cx, cy = queue.popleft()
        for d in order:
            nx, ny = cx + d[0], cy + d[1]
            if not (0 <= nx < width and 0 <= ny < height) or (nx, ny) in first or not free[nx, ny]:
                continue
            step = d if (cx, cy) == start else first[(cx, cy)]
            if goal[nx, ny]:
                return step
            first[(nx, ny)] = step
            queue.append((nx, ny))
    return None


def _normalised(weights: Sequence[float] | None, n: int, name: str) -> np.ndarray:
    if weights is None:
        return np.full(n, 1.0 / n)
    array = np.asarray(weights, dtype=np.float64)
    if array.shape != (n,) or not np.isfinite(array).all() or (array < 0).any() or array.sum() <= 0:
        raise ConfigError(f"{name} must be {n} non-negative finite numbers with a positive sum, got {weights!r}")
    return array / array.sum()


def _require_rng(rng: np.random.Generator | None, policy: object) -> np.random.Generator:
    if rng is None:
        raise ConfigError(f"{type(policy).__name__}.act called before reset(rng); call reset with a numpy Generator")
    return rng
