"""The GRPO algorithm as pure functions: group-normalised advantages, the token-level PPO clipped loss, the k3 KL to a
frozen reference, global token-mean aggregation and the diagnostics every iteration logs.

Notation (per token ``t`` of sample ``i``): ``logp`` = log-probability under the policy being trained,
``old_logp`` = the same under the policy that sampled (recomputed before the first update, see ``replay.py``),
``ratio = exp(logp - old_logp)``, ``A_i`` = the sample's advantage (broadcast to its tokens).

* Advantages (:func:`group_advantages`): ``A = (r - mean_group(r)) / (std + eps)`` with ``std`` the unbiased
  standard deviation of the group (``scale="group"``, GRPO / TRL / verl), of the whole batch (``"batch"``, Lite-PPO,
  TRL's ``scale_rewards="batch"``), or no division (``"none"``, Dr. GRPO); then clipped to ``[-clip, clip]``
  (Flow-GRPO, DanceGRPO: 5). A group whose rewards are all equal carries no signal: its advantages are 0 and the
  returned mask drops it from the backward pass (Flow-GRPO), which saves the replay of those samples.
* Policy loss (:func:`ppo_token_loss`): ``max(-A * ratio, -A * clip(ratio, 1 - eps_low, 1 + eps_high))`` per token
  (separate ``eps_low`` / ``eps_high``: DAPO's clip-higher).
* KL (:func:`k3_kl`): ``exp(ref - logp) - (ref - logp) - 1`` per token (Schulman's k3; verl's ``low_var_kl``,
  TRL's KL term), added as ``beta * kl``.
* Aggregation (:func:`grpo_loss`): the sum over the micro-batch's masked tokens divided by the number of masked
  tokens in the *whole accumulated batch* (all micro-batches, all ranks): the gradient summed over micro-batches
  and ranks is then exactly the gradient of one token-mean over the batch (DAPO's global normalisation). Every
  rollout has the same number of image tokens, so this equals TRL's ``grpo`` / ``bnpo`` / ``dr_grpo`` up to a
  constant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from worldmodels.errors import ConfigError, NumericalError

ADVANTAGE_SCALES = ("group", "batch", "none")


def group_advantages(
    rewards: np.ndarray | torch.Tensor,
    *,
    scale: str = "group",
    eps: float = 1e-4,
    clip: float | None = 5.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Group-normalised advantages of trajectory rewards ``[n_groups, group_size]`` (one row per prompt).

    Args:
        rewards: one scalar reward per rollout, grouped by prompt.
        scale: ``"group"`` divides by each group's std, ``"batch"`` by the std of all rewards, ``"none"`` only
            subtracts the group mean. Stds are unbiased (``ddof=1``, as ``torch.std``).
        eps: added to the std before dividing.
        clip: advantages are clipped to ``[-clip, clip]`` (``None``: no clipping).

    Returns:
        ``(advantages float64[n_groups, G], train bool[n_groups, G])``. ``train`` is False for every
        member of a group whose rewards are all exactly equal (its advantages are 0; skip it in the backward pass).

    Raises:
        ConfigError: unknown ``scale``, ``eps < 0``, ``clip <= 0``, or groups of fewer than 2 rollouts.
        NumericalError: a reward is NaN or infinite.
    """
    if scale not in ADVANTAGE_SCALES:
        raise ConfigError(f"advantage scale must be one of {ADVANTAGE_SCALES}, got {scale!r}")
    if not eps >= 0:
        raise ConfigError(f"advantage eps must be >= 0, got {eps!r}")
    if clip is not None and not clip > 0:
        raise ConfigError(f"advantage clip must be > 0 (or None for no clipping), got {clip!r}")
    r = rewards.detach().cpu().numpy() if isinstance(rewards, torch.Tensor) else np.asarray(rewards)
    r = r.astype(np.float64)
    if r.ndim != 2 or r.shape[1] < 2:
        raise ConfigError(f"rewards must be [n_groups, group_size] with group_size >= 2, got shape {r.shape}")
    if not np.isfinite(r).all():
        bad = np.argwhere(~np.isfinite(r))[0]
        raise NumericalError(f"reward of group {bad[0]}, member {bad[1]} is {r[tuple(bad)]}; rewards must be finite")
    centred = r - r.mean(axis=1, keepdims=True)
    if scale == "group":
        advantages = centred / (r.std(axis=1, ddof=1, keepdims=True) + eps)
    elif scale == "batch":
        advantages = centred / ((r.std(ddof=1) if r.size > 1 else 0.0) + eps)
    else:
        advantages = centred
    flat = (r.max(axis=1) == r.min(axis=1))[:, None]
    advantages = np.where(flat, 0.0, advantages)
    if clip is not None:
        advantages = np.clip(advantages, -clip, clip)
    train = np.broadcast_to(~flat, r.shape).copy()
    return advantages, train


def ppo_token_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    *,
    eps_low: float,
    eps_high: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token clipped surrogate ``max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high))`` and the ratio ``r``.

    ``advantages`` broadcasts against ``logp`` (e.g. ``[B, 1, 1]`` against ``[B, F, hw]``). The gradient is
    ``-A r dlogp`` where the unclipped term is the larger one, 0 where the clip is active (``r < 1 - eps_low`` with
    ``A < 0``, or ``r > 1 + eps_high`` with ``A > 0``).
    """
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    return torch.maximum(unclipped, clipped), ratio


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of ``KL(policy || reference)``: ``exp(ref - logp) - (ref - logp) - 1`` (>= 0)."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1.0


@dataclass
class LossStats:
    """Sums over the masked tokens of one micro-batch (add them over micro-batches and ranks, then divide by
    ``tokens``); ``ratio_min`` / ``ratio_max`` are extremes."""

    tokens: float = 0.0
    pg_loss: float = 0.0
    kl: float = 0.0
    ratio: float = 0.0
    ratio_min: float = float("inf")
    ratio_max: float = float("-inf")
    clip_low: float = 0.0
    clip_high: float = 0.0
    approx_kl: float = 0.0
    entropy: float = 0.0

    def add(self, other: LossStats) -> None:
        for name in ("tokens", "pg_loss", "kl", "ratio", "clip_low", "clip_high", "approx_kl", "entropy"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.ratio_min = min(self.ratio_min, other.ratio_min)
        self.ratio_max = max(self.ratio_max, other.ratio_max)

    def as_vector(self) -> torch.Tensor:
        """The sums as a float64 vector (for ``all_reduce``); extremes travel separately."""
        return torch.tensor(
            [self.tokens, self.pg_loss, self.kl, self.ratio, self.clip_low, self.clip_high, self.approx_kl,
             self.entropy], dtype=torch.float64,
        )  # fmt: skip

    @classmethod
    def from_vector(cls, vector: torch.Tensor, ratio_min: float, ratio_max: float) -> LossStats:
        v = vector.tolist()
        return cls(v[0], v[1], v[2], v[3], ratio_min, ratio_max, v[4], v[5], v[6], v[7])

    def means(self) -> dict[str, float]:
        """Per-token means: ``pg_loss``, ``kl_ref``, ``ratio_mean/min/max``, ``clip_frac_low/high``,
        ``approx_kl`` (``0.5 E[(logp - old_logp)^2]``) and ``entropy``."""
        n = max(self.tokens, 1.0)
        return {
            "pg_loss": self.pg_loss / n,
            "kl_ref": self.kl / n,
            "ratio_mean": self.ratio / n,
            "ratio_min": self.ratio_min if self.tokens else 1.0,
            "ratio_max": self.ratio_max if self.tokens else 1.0,
            "clip_frac_low": self.clip_low / n,
            "clip_frac_high": self.clip_high / n,
            "approx_kl": self.approx_kl / n,
            "entropy": self.entropy / n,
        }


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    total_tokens: float,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    beta: float = 0.0,
    ref_logp: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
) -> tuple[torch.Tensor, LossStats]:
    """One micro-batch's share of the GRPO loss, ``sum(mask * (pg + beta * kl)) / total_tokens``.

    Args:
        logp: ``float[B, ...]`` policy log-probs of the sampled tokens (with gradient).
        old_logp: the sampling policy's log-probs, same shape (no gradient).
        advantages: ``float[B]`` one advantage per sample.
        mask: ``bool[B, ...]`` tokens that count (the generated image tokens).
        total_tokens: masked tokens in the whole accumulated batch (every micro-batch on every rank), so that
            summing the micro-batch gradients gives the gradient of one global token-mean.
        eps_low, eps_high: the clip range ``[1 - eps_low, 1 + eps_high]``.
        beta: weight of the k3 KL to the reference (``ref_logp`` required when > 0).
        ref_logp: the frozen reference's log-probs.
        entropy: optional per-token entropies (diagnostics only).

    Returns:
        ``(loss, stats)``: the scalar to backpropagate and the micro-batch's token sums (see :class:`LossStats`).
    """
    if logp.shape != old_logp.shape or logp.shape != mask.shape:
        raise ValueError(
            f"logp {tuple(logp.shape)}, old_logp {tuple(old_logp.shape)} and mask {tuple(mask.shape)} must match"
        )
    if not total_tokens > 0:
        raise ValueError(f"total_tokens must be > 0, got {total_tokens}")
    if beta > 0 and ref_logp is None:
        raise ValueError("beta > 0 needs the reference log-probs (ref_logp)")
    adv = advantages.to(logp.dtype).reshape(-1, *([1] * (logp.ndim - 1)))
    weight = mask.to(logp.dtype)
    pg, ratio = ppo_token_loss(logp, old_logp, adv, eps_low=eps_low, eps_high=eps_high)
    per_token = pg
    kl = None
    if beta > 0:
        kl = k3_kl(logp, ref_logp)
        per_token = pg + beta * kl
    loss = (per_token * weight).sum() / total_tokens
    if not torch.isfinite(loss):
        raise NumericalError(
            f"GRPO loss is {loss.item()} (log-probs range [{logp.min().item()}, {logp.max().item()}]); check the "
            "model weights and lower the learning rate"
        )
    with torch.no_grad():
        selected = mask.bool()
        r = ratio[selected]
        delta = (logp - old_logp)[selected]
        adv_b = adv.expand_as(logp)[selected]
        stats = LossStats(
            tokens=float(selected.sum()),
            pg_loss=float(pg[selected].sum()),
            kl=float(kl[selected].sum()) if kl is not None else 0.0,
            ratio=float(r.sum()),
            ratio_min=float(r.min()) if r.numel() else float("inf"),
            ratio_max=float(r.max()) if r.numel() else float("-inf"),
            clip_low=float(((r < 1.0 - eps_low) & (adv_b < 0)).sum()),
            clip_high=float(((r > 1.0 + eps_high) & (adv_b > 0)).sum()),
            approx_kl=float(0.5 * (delta.double() ** 2).sum()),
            entropy=float(entropy[selected].sum()) if entropy is not None else 0.0,
        )
    return loss, stats
