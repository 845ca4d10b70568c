"""Frame-quality metrics PSNR and SSIM, as ``CIntellifusion/common_metrics_on_video_quality`` computes them.

MineWorld's ``metrics/common_metrics.py`` loads both video sets as ``float32`` tensors ``uint8 / 255`` and scores
every frame pair, then averages over videos per time step and over time steps. We take the ``uint8`` frames
``[N, T, H, W, 3]`` (numpy or torch), reproduce the same per-frame numbers in batched torch, and also return the
per-frame and per-item values so any subset of items can be re-aggregated (:func:`summarize_per_frame`).

* **PSNR** (``calculate_psnr.py``): ``mse = mean((a - b) ** 2)`` over ``3 x H x W`` with ``float32`` element
  operations and a ``float32`` result, ``psnr = 20 * log10(1 / sqrt(mse))``, or 100 when ``mse < 1e-10``. We sum
  the ``float32`` squares in float64 and round the mean to ``float32``; numpy's ``float32`` pairwise sum can differ
  from that by a few ``float32`` ulps, i.e. below 1e-6 dB.
* **SSIM** (``calculate_ssim.py``): per channel on ``float64(float32 frame)``, 11x11 Gaussian window
  (``cv2.getGaussianKernel(11, 1.5)`` outer product, applied here as two 1-D passes), ``C1 = 0.01**2``,
  ``C2 = 0.03**2``, statistics over the valid region (the 5-pixel border is cropped), map mean, then the mean over
  the 3 channels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from worldmodels.errors import FrameError

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2
PSNR_MAX = 100.0
"""PSNR reported for (near-)identical frames, ``mse < 1e-10``."""


def as_video_batch(videos: Any, name: str = "videos") -> torch.Tensor:
    """Check ``uint8 [N, T, H, W, 3]`` frames (numpy or torch) and return them as a CPU torch tensor.

    Raises:
        FrameError: wrong type, dtype, rank or channel count, or an empty axis.
    """
    if isinstance(videos, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(videos))
    elif isinstance(videos, torch.Tensor):
        tensor = videos.detach().cpu()
    else:
        raise FrameError(
            f"{name} must be a numpy array or torch tensor of uint8 [N, T, H, W, 3], got {type(videos).__name__}"
        )
    if tensor.dtype != torch.uint8:
        raise FrameError(f"{name} must be uint8 RGB frames [N, T, H, W, 3] in 0..255, got dtype {tensor.dtype}")
    if tensor.ndim != 5 or tensor.shape[-1] != 3 or 0 in tensor.shape:
        raise FrameError(f"{name} must have shape [N, T, H, W, 3] with no empty axis, got {tuple(tensor.shape)}")
    return tensor


def as_video_pair(generated: Any, reference: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate two frame batches of the same shape (see :func:`as_video_batch`)."""
    a, b = as_video_batch(generated, "generated"), as_video_batch(reference, "reference")
    if a.shape != b.shape:
        raise FrameError(
            f"generated {tuple(a.shape)} and reference {tuple(b.shape)} must have the same shape [N, T, H, W, 3]"
        )
    return a, b


def summarize_per_frame(per_frame: Any) -> dict[str, Any]:
    """Aggregate per-frame values ``[N, T]`` the official way.

    Returns:
        ``per_step`` (``T`` means over videos, each ``np.mean`` of a column), ``per_step_std`` (``np.std`` over
        videos, the official ``value_std``), ``mean`` (mean of ``per_step``, what MineWorld reports),
        ``per_item`` (``N`` means over time) and ``per_frame`` (the input as nested lists).
    """
    values = np.asarray(per_frame, dtype=np.float64)
    if values.ndim != 2 or 0 in values.shape:
        raise FrameError(f"per-frame values must be [N, T] with N, T >= 1, got shape {values.shape}")
    per_step = [float(np.mean(values[:, t])) for t in range(values.shape[1])]
    return {
        "per_step": per_step,
        "per_step_std": [float(np.std(values[:, t])) for t in range(values.shape[1])],
        "mean": float(np.mean(per_step)),
        "per_item": values.mean(axis=1).tolist(),
        "per_frame": values.tolist(),
    }


def _chunks(total: int, size: int) -> range:
    if size < 1:
        raise FrameError(f"chunk size must be >= 1, got {size}")
    return range(0, total, size)


def _as_float32(frames: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``uint8 [n, H, W, 3]`` -> ``float32 [n, 3, H, W]`` in [0, 1], the official loader's ``tensor / 255.0``."""
    return frames.to(device).permute(0, 3, 1, 2).to(torch.float32) / 255.0


# --------------------------------------------------------------------------------------------------------------
# PSNR


def psnr_per_frame(
    generated: Any, reference: Any, *, chunk_frames: int = 64, device: str | torch.device = "cpu"
) -> np.ndarray:
    """PSNR of every frame pair, ``float64 [N, T]`` (see the module docstring)."""
    a, b = as_video_pair(generated, reference)
    n, t = a.shape[:2]
    a, b = a.reshape(n * t, *a.shape[2:]), b.reshape(n * t, *b.shape[2:])
    device = torch.device(device)
    mse = np.empty(n * t, dtype=np.float32)
    for start in _chunks(n * t, chunk_frames):
        stop = min(start + chunk_frames, n * t)
        diff = _as_float32(a[start:stop], device) - _as_float32(b[start:stop], device)
        square = diff * diff
        mean = square.to(torch.float64).sum(dim=(1, 2, 3)) / square[0].numel()
        mse[start:stop] = mean.cpu().numpy().astype(np.float32)
    with np.errstate(divide="ignore"):
        values = np.where(mse < np.float32(1e-10), PSNR_MAX, 20.0 * np.log10(1.0 / np.sqrt(mse.astype(np.float64))))
    return values.reshape(n, t)


def psnr(
    generated: Any, reference: Any, *, chunk_frames: int = 64, device: str | torch.device = "cpu"
) -> dict[str, Any]:
    """PSNR of ``uint8 [N, T, H, W, 3]`` videos as ``calculate_psnr`` reports it.

    Returns:
        ``{"per_step": [T], "mean": float, "per_item": [N], "per_step_std": [T], "per_frame": [N][T]}``.
    """
    return summarize_per_frame(psnr_per_frame(generated, reference, chunk_frames=chunk_frames, device=device))


# --------------------------------------------------------------------------------------------------------------
# SSIM


def gaussian_kernel_1d(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """``cv2.getGaussianKernel(size, sigma)`` for ``sigma > 0`` (``float64[size]``, sums to 1).

    OpenCV computes ``exp(-x**2 / (2 sigma**2))`` at ``x = i - (size - 1) / 2`` and multiplies by ``1 / sum``.
    """
    x = np.arange(size, dtype=np.float64) - (size - 1) * 0.5
    weights = np.exp((-0.5 / (sigma * sigma)) * x * x)
    return weights * (1.0 / weights.sum())


def _valid_filter_matrix(size: int, device: torch.device) -> torch.Tensor:
    """``float64 [size, size - 10]``: column ``j`` holds the 1-D Gaussian at rows ``j .. j + 10``."""
    kernel = torch.from_numpy(gaussian_kernel_1d())
    matrix = torch.zeros(size, size - SSIM_WINDOW + 1, dtype=torch.float64)
    for j in range(size - SSIM_WINDOW + 1):
        matrix[j : j + SSIM_WINDOW, j] = kernel
    return matrix.to(device)


def ssim_per_frame(
    generated: Any, reference: Any, *, chunk_frames: int = 8, device: str | torch.device = "cpu"
) -> np.ndarray:
    """SSIM of every frame pair, ``float64 [N, T]`` (see the module docstring).

    Raises:
        FrameError: frames smaller than the 11x11 window (the valid region would be empty).
    """
    a, b = as_video_pair(generated, reference)
    n, t, h, w = a.shape[:4]
    if h < SSIM_WINDOW or w < SSIM_WINDOW:
        raise FrameError(f"SSIM needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {h}x{w}")
    a, b = a.reshape(n * t, h, w, 3), b.reshape(n * t, h, w, 3)
    device = torch.device(device)
    # 'valid' filtering == cv2.filter2D followed by the [5:-5, 5:-5] crop; the separable window runs as two banded
    # matrix products, which BLAS does far faster than a float64 conv2d
    rows, cols = _valid_filter_matrix(h, device).T, _valid_filter_matrix(w, device)
    out = np.empty(n * t, dtype=np.float64)
    for start in _chunks(n * t, chunk_frames):
        stop = min(start + chunk_frames, n * t)
        x = _as_float32(a[start:stop], device).to(torch.float64).reshape(-1, 1, h, w)
        y = _as_float32(b[start:stop], device).to(torch.float64).reshape(-1, 1, h, w)
        stats = torch.cat([x, y, x * x, y * y, x * y], dim=1)
        stats = rows @ (stats @ cols)
        mu1, mu2, e11, e22, e12 = stats.unbind(dim=1)
        mu1_sq, mu2_sq, mu1_mu2 = mu1**2, mu2**2, mu1 * mu2
        sigma1_sq, sigma2_sq, sigma12 = e11 - mu1_sq, e22 - mu2_sq, e12 - mu1_mu2
        ssim_map = ((2 * mu1_mu2 + SSIM_C1) * (2 * sigma12 + SSIM_C2)) / (
            (mu1_sq + mu2_sq + SSIM_C1) * (sigma1_sq + sigma2_sq + SSIM_C2)
        )
        out[start:stop] = ssim_map.mean(dim=(1, 2)).reshape(-1, 3).mean(dim=1).cpu().numpy()
    return out.reshape(n, t)


def ssim(
    generated: Any, reference: Any, *, chunk_frames: int = 8, device: str | torch.device = "cpu"
) -> dict[str, Any]:
    """SSIM of ``uint8 [N, T, H, W, 3]`` videos as ``calculate_ssim`` reports it.

    Returns:
        ``{"per_step": [T], "mean": float, "per_item": [N], "per_step_std": [T], "per_frame": [N][T]}``.
    """
    return summarize_per_frame(ssim_per_frame(generated, reference, chunk_frames=chunk_frames, device=device))
