"""Flow-matching samplers for NFD frames: Euler and DPM-Solver++(2M) in data-prediction form.

Rectified flow: ``x_t = (1 - t) x0 + t eps`` (``alpha_t = 1 - t``, ``sigma_t = t``), the model predicts the velocity
``v = eps - x0``, so the data prediction is ``x0_hat = x_t - t v``. A frame is sampled from ``x_1 = eps`` along a
decreasing grid ``1 = t_0 > t_1 > ... > t_N = 0`` (optionally SD3-shifted: ``t' = s t / (1 + (s - 1) t)``).

* **Euler**: ``x_{i+1} = x_i + (t_{i+1} - t_i) v(x_i, t_i)``.
* **DPM-Solver++(2M)** (Lu et al. 2022, Algorithm 2), with ``lambda_t = log(alpha_t / sigma_t)``,
  ``h_i = lambda_{t_{i+1}} - lambda_{t_i}``:
  ``x_{i+1} = (sigma_{i+1} / sigma_i) x_i + (alpha_{i+1} - alpha_i sigma_{i+1} / sigma_i) D_i``, the exact solution of
  the ODE for a constant data prediction ``D_i``; first order ``D_i = x0_hat_i``, second order
  ``D_i = x0_hat_i + (x0_hat_i - x0_hat_{i-1}) / (2 r_i)`` with ``r_i = h_{i-1} / h_i``. The step out of ``t = 1``
  (``lambda = -inf``) is first order, which makes the second step first order too (``r = inf``), and the final step
  to ``t = 0`` is first order (``x_N = x0_hat``; diffusers' ``lower_order_final``).

RLIR evaluates NFD with DPM-Solver++ at 18 steps (``rlir_paper.md``); training rollouts use 10.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from worldmodels.errors import ConfigError

SAMPLERS = ("euler", "dpmpp2m")


@dataclass(frozen=True)
class NFDSampling:
    """How frames are sampled.

    Args:
        sampler: ``"euler"`` or ``"dpmpp2m"`` (DPM-Solver++(2M)).
        steps: denoising steps per frame (model evaluations).
        shift: SD3 time shift of the grid (1 = uniform in ``t``; > 1 spends more steps at high noise).
    """

    sampler: str = "euler"
    steps: int = 10
    shift: float = 1.0

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if isinstance(self.steps, bool) or int(self.steps) != self.steps or self.steps < 1:
            raise ConfigError(f"steps must be an integer >= 1, got {self.steps!r}")
        if not self.shift > 0 or math.isinf(self.shift):
            raise ConfigError(f"shift must be a finite number > 0, got {self.shift!r}")

    @classmethod
    def rlir_eval(cls) -> NFDSampling:
        """RLIR's NFD evaluation setting: DPM-Solver++ with 18 steps."""
        return cls(sampler="dpmpp2m", steps=18)


SAMPLER_NAMES = {"euler": "euler", "dpm-solver++": "dpmpp2m", "dpmpp2m": "dpmpp2m"}
"""User-facing sampler names (``rlir eval --sampler``, the NFD envs' ``sampler=``) -> :attr:`NFDSampling.sampler`."""
PUBLIC_NAME = {"euler": "euler", "dpmpp2m": "dpm-solver++"}


def choose_sampling(base: NFDSampling, sampler: str | None = None, steps: int | None = None) -> NFDSampling:
    """``base`` with the sampler and/or the number of steps replaced (``None`` keeps ``base``'s).

    Raises:
        ConfigError: an unknown sampler name or a step count < 1.
    """
    if sampler is not None and sampler not in SAMPLER_NAMES:
        raise ConfigError(f"unknown NFD sampler {sampler!r}; choose euler or dpm-solver++")
    return NFDSampling(sampler=base.sampler if sampler is None else SAMPLER_NAMES[sampler],
                       steps=base.steps if steps is None else steps, shift=base.shift)  # fmt: skip


def time_grid(steps: int, shift: float = 1.0) -> list[float]:
    """``steps + 1`` flow times from 1 down to 0 (uniform, then SD3-shifted), as Python floats (float64)."""
    grid = [1.0 - i / steps for i in range(steps + 1)]
    if shift != 1.0:
        grid = [shift * t / (1.0 + (shift - 1.0) * t) for t in grid]
    grid[0], grid[-1] = 1.0, 0.0
    return grid


def _log_snr(t: float) -> float:
    """``lambda_t = log((1 - t) / t)`` (``-inf`` at ``t = 1``, ``+inf`` at ``t = 0``)."""
    if t >= 1.0:
        return -math.inf
    if t <= 0.0:
        return math.inf
    return math.log1p(-t) - math.log(t)


class FlowSolver:
    """One frame's solver: call :meth:`step` with the velocity at ``times[i]`` for ``i = 0 .. steps - 1``.

    Holds the previous data prediction (DPM-Solver++(2M)); a new frame needs a new solver (:meth:`reset`).
    """

    def __init__(self, sampling: NFDSampling):
        self.sampling = sampling
        self.times = time_grid(sampling.steps, sampling.shift)
        self.reset()

    def reset(self) -> None:
        self._previous_x0: torch.Tensor | None = None
        self._index = 0

    def step(self, i: int, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``x`` at ``times[i + 1]`` from ``x`` and the velocity ``v`` at ``times[i]`` (all float32)."""
        if i != self._index:
            raise ValueError(f"FlowSolver steps must be taken in order: expected step {self._index}, got {i}")
        self._index += 1
        t, s = self.times[i], self.times[i + 1]
        if self.sampling.sampler == "euler":
            return x + (s - t) * v
        x0 = x - t * v
        if s <= 0.0:
            return x0
        data = x0
        if self._previous_x0 is not None and i >= 1:
            h = _log_snr(s) - _log_snr(t)
            h_previous = _log_snr(t) - _log_snr(self.times[i - 1])
            if math.isfinite(h_previous):
                r = h_previous / h
                data = x0 + (x0 - self._previous_x0) / (2.0 * r)
        self._previous_x0 = x0
        return (s / t) * x + ((1.0 - s) - (1.0 - t) * s / t) * data


def euler_step(x: torch.Tensor, v: torch.Tensor, t: float, s: float) -> torch.Tensor:
    """One Euler step of the flow ODE from time ``t`` to ``s``."""
    return x + (s - t) * v
