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


# -- capabilities beyond the core protocol: what the vector env's options and the post-trainer's rollouts need --------


@runtime_checkable
class AutoregressiveModel(Protocol):
    """A world model that samples each frame as discrete tokens (MineWorld and the bundled Crafter models).

    Slots are grouped for GRPO: ``n`` contexts x ``group_size`` members, slot ``p * group_size + g`` holding member
    ``g`` of context ``p``; each context is prefilled once and its cache copied to the group.
    """

    def token_sampling(self, **options: Any) -> Any:
        """The sampling settings :meth:`WorldModel.start` takes (``sampling=``), from the env's autoregressive options
        (``decoding``, ``window``, ``temperature``, ``top_p``, ``top_k``); options that are None keep the model's
        defaults."""
        ...

    def frame_tokens(self, frames: torch.Tensor) -> torch.Tensor:
        """Context frames ``uint8[n, T, H, W, 3]`` -> image tokens ``int64[n, T, hw]``."""
        ...

    def start_group(
        self, frames: torch.Tensor, actions: Any, generators: Sequence[torch.Generator] | None, *, group_size: int,
        sampling: Any = None, reference_frames: int | None = None, share_prefix: bool = True,
    ) -> Any:  # fmt: skip
        """:meth:`WorldModel.start` for ``n`` contexts ``uint8[n, T, H, W, 3]``, each prefilled once and fanned out to
        its group of ``group_size`` slots (``generators``: one per slot, ``n * group_size``)."""
        ...

    def start_group_tokens(
        self, frame_ids: torch.Tensor, actions: Any, generators: Sequence[torch.Generator] | None, *,
        group_size: int, sampling: Any = None, reference_frames: int | None = None, share_prefix: bool = True,
    ) -> Any:  # fmt: skip
        """:meth:`start_group` from the contexts' tokens (:meth:`frame_tokens`), which a replay of the rollout needs
        too: tokenized once."""
        ...

    def step_tokens(
        self, state: Any, actions: Any, *, return_logprobs: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Sample one frame per slot: image tokens ``int64[B, h, w]`` and, with ``return_logprobs``, each token's
        log-probability under the sampling distribution."""
        ...

    def context_windows(self, n_context: int, n_frames: int, reference_frames: int | None = None) -> tuple[Any, ...]:
        """The context windows (``first``, ``last``, ``first_scored`` frame) a rollout goes through as the model
        slides its context, so a teacher-forced replay can score every token under the context it was sampled in."""
        ...

    def copy_slots(self, state: Any, src_ids: Sequence[int], dst_ids: Sequence[int]) -> None:
        """Copy slots ``src_ids[i] -> dst_ids[i]`` (cache and window; not the generators)."""
        ...

    def detokenize(self, ids: torch.Tensor) -> torch.Tensor:
        """Image tokens ``int64[B, h, w]`` -> frames ``uint8[B, H, W, 3]``."""
        ...


@runtime_checkable
class DiffusionModel(Protocol):
    """A world model that denoises each frame's continuous latent (NFD), with step-level hooks so another sampler
    (e.g. Flow-GRPO's SDE) can drive the same cache: per frame ``begin_frame``, any number of ``velocity`` calls,
    ``end_frame``."""

    latent_shape: tuple[int, ...]
    """``(C, h, w)`` of one frame's latent."""

    def denoising_sampling(self, sampler: str | None = None, steps: int | None = None) -> Any:
        """The sampling settings :meth:`WorldModel.start` takes (``sampling=``): the model's own, with the env's
        ``sampler`` and ``steps`` when given."""
        ...

    def start_group(
        self, frames: torch.Tensor, actions: Any, generators: Sequence[torch.Generator], *, group_size: int,
        context_generators: Sequence[torch.Generator] | None = None, sampling: Any = None,
        reference_frames: int | None = None,
    ) -> Any:  # fmt: skip
        """Encode, context-noise and prefill each of ``n`` contexts once and fan it out to its group of slots."""
        ...

    def copy_slots(self, state: Any, src_ids: Sequence[int], dst_ids: Sequence[int]) -> None:
        """Copy slots ``src_ids[i] -> dst_ids[i]`` (cache and window; not the generators)."""
        ...

    def begin_frame(self, state: Any, actions: Any) -> None:
        """Start a new frame of every slot (slides full windows)."""
        ...

    def draw_noise(self, state: Any) -> torch.Tensor:
        """One frame of standard normal noise per slot, from the slots' generators."""
        ...

    def velocity(self, state: Any, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """The velocity of the new frames at ``x`` and flow time ``t``."""
        ...

    def end_frame(self, state: Any, latents: torch.Tensor) -> torch.Tensor:
        """Finish the frame with clean latents; returns them context-noised, as they entered the window."""
        ...

    def window_lengths(self, state: Any) -> Any:
        """``int64[B]`` frames in each slot's window (the last one pending): where the window of a new frame starts."""
        ...

    def window_latents(self, state: Any) -> torch.Tensor:
        """Each slot's window as the transformer sees it: context-noised latents ``[B, context_frames, C, h, w]``."""
        ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents ``[B, C, h, w]`` -> frames ``uint8[B, H, W, 3]``."""
        ...
