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

    def compact_batch(self, actions, batch_shape: tuple[int, ...]) -> np.ndarray:
        """Actions for a batch -> ``int64[*batch_shape, *compact_shape]``: compact arrays or tensors, or (Minecraft)
        MineRL dicts nested as ``batch_shape`` lists; raises ActionError naming the expected shape."""
        if hasattr(actions, "detach"):  # a torch tensor (torch is not imported at this layer's import time)
            actions = actions.detach().cpu().numpy()
        compact = minecraft.to_compact(actions) if self.name == "minecraft" else self.validate(np.asarray(actions))
        expected = tuple(batch_shape) + tuple(self.compact_shape)
        if tuple(compact.shape) != expected:
            raise ActionError(
                f"expected {self.name} actions of shape {list(expected)} (compact form), got {list(compact.shape)}"
            )
        return compact

    def encode(self, actions, batch_shape: tuple[int, ...], offset: int) -> np.ndarray:
        """Actions for a batch -> token ids ``int64[*batch_shape, tokens_per_action]``: validated once
        (:meth:`compact_batch`), turned into tokens once (local ids + ``offset``)."""
        compact = self.compact_batch(actions, batch_shape)
        return self._module.compact_to_tokens(compact, offset, validate=False)

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
