"""The Minecraft action domain: MineRL 1.0 actions, MineWorld's compact slots and token ids, VPT contractor lines.

Three views of one action:

* **env action** - a MineRL 1.0 dict of 24 keys (23 buttons in ``{0, 1}`` + ``camera = [pitch, yaw]`` degrees,
  ``+pitch`` looks down, ``+yaw`` turns right). What users and data files speak.
* **compact** - ``int64[..., 9]`` in ``COMPACT_SPACE = MultiDiscrete([21, 21, 10, 3, 3, 3, 3, 2, 3])``: exactly the
  9 content slots of MineWorld's action tokenizer (``mcdataset.py``), so it is lossless for MineWorld models and
  what SB3 agents act in. ``inventory``, ``ESC`` and ``swapHands`` have no slot (MineWorld never emits them) and
  are ignored, exactly as the official tokenizer ignores them.
* **tokens** - MineWorld's 11 ids per step (``<act_bos>``, 9 slots, ``<act_eos>``), ids offset by 8192.

Slot values of the compact form (both keys of a pair pressed -> 0, as the official tokenizer maps them to
``<null_act>``):

====  ===================  =======================================================
slot  name                 values
====  ===================  =======================================================
0     pitch bin            0..20, ``MINEWORLD_CAMERA`` bins (10 = no motion)
1     yaw bin              0..20
2     hotbar               0 none, k = ``hotbar.k`` (the lowest pressed one wins)
3     forward/back         0 none, 1 forward, 2 back
4     left/right           0 none, 1 left, 2 right
5     sprint/sneak         0 none, 1 sprint, 2 sneak
6     use/attack           0 none, 1 use, 2 attack
7     jump                 0 none, 1 jump
8     drop/pickItem        0 none, 1 drop, 2 pickItem
====  ===================  =======================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from numpy.typing import ArrayLike

from worldmodels.actions.camera import MINEWORLD_CAMERA
from worldmodels.actions.common import require_integers
from worldmodels.errors import ActionError

HOTBAR_KEYS: tuple[str, ...] = tuple(f"hotbar.{i}" for i in range(1, 10))

BUTTON_KEYS: tuple[str, ...] = (
    "forward", "left", "back", "right", "jump", "inventory", "drop", "swapHands", "sneak", "sprint",
    "attack", "use", "pickItem", *HOTBAR_KEYS, "ESC",
)  # fmt: skip
"""The 23 MineRL 1.0 buttons in ``minerl``'s ``mc.KEYMAP`` order."""

ACTION_KEYS: tuple[str, ...] = BUTTON_KEYS + ("camera",)
"""All 24 keys of a MineRL 1.0 action."""

ACTION_SPACE = gym.spaces.Dict(
    {key: gym.spaces.Discrete(2) for key in BUTTON_KEYS}
    | {"camera": gym.spaces.Box(low=-180.0, high=180.0, shape=(2,), dtype=np.float32)}
)
"""MineRL 1.0's action space (``HumanControlEnvSpec``), defined here because minerl cannot be installed."""

COMPACT_NVEC: tuple[int, ...] = (21, 21, 10, 3, 3, 3, 3, 2, 3)
COMPACT_SPACE = gym.spaces.MultiDiscrete(np.array(COMPACT_NVEC, dtype=np.int64))
COMPACT_SLOTS: tuple[str, ...] = (
    "pitch", "yaw", "hotbar", "forward_back", "left_right", "sprint_sneak", "use_attack", "jump", "drop_pickItem",
)  # fmt: skip

# Pair slots: (slot, key giving value 1, key giving value 2), in the official tokenizer's argument order.
_PAIR_SLOTS: tuple[tuple[int, str, str], ...] = (
    (3, "forward", "back"),
    (4, "left", "right"),
    (5, "sprint", "sneak"),
    (6, "use", "attack"),
    (8, "drop", "pickItem"),
)

# --- MineWorld token ids (``mcdataset.py: make_action_vocab``) -------------------------------------------------
# Local ids: ``Buttons.ALL`` order, then hotbar.1..9, then 21 pitch bins, 21 yaw bins, bos, null, eos.
_MINEWORLD_BUTTONS: tuple[str, ...] = (
    "use", "attack", "forward", "back", "left", "right", "jump", "sneak", "sprint", "drop", "swapHands",
    "pickItem", "inventory", "ESC", *HOTBAR_KEYS,
)  # fmt: skip
ACTION_VOCAB_OFFSET = 8192
_LOCAL_ID = {name: i for i, name in enumerate(_MINEWORLD_BUTTONS)}
_CAM_PITCH_LOCAL = len(_MINEWORLD_BUTTONS)  # 23
_CAM_YAW_LOCAL = _CAM_PITCH_LOCAL + MINEWORLD_CAMERA.n_bins  # 44
_BOS_LOCAL = _CAM_YAW_LOCAL + MINEWORLD_CAMERA.n_bins  # 65
_NULL_LOCAL, _EOS_LOCAL = _BOS_LOCAL + 1, _BOS_LOCAL + 2
ACTION_VOCAB_SIZE = _EOS_LOCAL + 1  # 68 local ids; 8192 + 68 = 8260 <= MineWorld's vocab_size 8262
ACT_BOS = ACTION_VOCAB_OFFSET + _BOS_LOCAL  # 8257
NULL_ACT = ACTION_VOCAB_OFFSET + _NULL_LOCAL  # 8258
ACT_EOS = ACTION_VOCAB_OFFSET + _EOS_LOCAL  # 8259
TOKENS_PER_ACTION = 11


def _slot_table(values: Sequence[str | None]) -> np.ndarray:
    """Local token id for each value of a compact slot (``None`` = ``<null_act>``)."""
    return np.array([_NULL_LOCAL if v is None else _LOCAL_ID[v] for v in values], dtype=np.int64)


# Per compact slot 2..8: local token id of each slot value; slots 0/1 are camera bins (offset + bin).
_SLOT_TOKENS: tuple[np.ndarray, ...] = (
    _slot_table([None, *HOTBAR_KEYS]),
    _slot_table([None, "forward", "back"]),
    _slot_table([None, "left", "right"]),
    _slot_table([None, "sprint", "sneak"]),
    _slot_table([None, "use", "attack"]),
    _slot_table([None, "jump"]),
    _slot_table([None, "drop", "pickItem"]),
)


# --- env actions ------------------------------------------------------------------------------------------------


def noop() -> dict[str, Any]:
    """The MineRL no-op: every button released, camera ``[0, 0]`` (``float32``, so it is in ``ACTION_SPACE``)."""
    action: dict[str, Any] = {key: 0 for key in BUTTON_KEYS}
    action["camera"] = np.zeros(2, dtype=np.float32)
    return action


def _as_button(value: Any, key: str) -> int:
    if isinstance(value, (bool, np.bool_)) or (np.ndim(value) == 0 and value in (0, 1)):
        return int(value)
    raise ActionError(f"button {key!r} must be 0 or 1, got {value!r}")


def _as_camera(value: Any) -> np.ndarray:
    try:
        camera = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        camera = None
    if camera is None or camera.shape != (2,) or not np.all(np.isfinite(camera)):
        raise ActionError(f"'camera' must be two finite numbers [pitch, yaw] in degrees, got {value!r}")
    return camera


def validate_env_action(action: Mapping[str, Any]) -> dict[str, Any]:
    """Strictly check one MineRL env action (all 24 keys) and return it normalised.

    Buttons become ``int`` 0/1 and ``camera`` a ``float64[2]`` array (float64 so quantisation agrees with the
    reference code, which bins ``np.array(line["camera"])``).

    Raises:
        ActionError: naming missing keys, unknown keys, or the first malformed value.
    """
    if not isinstance(action, Mapping):
        raise ActionError(f"an env action must be a dict of the 24 MineRL keys, got {type(action).__name__}")
    missing = [k for k in ACTION_KEYS if k not in action]
    unknown = [k for k in action if k not in ACTION_KEYS]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unknown:
            parts.append(f"unknown keys {unknown}")
        raise ActionError(f"malformed MineRL action: {'; '.join(parts)} (expected exactly {list(ACTION_KEYS)})")
    out: dict[str, Any] = {key: _as_button(action[key], key) for key in BUTTON_KEYS}
    out["camera"] = _as_camera(action["camera"])
    return out


def _is_compact_like(actions: Any) -> bool:
    if isinstance(actions, np.ndarray):
        return actions.dtype != object
    if hasattr(actions, "__array__") and not isinstance(actions, Mapping):  # torch tensors
        return True
    if isinstance(actions, Sequence) and not isinstance(actions, (str, bytes)):
        first: Any = actions
        while isinstance(first, Sequence) and not isinstance(first, (str, bytes)) and len(first) > 0:
            first = first[0]
        return not isinstance(first, Mapping)
    return False


def _stack_dicts(actions: Any) -> dict[str, np.ndarray]:
    """A dict, a (nested) list of dicts, or a dict of arrays -> dict of arrays with a common batch shape.

    Missing keys count as released buttons / zero camera, so partial dicts like ``{"forward": 1}`` work.
    """
    if isinstance(actions, Mapping):
        unknown = [k for k in actions if k not in ACTION_KEYS]
        if unknown:
            raise ActionError(f"unknown MineRL action keys {unknown}; valid keys are {list(ACTION_KEYS)}")
        if "camera" in actions:
            camera = np.asarray(actions["camera"], dtype=np.float64)
            if camera.ndim == 0 or camera.shape[-1] != 2:
                raise ActionError(f"'camera' must have a trailing dimension of 2 ([pitch, yaw]), got {actions['camera']!r}")
            batch_shape = camera.shape[:-1]
        else:
            batch_shape = np.broadcast_shapes(*(np.shape(actions[k]) for k in actions)) if actions else ()
            camera = np.zeros(batch_shape + (2,), dtype=np.float64)
        if not np.all(np.isfinite(camera)):
            raise ActionError(f"'camera' must be finite, got {camera[~np.isfinite(camera)][:4].tolist()}")
        stacked = {"camera": camera}
        for key in BUTTON_KEYS:
            value = np.broadcast_to(np.asarray(actions.get(key, 0)), batch_shape)
            if value.size and not np.isin(value, (0, 1)).all():
                raise ActionError(f"button {key!r} must be 0 or 1, got values {np.unique(value)[:8].tolist()}")
            stacked[key] = value.astype(np.int64)
        return stacked
    if isinstance(actions, Sequence) and not isinstance(actions, (str, bytes)):
        if len(actions) == 0:
            raise ActionError("got an empty list of actions")
        parts = [_stack_dicts(a) for a in actions]
        shapes = {p["camera"].shape for p in parts}
        if len(shapes) != 1:
            raise ActionError(f"nested action lists must be rectangular, got batch shapes {sorted(shapes)}")
        return {key: np.stack([p[key] for p in parts]) for key in parts[0]}
    raise ActionError(f"expected a MineRL action dict or a list of them, got {type(actions).__name__}")


def validate_compact(compact: ArrayLike) -> np.ndarray:
    """Check compact actions against ``COMPACT_NVEC`` and return them as ``int64[..., 9]``."""
    array = np.asarray(compact)
    if array.ndim == 0 or array.shape[-1] != len(COMPACT_NVEC):
        raise ActionError(f"compact Minecraft actions need a trailing dimension of 9, got shape {array.shape}")
    array = require_integers(array, "compact Minecraft actions")
    bad = (array < 0) | (array >= np.asarray(COMPACT_NVEC))
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ActionError(
            f"compact action value {int(array[index])} at index {index} is outside slot {COMPACT_SLOTS[index[-1]]!r} "
            f"(valid 0..{COMPACT_NVEC[index[-1]] - 1}; COMPACT_NVEC = {COMPACT_NVEC})"
        )
    return array


def to_compact(actions: Any) -> np.ndarray:
    """MineRL actions -> compact ``int64[..., 9]``.

    Args:
        actions: one dict (-> shape ``(9,)``), a (nested) list of dicts, a dict of arrays (batched), or an
            already compact integer array (validated and returned).
    """
    if _is_compact_like(actions):
        return validate_compact(actions)
    a = _stack_dicts(actions)
    batch_shape = a["camera"].shape[:-1]
    compact = np.zeros(batch_shape + (len(COMPACT_NVEC),), dtype=np.int64)
    bins = MINEWORLD_CAMERA.discretize(a["camera"])
    compact[..., 0], compact[..., 1] = bins[..., 0], bins[..., 1]
    hotbar = np.stack([a[k] for k in HOTBAR_KEYS], axis=-1)
    compact[..., 2] = np.where(hotbar.any(axis=-1), hotbar.argmax(axis=-1) + 1, 0)  # lowest pressed wins
    for slot, first, second in _PAIR_SLOTS:
        compact[..., slot] = (a[first] & (1 - a[second])) * 1 + (a[second] & (1 - a[first])) * 2
    compact[..., 7] = a["jump"]
    return compact


def from_compact(compact: ArrayLike) -> dict[str, Any] | list:
    """Compact actions -> MineRL env action dicts (camera at the bin centre, ``float32``).

    Returns one dict for a ``(9,)`` input, else nested lists of dicts matching the batch shape.
    """
    array = validate_compact(compact)
    if array.ndim > 1:
        return [from_compact(row) for row in array]
    action = noop()
    action["camera"] = MINEWORLD_CAMERA.undiscretize(array[:2]).astype(np.float32)
    if array[2]:
        action[HOTBAR_KEYS[array[2] - 1]] = 1
    for slot, first, second in _PAIR_SLOTS:
        if array[slot]:
            action[first if array[slot] == 1 else second] = 1
    action["jump"] = int(array[7])
    return action


# --- MineWorld tokens --------------------------------------------------------------------------------------------


def compact_to_tokens(compact: ArrayLike, offset: int = ACTION_VOCAB_OFFSET, *, validate: bool = True) -> np.ndarray:
    """Compact ``[..., 9]`` -> token ids ``[..., 11]`` (local ids + ``offset``; 8192 gives the official ids).

    ``validate=False`` skips the range check for arrays :func:`validate_compact` already returned.
    """
    array = validate_compact(compact) if validate else compact
    tokens = np.empty(array.shape[:-1] + (TOKENS_PER_ACTION,), dtype=np.int64)
    tokens[..., 0] = _BOS_LOCAL
    tokens[..., 1] = _CAM_PITCH_LOCAL + array[..., 0]
    tokens[..., 2] = _CAM_YAW_LOCAL + array[..., 1]
    for i, table in enumerate(_SLOT_TOKENS):
        tokens[..., 3 + i] = table[array[..., 2 + i]]
    tokens[..., 10] = _EOS_LOCAL
    return tokens + offset


def tokens_to_compact(tokens: ArrayLike, offset: int = ACTION_VOCAB_OFFSET) -> np.ndarray:
    """Token ids ``[..., 11]`` -> compact ``[..., 9]``; a token that cannot occupy its slot raises ActionError."""
    local = np.asarray(tokens, dtype=np.int64) - offset
    if local.ndim == 0 or local.shape[-1] != TOKENS_PER_ACTION:
        raise ActionError(f"MineWorld action tokens need a trailing dimension of 11, got shape {local.shape}")

    def fail(slot: int, mask: np.ndarray) -> ActionError:
        index = tuple(int(i) for i in np.argwhere(mask)[0])
        return ActionError(f"token {int(local[index + (slot,)]) + offset} at {index} is not valid in action slot {slot}")

    for slot, expected in ((0, _BOS_LOCAL), (10, _EOS_LOCAL)):
        if (bad := local[..., slot] != expected).any():
            raise fail(slot, bad)
    compact = np.zeros(local.shape[:-1] + (len(COMPACT_NVEC),), dtype=np.int64)
    for slot, base in ((1, _CAM_PITCH_LOCAL), (2, _CAM_YAW_LOCAL)):
        bins = local[..., slot] - base
        if (bad := (bins < 0) | (bins >= MINEWORLD_CAMERA.n_bins)).any():
            raise fail(slot, bad)
        compact[..., slot - 1] = bins
    for i, table in enumerate(_SLOT_TOKENS):
        match = local[..., 3 + i, None] == table
        if (bad := ~match.any(axis=-1)).any():
            raise fail(3 + i, bad)
        compact[..., 2 + i] = match.argmax(axis=-1)
    return compact


def to_mineworld_tokens(actions: Any) -> np.ndarray:
    """MineRL actions (a dict, a list of dicts, or compact) -> official MineWorld token ids ``int64[..., 11]``."""
    return compact_to_tokens(to_compact(actions), ACTION_VOCAB_OFFSET)


def from_mineworld_tokens(tokens: ArrayLike) -> np.ndarray:
    """Official MineWorld token ids ``[..., 11]`` -> compact ``int64[..., 9]`` (use ``from_compact`` for dicts)."""
    return tokens_to_compact(tokens, ACTION_VOCAB_OFFSET)


# --- VPT contractor recordings -----------------------------------------------------------------------------------

CAMERA_SCALER = 360.0 / 2400.0
"""Degrees per mouse pixel at Minecraft's default sensitivity (VPT ``run_inverse_dynamics_model.py``)."""

KEYBOARD_BUTTON_MAPPING: dict[str, str] = {
    "key.keyboard.escape": "ESC", "key.keyboard.s": "back", "key.keyboard.q": "drop", "key.keyboard.w": "forward",
    **{f"key.keyboard.{i}": f"hotbar.{i}" for i in range(1, 10)},
    "key.keyboard.e": "inventory", "key.keyboard.space": "jump", "key.keyboard.a": "left", "key.keyboard.d": "right",
    "key.keyboard.left.shift": "sneak", "key.keyboard.left.control": "sprint", "key.keyboard.f": "swapHands",
}  # fmt: skip
MOUSE_BUTTON_MAPPING: dict[int, str] = {0: "attack", 1: "use", 2: "pickItem"}

# MineWorld's ``MCDataset.json_action_to_env_action`` clears both keys of these pairs ("added by Yang").
MINEWORLD_CONFLICTS: tuple[tuple[str, str], ...] = (
    ("forward", "back"), ("left", "right"), ("jump", "sneak"), ("sprint", "sneak"), ("attack", "use"),
)  # fmt: skip


def _vpt_fields(line: Mapping[str, Any]) -> tuple[list, float, float, list]:
    # Recorder versions before 6.13 could write null for an idle mouse or keyboard: that means no input.
    try:
        keyboard = {"keys": []} if line["keyboard"] is None else line["keyboard"]
        mouse = {"dx": 0, "dy": 0, "buttons": []} if line["mouse"] is None else line["mouse"]
        keys = keyboard["keys"]
        dx, dy, buttons = mouse["dx"], mouse["dy"], mouse["buttons"]
    except (KeyError, TypeError) as error:
        raise ActionError(
            f"VPT contractor line lacks {error}; expected 'keyboard.keys', 'mouse.dx', 'mouse.dy', 'mouse.buttons' "
            "(or an env-format line with the 24 MineRL keys)"
        ) from None
    if not isinstance(keys, list) or not isinstance(buttons, list):
        raise ActionError(f"VPT 'keyboard.keys' and 'mouse.buttons' must be lists, got {keys!r} and {buttons!r}")
    if not all(isinstance(v, (int, float)) and np.isfinite(v) for v in (dx, dy)):
        raise ActionError(f"VPT 'mouse.dx'/'mouse.dy' must be finite numbers, got {dx!r}, {dy!r}")
    return keys, float(dx), float(dy), buttons


def from_vpt_jsonl(
    line: Mapping[str, Any],
    *,
    legacy_int_camera: bool = False,
    mineworld_conflicts: bool = False,
) -> dict[str, Any]:
    """A raw VPT contractor jsonl line -> MineRL env action.

    Follows VPT's ``json_action_to_env_action``: mapped keys and mouse buttons 0/1/2 (attack/use/pickItem) are
    pressed, ``camera = [dy, dx] * 0.15`` degrees. Lines already in env-action format (they contain ``"ESC"``)
    pass through, as in MineWorld's and GameWorld's copies of the converter.

    Args:
        line: one parsed jsonl object.
        legacy_int_camera: reproduce the reference code's truncation of the camera to whole degrees toward zero
            (its template camera is an integer array), for parity with published numbers. Off by default.
        mineworld_conflicts: also clear both keys of each conflicting pair as MineWorld's ``MCDataset`` does
            (forward+back, left+right, jump+sneak, sprint+sneak, attack+use).
    """
    if not isinstance(line, Mapping):
        raise ActionError(f"a VPT jsonl line must be a JSON object, got {type(line).__name__}")
    if "ESC" in line:
        return validate_env_action(line)
    keys, dx, dy, buttons = _vpt_fields(line)
    action = noop()
    for key in keys:
        if key in KEYBOARD_BUTTON_MAPPING:
            action[KEYBOARD_BUTTON_MAPPING[key]] = 1
    for button, name in MOUSE_BUTTON_MAPPING.items():
        if button in buttons:
            action[name] = 1
    camera = np.array([dy * CAMERA_SCALER, dx * CAMERA_SCALER], dtype=np.float64)
    action["camera"] = np.trunc(camera) if legacy_int_camera else camera
    if mineworld_conflicts:
        for first, second in MINEWORLD_CONFLICTS:
            if action[first] and action[second]:
                action[first] = action[second] = 0
    return action


def is_null_vpt_line(line: Mapping[str, Any], *, mineworld: bool = False) -> bool:
    """VPT's null-action flag: no mapped key held, no mouse motion, no mouse button 0/1/2 pressed.

    With ``mineworld=True`` a line holding ``inventory`` or ``ESC`` is null too, as in MineWorld's ``MCDataset``.
    Env-format lines (containing ``"ESC"``) are never null (the converters return ``False`` for them).
    """
    if "ESC" in line:
        return False
    keys, dx, dy, buttons = _vpt_fields(line)
    pressed = {KEYBOARD_BUTTON_MAPPING[k] for k in keys if k in KEYBOARD_BUTTON_MAPPING}
    pressed |= {name for button, name in MOUSE_BUTTON_MAPPING.items() if button in buttons}
    if mineworld and pressed & {"inventory", "ESC"}:
        return True
    return not pressed and dx == 0 and dy == 0
