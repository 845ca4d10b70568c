"""Action taxonomies: how a domain's actions become the class labels that the action metrics score.

A :class:`Taxonomy` lists a domain's metric *tasks* in a fixed order (each task is one single-label classification
problem with ``n_classes`` classes) and maps actions to labels with one vectorised call::

    labels = MINECRAFT_TAXONOMY.labels(actions)      # int64[..., n_tasks]

Tasks come in two kinds:

* ``"discrete"`` - the classification tasks that precision / recall / F1 are computed on;
* ``"camera"`` - camera tasks kept apart from those (MineWorld's ``camera_loss``, GameWorld's camera precision and
  the RLIR reward use them).

Another domain plugs in with its own tasks and label function, e.g. Crafter's ``Discrete(17)``::

    CRAFTER = Taxonomy("crafter", (Task("action", 17),), lambda a: crafter.validate_compact(a)[..., None])

``MINECRAFT_TAXONOMY`` follows MineWorld's ``metrics/IDM/inverse_dynamics_model.py``
(``define_exclusive_classification_task``, ``calculate_hot_bar=False``): three 3-class pairs built from the bit
string of the two keys (``"00"`` and ``"11"`` -> 0, ``"10"`` -> 1 = *first* key of the tuple, ``"01"`` -> 2) and four
binary buttons, plus the two camera axes binned with the VPT IDM quantiser (11 bins, clip +-10 degrees).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from worldmodels.actions.camera import VPT_IDM_CAMERA
from worldmodels.actions.minecraft import ACTION_KEYS
from worldmodels.errors import ActionError, DataError

TaskKind = Literal["discrete", "camera"]


@dataclass(frozen=True)
class Task:
    """One single-label classification task.

    Args:
        name: the official task name: a key (``"use"``) or a tuple of mutually exclusive keys
            (``("back", "forward")``).
        n_classes: number of classes; labels are ``0 .. n_classes - 1``.
        kind: ``"discrete"`` (scored with precision / recall / F1) or ``"camera"`` (kept apart).
        ordinal: classes are ordered bins, so ``|pred - gt|`` is a meaningful loss (camera bins).
    """

    name: str | tuple[str, ...]
    n_classes: int
    kind: TaskKind = "discrete"
    ordinal: bool = False

    @property
    def key(self) -> str:
        """The name as the official JSON writes it: ``str(name)``, e.g. ``"('back', 'forward')"`` or ``"use"``."""
        return str(self.name)


@dataclass(frozen=True)
class Taxonomy:
    """A domain's metric tasks and the vectorised map from actions to labels.

    Args:
        name: short identifier (``"minecraft"``).
        tasks: the tasks in output order.
        label_fn: ``actions -> int64[..., len(tasks)]``; raises ``ActionError`` on malformed actions.
    """

    name: str
    tasks: tuple[Task, ...]
    label_fn: Callable[[Any], np.ndarray] = field(repr=False)

    def __post_init__(self) -> None:
        if not self.tasks or any(t.n_classes < 1 for t in self.tasks):
            raise DataError(f"taxonomy {self.name!r} needs at least one task, each with n_classes >= 1")
        if len({t.key for t in self.tasks}) != len(self.tasks):
            raise DataError(f"taxonomy {self.name!r} has duplicate task names {[t.key for t in self.tasks]}")

    @property
    def n_tasks(self) -> int:
        """Number of tasks (label columns)."""
        return len(self.tasks)

    @property
    def task_keys(self) -> tuple[str, ...]:
        """``str(task.name)`` for every task, in order."""
        return tuple(t.key for t in self.tasks)

    @property
    def n_classes(self) -> np.ndarray:
        """``int64[n_tasks]``: classes per task."""
        return np.array([t.n_classes for t in self.tasks], dtype=np.int64)

    @property
    def max_classes(self) -> int:
        """Side of the padded per-task confusion matrices."""
        return int(self.n_classes.max())

    @property
    def discrete_indices(self) -> np.ndarray:
        """Column indices of the ``"discrete"`` tasks."""
        return np.array([i for i, t in enumerate(self.tasks) if t.kind == "discrete"], dtype=np.int64)

    @property
    def camera_indices(self) -> np.ndarray:
        """Column indices of the ``"camera"`` tasks."""
        return np.array([i for i, t in enumerate(self.tasks) if t.kind == "camera"], dtype=np.int64)

    def scored_indices(self, include_camera: bool = True) -> np.ndarray:
        """Column indices of the tasks RLIR's per-frame reward scores: the discrete ones, and the camera ones unless
        ``include_camera`` is False."""
        if not include_camera:
            return self.discrete_indices
        return np.sort(np.concatenate([self.discrete_indices, self.camera_indices]))

    def labels(self, actions: Any) -> np.ndarray:
        """Actions -> ``int64[..., n_tasks]`` class labels (leading shape = the actions' batch shape)."""
        labels = np.asarray(self.label_fn(actions))
        return self.check_labels(labels, "labels returned by label_fn")

    def check_labels(self, labels: Any, what: str = "labels") -> np.ndarray:
        """Validate a label array ``[..., n_tasks]`` (integers in range) and return it as ``int64``.

        Raises:
            DataError: wrong trailing size, non-integer values, or a label outside its task's classes.
        """
        array = np.asarray(labels)
        if array.ndim < 1 or array.shape[-1] != self.n_tasks:
            raise DataError(
                f"{what} must have a trailing dimension of {self.n_tasks} (tasks {list(self.task_keys)}), "
                f"got shape {array.shape}"
            )
        if array.size and not np.issubdtype(array.dtype, np.integer):
            if array.dtype == object or not np.all(np.mod(array, 1) == 0):
                raise DataError(f"{what} must be integers, got dtype {array.dtype}")
        array = array.astype(np.int64, copy=False)
        bad = (array < 0) | (array >= self.n_classes)
        if bad.any():
            column = int(np.argwhere(bad)[0][-1])
            raise DataError(
                f"{what}: task {self.task_keys[column]} has label {int(array[bad].flat[0])}, valid labels are "
                f"0..{self.tasks[column].n_classes - 1}"
            )
        return array


# --------------------------------------------------------------------------------------------------------------
# MineRL action dicts -> arrays


def _flatten_dicts(actions: Any) -> tuple[list[Mapping[str, Any]], tuple[int, ...]]:
    """A dict or a rectangular (nested) list of dicts -> flat list of dicts and the batch shape."""
    if isinstance(actions, Mapping):
        return [actions], ()
    if isinstance(actions, Sequence) and not isinstance(actions, (str, bytes)):
        if len(actions) == 0:
            raise ActionError("got an empty list of actions; pass at least one MineRL action dict")
        parts = [_flatten_dicts(item) for item in actions]
        shapes = {shape for _, shape in parts}
        if len(shapes) != 1:
            raise ActionError(f"nested action lists must be rectangular, got inner shapes {sorted(shapes)}")
        return [d for flat, _ in parts for d in flat], (len(actions),) + parts[0][1]
    raise ActionError(
        f"expected a MineRL action dict, a (nested) list of them or a dict of arrays, got {type(actions).__name__}"
    )


def _check_keys(action: Mapping[str, Any], required: Sequence[str], where: str) -> None:
    missing = [k for k in required if k not in action]
    unknown = [k for k in action if k not in ACTION_KEYS]
    if missing or unknown:
        parts = [f"missing keys {missing}"] if missing else []
        if unknown:
            parts.append(f"unknown keys {unknown}")
        raise ActionError(
            f"{where}: {'; '.join(parts)}; the metric needs {list(required)} (any other key must be one of the 24 "
            "MineRL 1.0 keys)"
        )


def _buttons(values: Any, key: str, batch_shape: tuple[int, ...]) -> np.ndarray:
    try:
        array = np.asarray(values)
    except (TypeError, ValueError):
        raise ActionError(f"button {key!r} must be one 0/1 number per action, got ragged values") from None
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise ActionError(f"button {key!r} must hold 0/1 numbers, got dtype {array.dtype}")
    size = int(np.prod(batch_shape, dtype=np.int64))
    if array.shape != batch_shape:
        # one value per action, possibly wrapped (the IDM emits shape-(1,) arrays per frame)
        if array.size != size or array.shape[: len(batch_shape)] != batch_shape:
            raise ActionError(
                f"button {key!r} must have one value per action (batch shape {batch_shape}), got shape {array.shape}"
            )
        array = array.reshape(batch_shape)
    if array.size and not np.isin(array, (0, 1)).all():
        raise ActionError(f"button {key!r} must be 0 or 1, got values {np.unique(array)[:8].tolist()}")
    return array.astype(np.int64)


def stack_actions(actions: Any, required: Sequence[str]) -> dict[str, np.ndarray]:
    """MineRL actions -> ``{key: array}`` for the ``required`` keys with one common batch shape.

    ``actions`` is one dict, a rectangular (nested) list of dicts, or a dict of arrays (buttons ``[...]``,
    ``camera`` ``[..., 2]``). Buttons come back ``int64`` in ``{0, 1}``, ``camera`` ``float64[..., 2]`` (pitch,
    yaw degrees). Keys not in ``required`` are ignored but must be MineRL 1.0 keys.

    Raises:
        ActionError: a required key is missing (the message names it and the action's index), an unknown key,
            a button outside ``{0, 1}``, or a camera that is not two finite numbers per action.
    """
    if isinstance(actions, Mapping) and "camera" in actions and np.ndim(actions["camera"]) != 1:
        # dict of arrays
        _check_keys(actions, required, "action arrays")
        camera = np.asarray(actions["camera"], dtype=np.float64)
        if camera.shape[-1:] != (2,):
            raise ActionError(f"'camera' must have a trailing dimension of 2 ([pitch, yaw]), got shape {camera.shape}")
        batch_shape = camera.shape[:-1]
        out = {k: _buttons(actions[k], k, batch_shape) for k in required if k != "camera"}
    else:
        flat, batch_shape = _flatten_dicts(actions)
        for i, action in enumerate(flat):
            _check_keys(action, required, f"action {i} (flat index in batch shape {batch_shape})")
        out = {
            k: _buttons([a[k] for a in flat], k, (len(flat),)).reshape(batch_shape) for k in required if k != "camera"
        }
        camera = None
        if "camera" in required:
            try:
                camera = np.asarray([np.asarray(a["camera"], dtype=np.float64).reshape(-1) for a in flat])
            except (TypeError, ValueError):
                camera = None
            if camera is None or camera.shape != (len(flat), 2):
                raise ActionError("'camera' must be two numbers [pitch, yaw] (degrees) in every action")
            camera = camera.reshape(batch_shape + (2,))
    if "camera" in required:
        if not np.all(np.isfinite(camera)):
            raise ActionError(f"'camera' must be finite, got {camera[~np.isfinite(camera)][:4].tolist()}")
        out["camera"] = camera
    return out


def exclusive_pair_label(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """MineWorld's 3-class label of a key pair: none or both -> 0, only ``first`` -> 1, only ``second`` -> 2."""
    return np.where(first == second, 0, np.where(first == 1, 1, 2)).astype(np.int64)


# --------------------------------------------------------------------------------------------------------------
# Minecraft (MineWorld protocol)

_PAIRS: tuple[tuple[str, str], ...] = (("back", "forward"), ("left", "right"), ("sneak", "sprint"))
_BINARY: tuple[str, ...] = ("use", "attack", "jump", "drop")
MINECRAFT_REQUIRED_KEYS: tuple[str, ...] = ("back", "forward", "left", "right", "sneak", "sprint", *_BINARY, "camera")


def _minecraft_labels(actions: Any) -> np.ndarray:
    a = stack_actions(actions, MINECRAFT_REQUIRED_KEYS)
    bins = VPT_IDM_CAMERA.discretize(a["camera"])
    columns = [exclusive_pair_label(a[x], a[y]) for x, y in _PAIRS]
    columns += [a[key] for key in _BINARY]
    columns += [bins[..., 0], bins[..., 1]]
    return np.stack(columns, axis=-1)


MINECRAFT_TAXONOMY = Taxonomy(
    name="minecraft",
    tasks=(
        *(Task(pair, 3) for pair in _PAIRS),
        *(Task(key, 2) for key in _BINARY),
        Task("camera_pitch", VPT_IDM_CAMERA.n_bins, "camera", ordinal=True),
        Task("camera_yaw", VPT_IDM_CAMERA.n_bins, "camera", ordinal=True),
    ),
    label_fn=_minecraft_labels,
)
"""MineWorld's 7 IDM tasks (``('back', 'forward')``, ``('left', 'right')``, ``('sneak', 'sprint')``, ``use``,
``attack``, ``jump``, ``drop``) plus ``camera_pitch`` / ``camera_yaw`` bins of the VPT IDM quantiser (11 bins)."""


# --------------------------------------------------------------------------------------------------------------
# GameWorld (Matrix-Game GameWorldScore ``IDM_bench.py``)

CAMERA_DIRECTION_DEADZONE = 1e-2
"""Degrees; ``IDM_bench.camera_direction`` treats ``|angle| < 0.01`` as no motion."""


def camera_direction(camera: Any) -> np.ndarray:
    """GameWorld's 9-way camera direction of ``[..., 2]`` = ``[pitch, yaw]`` degrees -> ``int64[...]``.

    0 none, 1 up (pitch < 0), 2 down, 3 left (yaw < 0), 4 right, 5 up-left, 6 up-right, 7 down-left,
    8 down-right, with a dead zone of 0.01 degrees. The rules are checked in ``IDM_bench.camera_direction``'s order
    with its strict inequalities, so an axis exactly at +-0.01 matches no rule and falls back to 0.
    """
    vec = np.asarray(camera, dtype=np.float64)
    if vec.shape[-1:] != (2,):
        raise ActionError(f"camera must have a trailing dimension of 2 ([pitch, yaw]), got shape {vec.shape}")
    y, x = vec[..., 0], vec[..., 1]
    d = CAMERA_DIRECTION_DEADZONE
    still_x, still_y = np.abs(x) < d, np.abs(y) < d
    conditions = [
        still_x & still_y,
        (y < -d) & still_x,
        (y > d) & still_x,
        (x < -d) & still_y,
        (x > d) & still_y,
        (y < -d) & (x < -d),
        (y < -d) & (x > d),
        (y > d) & (x < -d),
        (y > d) & (x > d),
    ]
    return np.select(conditions, list(range(9)), default=0).astype(np.int64)


_GAMEWORLD_PAIRS: tuple[tuple[str, str], ...] = (("back", "forward"), ("left", "right"))
_GAMEWORLD_BINARY: tuple[str, ...] = ("attack", "jump")
GAMEWORLD_REQUIRED_KEYS: tuple[str, ...] = ("back", "forward", "left", "right", *_GAMEWORLD_BINARY, "camera")


def _gameworld_labels(actions: Any) -> np.ndarray:
    a = stack_actions(actions, GAMEWORLD_REQUIRED_KEYS)
    columns = [exclusive_pair_label(a[x], a[y]) for x, y in _GAMEWORLD_PAIRS]
    columns += [a[key] for key in _GAMEWORLD_BINARY]
    columns.append(camera_direction(a["camera"]))
    return np.stack(columns, axis=-1)


GAMEWORLD_TAXONOMY = Taxonomy(
    name="gameworld",
    tasks=(
        *(Task(pair, 3) for pair in _GAMEWORLD_PAIRS),
        *(Task(key, 2) for key in _GAMEWORLD_BINARY),
        Task("camera_direction", 9, "camera"),
    ),
    label_fn=_gameworld_labels,
)
"""GameWorld's keyboard tasks (``('back', 'forward')``, ``('left', 'right')``, ``attack``, ``jump``) and its 9-way
``camera_direction``."""


# --------------------------------------------------------------------------------------------------------------
# Crafter


def _crafter_task_tables() -> np.ndarray:
    """``int64[17, 5]``: for each Crafter action, its class in each of the five tasks (0 = none)."""
    from worldmodels.actions import crafter

    groups = {
        "movement": ("move_left", "move_right", "move_up", "move_down"),
        "do": ("do",),
        "sleep": ("sleep",),
        "place": ("place_stone", "place_table", "place_furnace", "place_plant"),
        "make": ("make_wood_pickaxe", "make_stone_pickaxe", "make_iron_pickaxe", "make_wood_sword",
                 "make_stone_sword", "make_iron_sword"),
    }  # fmt: skip
    table = np.zeros((crafter.N_ACTIONS, len(groups)), dtype=np.int64)
    for column, names in enumerate(groups.values()):
        for label, name in enumerate(names, start=1):
            table[crafter.action_index(name), column] = label
    return table


_CRAFTER_TABLE = _crafter_task_tables()


def _crafter_labels(actions: Any) -> np.ndarray:
    from worldmodels.actions import crafter

    return _CRAFTER_TABLE[crafter.validate_compact(actions)]


CRAFTER_TAXONOMY = Taxonomy(
    "crafter",
    (
        Task("movement", 5),  # none, left, right, up, down
        Task("do", 2),
        Task("sleep", 2),
        Task("place", 5),  # none, stone, table, furnace, plant
        Task("make", 7),  # none, wood/stone/iron pickaxe, wood/stone/iron sword
    ),
    _crafter_labels,
)
"""Crafter's ``Discrete(17)`` split into five exclusive tasks; ``noop`` is class 0 ("none") in all of them.

Every action belongs to exactly one task, mirroring MineWorld's grouping of exclusive keys: macro-F1 per task then
weighs a rare action (``make_iron_sword``) like a common one, and the unweighted mean over the five tasks is the
primary metric. Compact actions (``int64[...]``) go in, ``int64[..., 5]`` labels come out."""

TAXONOMIES: dict[str, Taxonomy] = {t.name: t for t in (MINECRAFT_TAXONOMY, GAMEWORLD_TAXONOMY, CRAFTER_TAXONOMY)}


def get_taxonomy(name: str) -> Taxonomy:
    """The taxonomy registered as ``name`` (``"minecraft"``, ``"gameworld"``, ``"crafter"``)."""
    try:
        return TAXONOMIES[name]
    except KeyError:
        raise DataError(f"unknown taxonomy {name!r}; known: {sorted(TAXONOMIES)}") from None
