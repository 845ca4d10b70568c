"""Flow-GRPO's stochastic sampler for rectified-flow models: an SDE with the ODE's marginals, its Gaussian steps'
log-probabilities, and the closed-form KL between two policies' steps.

Rectified flow ``x_t = (1 - t) x0 + t eps`` with velocity ``v``; time runs from 1 (noise) to 0 (data), ``dt < 0``.
Flow-GRPO (``flow_grpo/diffusers_patch/sd3_sde_with_logprob.py``, ``sde_type="sde"``) replaces the ODE
``dx = v dt`` by

    dx = [v + sigma_t^2 / (2 t) (x + (1 - t) v)] dt + sigma_t dW,    sigma_t = a sqrt(t / (1 - t)),

whose marginals equal the ODE's when ``v`` is the true velocity (the score is ``-(x + (1 - t) v) / t``). An
Euler-Maruyama step from ``t`` to ``s`` is Gaussian:

    mean = x (1 + sigma_t^2 dt / (2 t)) + v (1 + sigma_t^2 (1 - t) / (2 t)) dt,    std = sigma_t sqrt(-dt).

At ``t = 1`` the denominator ``1 - t`` vanishes; Flow-GRPO substitutes the next grid time there
(``sigma_t = a sqrt(1 / (1 - t_1))``), and so do we. Everything is computed in float32 (Flow-GRPO: bf16 overflows
here). The log-probability of a step is the Gaussian log-density **averaged** over the latent dimensions, as
Flow-GRPO and DanceGRPO compute it (``log_prob.mean(dim=tuple(range(1, log_prob.ndim)))``), so a step's importance
ratio is the geometric mean of its per-dimension ratios and stays close to 1 (see ``posttrain.flow.config`` for the
clip range this implies).
"""

from __future__ import annotations

import math

import torch

SDE_TYPES = ("flow", "dance")
"""``flow``: Flow-GRPO's ``sigma_t = a sqrt(t / (1 - t))``; ``dance``: DanceGRPO's constant ``sigma_t = a``."""


def sde_sigma(t: torch.Tensor, t_first: float, noise_level: float, sde_type: str = "flow") -> torch.Tensor:
    """The diffusion coefficient ``sigma_t`` at times ``t`` (``t_first``: the grid's second time, used at ``t = 1``)."""
    t = t.float()
    if sde_type == "dance":
        return torch.full_like(t, float(noise_level))
    if sde_type != "flow":
        raise ValueError(f"sde_type must be one of {SDE_TYPES}, got {sde_type!r}")
    denominator = 1.0 - torch.where(t >= 1.0, torch.full_like(t, float(t_first)), t)
    return noise_level * torch.sqrt(t / denominator)


def sde_step(
    x: torch.Tensor,
    v: torch.Tensor,
    t: torch.Tensor,
    s: torch.Tensor,
    *,
    t_first: float,
    noise_level: float,
    sde_type: str = "flow",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, std)`` of the Gaussian SDE step from ``t`` to ``s < t`` (``t``, ``s``: per sample ``[B]`` or scalars;
    ``x``, ``v``: ``[B, ...]``); float32. ``std`` broadcasts against ``x``."""
    x, v = x.float(), v.float()
    t = torch.as_tensor(t, dtype=torch.float32, device=x.device).reshape(-1, *([1] * (x.ndim - 1)))
    s = torch.as_tensor(s, dtype=torch.float32, device=x.device).reshape(-1, *([1] * (x.ndim - 1)))
    dt = s - t
    sigma = sde_sigma(t, t_first, noise_level, sde_type)
    mean = x * (1.0 + sigma**2 / (2.0 * t) * dt) + v * (1.0 + sigma**2 * (1.0 - t) / (2.0 * t)) * dt
    return mean, sigma * torch.sqrt(-dt)


def gaussian_logprob(sample: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``log N(sample; mean, std^2)`` averaged over all but the first dimension (``[B]``), float32; ``sample`` is
    treated as data (detached)."""
    sample, mean = sample.detach().float(), mean.float()
    std = std.float().expand_as(mean)
    density = -((sample - mean) ** 2) / (2.0 * std**2) - torch.log(std) - 0.5 * math.log(2.0 * math.pi)
    return density.flatten(1).mean(1)


def gaussian_mean_kl(mean: torch.Tensor, mean_ref: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``KL(N(mean, std^2) || N(mean_ref, std^2))`` per dimension, averaged (``[B]``): ``(mean - mean_ref)^2 / (2
    std^2)`` with the step's own ``std = sigma_t sqrt(-dt)`` (Flow-GRPO's SD3 script divides by ``sigma_t^2`` alone, its
    Wan script by the full ``std^2``; we use the full step std, consistent with the log-probabilities)."""
    std = std.float().expand_as(mean)
    return ((mean.float() - mean_ref.float()) ** 2 / (2.0 * std**2)).flatten(1).mean(1)


def select_train_steps(generator: torch.Generator, steps: int, fraction: float, frames: int) -> torch.Tensor:
    """Per frame, ``max(1, int(fraction * (steps - 1)))`` of the ``steps - 1`` non-final denoising steps, drawn
    without replacement (DanceGRPO: a random permutation, the first ``int(T * fraction)``), sorted: ``int64[frames,
    k]``. The final step (to ``t = 0``) is never trained: its Gaussian is nearly degenerate."""
    if steps < 2:
        raise ValueError(f"Flow-GRPO needs at least 2 sampling steps (one trainable), got {steps}")
    k = max(1, int(fraction * (steps - 1)))
    rows = [torch.randperm(steps - 1, generator=generator)[:k].sort().values for _ in range(frames)]
    return torch.stack(rows)
