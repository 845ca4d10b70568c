"""Action domains: the one definition of an action per domain, shared by models, envs, IDMs and metrics.

``get_domain(name)`` returns an :class:`ActionDomain` that envs and models use without knowing the domain:
compact space, validation, no-op and the autoregressive token codec.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import gymnasium as gym
import numpy as np
from numpy.typing import ArrayLike

from worldmodels.actions import crafter, minecraft
from worldmodels.errors import ActionError


@dataclass(frozen=True)
class ActionDomain:
    """Domain-independent view of one action domain (see ``minecraft.py`` and ``crafter.py``)."""

    name: str
    compact_space: gym.Space
    compact_shape: tuple[int, ...]
    tokens_per_action: int
    action_vocab_size: int
    _module: ModuleType

    def validate(self, compact: ArrayLike) -> np.ndarray:
        """Check compact actions (batch dims first) and return them as ``int64``; raises ActionError."""
        return self._module.validate_compact(compact)

    def noop(self) -> np.ndarray:
        """The compact no-op action."""
        if self.name == "minecraft":
            return minecraft.to_compact(minecraft.noop())
        return np.zeros(self.compact_shape, dtype=np.int64)

    def to_tokens(self, compact: ArrayLike, offset: int) -> np.ndarray:
        """Compact actions ``[...]`` -> token ids ``[..., tokens_per_action]`` (local ids + ``offset``)."""
        return self._module.compact_to_tokens(compact, offset)

    def from_tokens(self, tokens: ArrayLike, offset: int) -> np.ndarray:
        """Token ids ``[..., tokens_per_action]`` -> compact actions."""
        return self._module.tokens_to_compact(tokens, offset)


DOMAINS: dict[str, ActionDomain] = {
    "minecraft": ActionDomain(
        name="minecraft",
        compact_space=minecraft.COMPACT_SPACE,
        compact_shape=(len(minecraft.COMPACT_NVEC),),
        tokens_per_action=minecraft.TOKENS_PER_ACTION,
        action_vocab_size=minecraft.ACTION_VOCAB_SIZE,
        _module=minecraft,
    ),
    "crafter": ActionDomain(
        name="crafter",
        compact_space=crafter.COMPACT_SPACE,
        compact_shape=(),
        tokens_per_action=crafter.TOKENS_PER_ACTION,
        action_vocab_size=crafter.ACTION_VOCAB_SIZE,
        _module=crafter,
    ),
}


def get_domain(name: str) -> ActionDomain:
    """The action domain called ``name`` (``"minecraft"`` or ``"crafter"``)."""
    try:
        return DOMAINS[name]
    except KeyError:
        raise ActionError(f"unknown action domain {name!r}; known domains: {sorted(DOMAINS)}") from None


__all__ = ["ActionDomain", "DOMAINS", "get_domain", "crafter", "minecraft"]
