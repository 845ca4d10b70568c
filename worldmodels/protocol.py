"""The one small protocol every world model implements, so envs, the evaluator and the post-trainer can drive
any of them.

Conventions (see ARCHITECTURE.md):

* Frames are ``uint8`` RGB, channels last, ``[..., H, W, 3]`` at the model's native ``spec.frame_size``.
* Actions are batched integer arrays in the domain's *compact* form (``worldmodels.actions.get_domain``):
  ``int64[B, 9]`` for Minecraft (MineWorld's 9 slots), ``int64[B]`` for Crafter.
* A context of ``T`` frames carries the ``T - 1`` actions between them: ``frames[:, k + 1]`` is the result of
  ``actions[:, k]`` taken at ``frames[:, k]``; :meth:`WorldModel.step` appends one action and returns the frame
  it leads to.
* All randomness comes from one ``torch.Generator`` per environment slot, so a seed reproduces a rollout
  exactly on the same device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

import torch


@dataclass(frozen=True)
class ModelSpec:
    """Static facts about a world model that envs and evaluators need."""

    name: str
    """Registry name or a descriptive name (e.g. ``"mineworld-300m-16f"``, ``"crafter-ar-small"``)."""
    domain: str
    """Action domain: ``"minecraft"`` or ``"crafter"`` (see ``worldmodels.actions.get_domain``)."""
    frame_size: tuple[int, int]
    """Native frame ``(height, width)``."""
    fps: float
    """Frames per second of the data the model was trained on (used for rendering and videos)."""
    context_frames: int
    """How many frames fit in the model's context; longer rollouts slide the context window."""


@runtime_checkable
class WorldModel(Protocol):
    """A batched action-conditioned next-frame generator; ``B`` is the number of environments."""

    spec: ModelSpec

    def start(
        self,
        frames: torch.Tensor,
        actions: torch.Tensor,
        generators: Sequence[torch.Generator],
    ) -> Any:
        """Prefill the context of ``B`` environments.

        Args:
            frames: ``uint8[B, T, H, W, 3]`` context frames (``T >= 1``).
            actions: compact actions ``[B, T - 1, ...]`` between consecutive context frames.
            generators: one generator per environment; every random draw of that slot uses it.

        Returns:
            An opaque state object passed back to :meth:`step` and :meth:`reset_slots`.
        """
        ...

    def step(self, state: Any, actions: torch.Tensor) -> torch.Tensor:
        """Advance every environment by one action (compact ``[B, ...]``); returns ``uint8[B, H, W, 3]``."""
        ...

    def reset_slots(
        self,
        state: Any,
        env_ids: Sequence[int],
        frames: torch.Tensor,
        actions: torch.Tensor,
        generators: Sequence[torch.Generator] | None = None,
    ) -> None:
        """Restart the given environments from new contexts (``frames[len(env_ids), T, H, W, 3]``) in place."""
        ...
