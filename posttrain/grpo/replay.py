"""Teacher-forced log-probabilities of the generated image tokens of a rollout batch.

For every context window of the rollout (:class:`~worldmodels.mineworld.ContextWindow`) one causal forward runs over
``[frame, action, frame, action, ..., frame]`` at positions from 0 (the exact context each token was sampled with,
slides included), and the logits that predict the window's generated image tokens are kept; context frames, kept
frames and action tokens are never scored. Log-probabilities are an fp32 log-softmax over the *image* vocabulary of
``logits / temperature``, the distribution ``MineWorld`` samples from (action ids are never drawn).

Invariant (tested, and logged every iteration as ``ratio_first_microstep``): the trainer computes the old
log-probabilities with this same function, on the same micro-batches, under ``no_grad``, right before the first
update, so the first micro-step's forward reproduces them bit for bit and its importance ratio is exactly 1.
:func:`replay_mode` switches off the model's inference-only fused projections for that reason (with gradients off
they would run as one concatenated matmul, whose rounding may differ from the separate matmuls of the grad pass).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from posttrain.grpo.rollout import RolloutBatch
from worldmodels.errors import NumericalError


@contextmanager
def replay_mode(model) -> Iterator[None]:
    """Run the transformer's projections unfused (identical kernels with and without gradients)."""
    transformer = model.transformer
    fused = [m.fused for m in transformer.modules() if hasattr(m, "clear_fused")]
    transformer.set_fused_projections(False)
    try:
        yield
    finally:
        if fused and fused[0]:
            transformer.set_fused_projections(True)


def hidden_states(transformer, ids: torch.Tensor, *, gradient_checkpointing: bool = False) -> torch.Tensor:
    """``Transformer.hidden_states(ids)`` (positions ``0..S-1``, no cache), optionally recomputing every decoder
    layer in the backward pass (``torch.utils.checkpoint``) to trade compute for activation memory."""
    s = ids.shape[1]
    x = transformer.model.embed_tokens(ids)
    cos = transformer.model.rope_cos[:s].to(x.dtype)[None, :, None]
    sin = transformer.model.rope_sin[:s].to(x.dtype)[None, :, None]
    for layer in transformer.model.layers:
        if gradient_checkpointing and torch.is_grad_enabled():
            x = checkpoint(layer, x, cos, sin, use_reentrant=False)
        else:
            x = layer(x, cos, sin)
    return x


def segment_sequences(batch: RolloutBatch, samples: torch.Tensor):
    """Per context window: ``(ids int64[m, L], positions int64[n], frames range)``.

    ``ids`` is the window's token sequence for the ``m`` samples; ``positions`` are the sequence positions of its
    generated image tokens (``n = frames scored x hw``), in frame-major order; ``frames`` are the generated-frame
    indices (``0 .. F-1``) they belong to.
    """
    hw = batch.context_tokens.shape[-1]
    pair = hw + batch.action_tokens.shape[-1]
    frames = batch.sample_frames(samples)  # [m, C + F, hw]
    actions = batch.action_tokens[samples // batch.group_size]  # [m, C - 1 + F, A]
    for seg in batch.segments:
        f = frames[:, seg.first : seg.last + 1]
        act = actions[:, seg.first : seg.last]
        ids = torch.cat([torch.cat([f[:, :-1], act], dim=-1).flatten(1), f[:, -1]], dim=1)
        local = torch.arange(seg.first_scored - seg.first, seg.n_frames)  # scored frames, counted in the window
        positions = (local[:, None] * pair + torch.arange(hw)).flatten()
        scored = range(seg.first_scored - batch.n_context, seg.last + 1 - batch.n_context)
        yield ids, positions, scored


def replay_logprobs(
    model,
    batch: RolloutBatch,
    samples: torch.Tensor,
    *,
    temperature: float = 1.0,
    gradient_checkpointing: bool = False,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probabilities of the generated image tokens of ``samples`` (``int64[m]`` sample indices).

    Differentiable when gradients are enabled. Call inside :func:`replay_mode`.

    Returns:
        ``(logp float32[m, F, hw], entropy float32[m, F, hw] | None)``; the entropy of each token's distribution is
        computed without gradients (a diagnostic).
    """
    transformer = model.transformer
    device = model.device
    image_vocab = model.config.image_vocab_size
    m, n_frames, hw = len(samples), batch.n_frames, batch.tokens.shape[-1]
    logp_frames: list[torch.Tensor | None] = [None] * n_frames
    entropy = torch.empty(m, n_frames, hw, device=device) if with_entropy else None
    for ids, positions, scored in segment_sequences(batch, samples):
        ids = ids.to(device)
        positions = positions.to(device)
        hidden = hidden_states(transformer, ids[:, :-1], gradient_checkpointing=gradient_checkpointing)
        logits = transformer.head(hidden[:, positions - 1], vocab_limit=image_vocab).float()
        if temperature != 1.0:
            logits = logits / temperature
        log_softmax = F.log_softmax(logits, dim=-1)  # [m, n, V_image]
        targets = ids[:, positions]
        chosen = log_softmax.gather(-1, targets.unsqueeze(-1)).squeeze(-1).reshape(m, len(scored), hw)
        for j, frame in enumerate(scored):
            logp_frames[frame] = chosen[:, j]
        if entropy is not None:
            with torch.no_grad():
                ent = -(log_softmax.exp() * log_softmax).sum(-1).reshape(m, len(scored), hw)
                entropy[:, scored.start : scored.stop] = ent
    logp = torch.stack(logp_frames, dim=1)
    if not torch.isfinite(logp).all():
        raise NumericalError(
            "replayed log-probabilities contain NaN or -inf (a sampled token has zero probability under the "
            "policy, or the weights diverged); lower the learning rate or check the rollout's sampling settings"
        )
    return logp, entropy
