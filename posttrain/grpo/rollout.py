"""Group rollouts of a MineWorld-architecture world model with a shared-prefix KV cache.

For each prompt (a suite item: ``C`` context frames, the ``C - 1`` actions between them and ``F`` commanded
actions) the engine

1. tokenizes the context and prefills it into **one** cache slot (one prefill per prompt, not per rollout);
2. copies that slot's KV cache into the other ``G - 1`` slots of the group (``MineWorld.copy_slots``);
3. decodes ``F`` frames for all ``P x G`` slots of the state together, feeding each commanded action as a small
   chunk of forced tokens (never sampled) and collecting the image tokens and the sampler's log-probabilities.

Every random draw comes from the slot's own ``torch.Generator``, seeded from ``(run seed, iteration, prompt id,
member)`` (:func:`~posttrain.data.member_generator`), so a rollout does not depend on which other prompts share its state or its
rank. Slot ``p * G + g`` holds member ``g`` of the state's ``p``-th prompt; samples are numbered the same way.

When a rollout outgrows the model's context, the model keeps the last ``reference_frames`` frames and re-prefills;
the model also plans those slides (``MineWorld.context_windows``), so the replay (``replay.py``) can score every token
under exactly the context it was sampled with; the engine checks that the slides it observes match the plan.

The engine drives the model through its public group-rollout hooks (:class:`worldmodels.protocol.
AutoregressiveModel`: ``frame_tokens``, ``start_group_tokens``, ``step_tokens``, ``context_windows``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from posttrain.data import ROLLOUT_STREAM, Prompts, member_generator
from worldmodels.errors import ConfigError
from worldmodels.mineworld.config import MineWorldConfig
from worldmodels.mineworld.model import ContextWindow
from worldmodels.mineworld.sampling import SamplingConfig

# -- context windows --------------------------------------------------------------------------------------------------


def _slide_steps(segments: Sequence[ContextWindow], n_context: int) -> list[int]:
    """Steps (0-based) before which the model slides its context, according to ``segments``."""
    return [s.first_scored - n_context for s in segments if s.first > 0]


# -- rollouts ---------------------------------------------------------------------------------------------------------


@dataclass
class RolloutBatch:
    """``P`` prompts x ``G`` rollouts; sample ``s`` is member ``s % G`` of prompt ``s // G``. Tensors on the CPU."""

    items: np.ndarray
    """``int64[P]`` suite item indices."""
    keys: np.ndarray
    """``int64[P]`` seed keys."""
    group_size: int
    context_tokens: torch.Tensor
    """``int64[P, C, hw]`` image tokens of the context frames."""
    action_tokens: torch.Tensor
    """``int64[P, C - 1 + F, A]`` every action's tokens: the context actions, then the commanded ones."""
    actions: np.ndarray
    """``int64[P, F, *A]`` the commanded compact actions."""
    tokens: torch.Tensor
    """``int64[P, G, F, hw]`` generated image tokens."""
    sampler_logprobs: torch.Tensor
    """``float32[P, G, F, hw]`` each token's log-probability under the sampling distribution."""
    segments: tuple[ContextWindow, ...]
    """The context windows the rollouts went through (the model's slides), for the replay."""
    sampling: SamplingConfig
    prefill_rows: int = 0
    """Cache rows prefilled from a context (``P`` with the shared prefix, ``P * G`` without)."""
    seconds: float = 0.0

    @property
    def n_prompts(self) -> int:
        return len(self.items)

    @property
    def n_samples(self) -> int:
        return self.n_prompts * self.group_size

    @property
    def n_context(self) -> int:
        return int(self.context_tokens.shape[1])

    @property
    def n_frames(self) -> int:
        return int(self.tokens.shape[2])

    def flat_tokens(self) -> torch.Tensor:
        """``int64[P * G, F, hw]`` generated tokens by sample."""
        return self.tokens.flatten(0, 1)

    def sample_frames(self, samples: torch.Tensor) -> torch.Tensor:
        """``int64[m, C + F, hw]`` context then generated frame tokens of ``samples`` (``int64[m]``)."""
        prompts = samples // self.group_size
        return torch.cat([self.context_tokens[prompts], self.flat_tokens()[samples]], dim=1)


def rollout(
    model,
    prompts: Prompts,
    *,
    group_size: int,
    sampling: SamplingConfig,
    seed: int,
    iteration: int,
    stream: int = ROLLOUT_STREAM,
    share_prefix: bool = True,
    prompts_per_state: int | None = None,
) -> RolloutBatch:
    """Sample ``group_size`` rollouts of every prompt (see the module docstring).

    Args:
        model: a ``MineWorld``.
        prompts: contexts and commanded actions (all with the same numbers of context and generated frames).
        group_size: rollouts per prompt.
        sampling: how tokens are drawn (GRPO: temperature 1, no truncation, naive or speculative decoding).
        seed, iteration, stream: seed the per-rollout generators (:func:`~posttrain.data.member_generator`).
        share_prefix: prefill each context once and copy it to the group (``False``: prefill every slot; same
            tokens, for tests and benchmarks).
        prompts_per_state: prompts decoded together in one batched state (``None``: all); bounds the KV-cache
            memory at ``prompts_per_state * group_size`` slots.
    """
    if group_size < 1:
        raise ConfigError(f"group_size must be >= 1, got {group_size}")
    if sampling.greedy:
        raise ConfigError("GRPO rollouts must sample (temperature > 0 and top_k != 1); greedy decoding has no policy")
    per_state = len(prompts) if prompts_per_state is None else int(prompts_per_state)
    if per_state < 1:
        raise ConfigError(f"prompts_per_state must be >= 1, got {prompts_per_state}")
    config: MineWorldConfig = model.config
    n_context, n_frames = int(prompts.context_frames.shape[1]), prompts.n_frames
    segments = model.context_windows(n_context, n_frames)
    expected_slides = _slide_steps(segments, n_context)
    device = model.device
    start = time.perf_counter()
    context_tokens, action_tokens, tokens, logprobs = [], [], [], []
    prefill_rows = 0
    with torch.no_grad():
        for begin in range(0, len(prompts), per_state):
            keys = prompts.keys[begin : begin + per_state]
            n = len(keys)
            rows = n * group_size
            generators = [
                member_generator(seed, iteration, int(p), g, stream=stream, device=device.type)
                for p in keys
                for g in range(group_size)
            ]
            frame_ids = model.frame_tokens(torch.as_tensor(prompts.context_frames[begin : begin + n]))
            state = model.start_group_tokens(frame_ids, prompts.context_actions[begin : begin + n], generators,
                                             group_size=group_size, sampling=sampling,
                                             share_prefix=share_prefix)  # fmt: skip
            prefill_rows += n if share_prefix else rows
            commanded = prompts.actions[begin : begin + n]
            chunk_tokens, chunk_logprobs, slides = [], [], []
            for k in range(n_frames):
                before = state.slides.copy()
                step_actions = np.repeat(commanded[:, k], group_size, axis=0)
                ids_k, lp_k = model.step_tokens(state, step_actions, return_logprobs=True)
                chunk_tokens.append(ids_k.reshape(rows, -1))
                chunk_logprobs.append(lp_k.reshape(rows, -1))
                moved = state.slides - before
                if moved.any():
                    if not moved.all():
                        raise RuntimeError(f"slots of one state slid at different steps ({moved.tolist()})")
                    slides.append(k)
            if slides != expected_slides:
                raise RuntimeError(
                    f"the model slid its context before steps {slides}, the replay plan expects {expected_slides}; "
                    "MineWorld.context_windows no longer plans the model's own slides"
                )
            all_actions = np.concatenate([prompts.context_actions[begin : begin + n], commanded], axis=1)
            action_tokens.append(model.action_tokens(all_actions, (n, n_context - 1 + n_frames)).cpu())
            context_tokens.append(frame_ids.cpu())
            hw = config.tokens_per_frame
            tokens.append(torch.stack(chunk_tokens, 1).reshape(n, group_size, n_frames, hw).cpu())
            logprobs.append(torch.stack(chunk_logprobs, 1).reshape(n, group_size, n_frames, hw).float().cpu())
    return RolloutBatch(
        items=np.asarray(prompts.items, dtype=np.int64),
        keys=np.asarray(prompts.keys, dtype=np.int64),
        group_size=group_size,
        context_tokens=torch.cat(context_tokens),
        action_tokens=torch.cat(action_tokens),
        actions=np.asarray(prompts.actions),
        tokens=torch.cat(tokens),
        sampler_logprobs=torch.cat(logprobs),
        segments=segments,
        sampling=sampling,
        prefill_rows=prefill_rows,
        seconds=time.perf_counter() - start,
    )


@torch.no_grad()
def decode_videos(model, batch: RolloutBatch, prompts: Prompts, *, chunk: int = 64) -> np.ndarray:
    """What the reward sees: ``uint8[P * G, F + 1, H, W, 3]``, each sample's last real context frame followed by
    its ``F`` generated frames (VQ-decoded)."""
    grid = model.config.image_grid
    flat = batch.flat_tokens().reshape(-1, *grid)
    frames = [model.detokenize(flat[i : i + chunk].to(model.device)).cpu() for i in range(0, len(flat), chunk)]
    generated = torch.cat(frames).numpy().reshape(batch.n_samples, batch.n_frames, *frames[0].shape[1:])
    context = np.repeat(prompts.context_frames[:, -1:], batch.group_size, axis=0)
    return np.concatenate([context, generated], axis=1)
