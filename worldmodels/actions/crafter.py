"""The Crafter action domain: ``Discrete(17)`` and its world-model token codec.

Crafter (``danijar/crafter``) has 17 discrete actions. The compact form is the action index itself
(``int64[...]``, no trailing dimension). Autoregressive world models see each step as 3 tokens
``[<act_bos>, action, <act_eos>]``, mirroring MineWorld's ``[<act_bos>, 9 slots, <act_eos>]`` layout.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from numpy.typing import ArrayLike

from worldmodels.actions.common import require_integers
from worldmodels.errors import ActionError

ACTION_NAMES: tuple[str, ...] = (
    "noop", "move_left", "move_right", "move_up", "move_down", "do", "sleep", "place_stone", "place_table",
    "place_furnace", "place_plant", "make_wood_pickaxe", "make_stone_pickaxe", "make_iron_pickaxe",
    "make_wood_sword", "make_stone_sword", "make_iron_sword",
)  # fmt: skip
"""Crafter's actions in index order (``crafter.constants.actions``)."""

N_ACTIONS = len(ACTION_NAMES)
ACTION_SPACE = gym.spaces.Discrete(N_ACTIONS)
COMPACT_SPACE = ACTION_SPACE

TOKENS_PER_ACTION = 3
_BOS_LOCAL, _EOS_LOCAL = N_ACTIONS, N_ACTIONS + 1
ACTION_VOCAB_SIZE = N_ACTIONS + 2


def validate_compact(compact: ArrayLike) -> np.ndarray:
    """Check Crafter actions (any shape of integers in ``[0, 17)``) and return them as ``int64``."""
    array = require_integers(np.asarray(compact), "Crafter actions")
    bad = (array < 0) | (array >= N_ACTIONS)
    if bad.any():
        raise ActionError(
            f"Crafter action {int(array[bad].flat[0])} is outside Discrete({N_ACTIONS}); "
            f"valid actions are 0..{N_ACTIONS - 1} ({', '.join(ACTION_NAMES)})"
        )
    return array


def action_index(name: str) -> int:
    """Index of a named action, e.g. ``action_index("do") == 5``."""
    try:
        return ACTION_NAMES.index(name)
    except ValueError:
        raise ActionError(f"unknown Crafter action {name!r}; valid names: {', '.join(ACTION_NAMES)}") from None


def compact_to_tokens(compact: ArrayLike, offset: int, *, validate: bool = True) -> np.ndarray:
    """Actions ``[...]`` -> token ids ``[..., 3]`` = ``[bos, action, eos] + offset``.

    ``validate=False`` skips the range check for arrays :func:`validate_compact` already returned.
    """
    array = validate_compact(compact) if validate else np.asarray(compact)
    tokens = np.stack(np.broadcast_arrays(np.int64(_BOS_LOCAL), array, np.int64(_EOS_LOCAL)), axis=-1)
    return tokens + offset


def tokens_to_compact(tokens: ArrayLike, offset: int) -> np.ndarray:
    """Token ids ``[..., 3]`` -> actions ``[...]``; malformed tokens raise ActionError."""
    local = np.asarray(tokens, dtype=np.int64) - offset
    if local.ndim == 0 or local.shape[-1] != TOKENS_PER_ACTION:
        raise ActionError(f"Crafter action tokens need a trailing dimension of 3, got shape {local.shape}")
    if (local[..., 0] != _BOS_LOCAL).any() or (local[..., 2] != _EOS_LOCAL).any():
        raise ActionError(f"Crafter action tokens must be [bos={_BOS_LOCAL + offset}, a, eos={_EOS_LOCAL + offset}]")
    return validate_compact(local[..., 1])
