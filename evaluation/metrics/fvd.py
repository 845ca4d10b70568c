"""Fréchet Video Distance with StyleGAN-V's protocol, as ``calculate_fvd(..., method='styleganv')`` computes it.

* **Detector:** StyleGAN-V's TorchScript I3D ``i3d_torchscript.pt`` (user-supplied; loaded with
  ``torch.jit.load``, which reads TorchScript archives and never unpickles Python objects), called as
  ``detector(x, rescale=False, resize=False, return_features=True)`` on batches of 10 videos -> 400-d features.
* **Preprocessing** (``preprocess_single``): frames ``uint8 / 255`` as ``float32``, layout ``[C, T, H, W]``; scale the
  shorter side to 224 with ``F.interpolate(..., mode='bilinear', align_corners=False)`` (target
  ``(224, ceil(w * 224 / h))`` when ``h < w``, else ``(ceil(h * 224 / w), 224)``; a no-op for MineWorld's 224x384),
  centre-crop 224x224 (start ``(size - 224) // 2``), map ``[0, 1] -> [-1, 1]`` as ``(x - 0.5) * 2``; the batch is
  ``[B, 3, T, 224, 224]``.
* **Distance** (StyleGAN-V ``compute_fvd``): ``mu = feats.mean(0)``, ``sigma = np.cov(feats, rowvar=False)``,
  ``|mu_g - mu_r|^2 + trace(sigma_g + sigma_r - 2 sqrtm(sigma_g @ sigma_r))`` with ``scipy.linalg.sqrtm``, real part.
* **Prefixes:** with ``only_final=False`` the FVD of every prefix ``T' = 10 .. T`` (``videos[:, :, :T']``);
  MineWorld reports the mean of these values. FVD depends on the number of videos; compare equal N only.

scipy is an optional dependency (``pip install 'rlir[metrics]'``) imported only when a distance is computed.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from evaluation.metrics.video import as_video_pair
from worldmodels.errors import CheckpointError, DataError, FrameError, MissingFileError

I3D_FILE = "i3d_torchscript.pt"
I3D_SOURCE = (
    "StyleGAN-V's TorchScript I3D, https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt "
    "(the file common_metrics_on_video_quality downloads into fvd/styleganv/)"
)
I3D_RESOLUTION = 224
MIN_FRAMES = 10
"""The shortest prefix ``calculate_fvd`` scores."""
BATCH_SIZE = 10


def load_i3d(path: str | Path, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """Load the TorchScript I3D detector in eval mode.

    Raises:
        MissingFileError: ``path`` does not exist (the message says where the file comes from).
        CheckpointError: the file is not a TorchScript archive.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{I3D_FILE} not found at {path}; supply {I3D_FILE}: {I3D_SOURCE}")
    try:
        with warnings.catch_warnings():  # torch marks TorchScript deprecated, but the official detector is one
            warnings.simplefilter("ignore", DeprecationWarning)
            detector = torch.jit.load(str(path), map_location="cpu")
    except Exception as error:
        raise CheckpointError(f"{path} is not a TorchScript archive ({I3D_FILE} expected): {error}") from None
    return detector.eval().to(torch.device(device))


def preprocess_videos(frames: torch.Tensor, resolution: int = I3D_RESOLUTION) -> torch.Tensor:
    """``uint8 [B, T, H, W, 3]`` -> the I3D input ``float32 [B, 3, T, resolution, resolution]`` in ``[-1, 1]``.

    Exactly StyleGAN-V's ``preprocess_single`` applied to each video (see the module docstring).
    """
    if frames.dtype != torch.uint8 or frames.ndim != 5 or frames.shape[-1] != 3:
        raise FrameError(f"frames must be uint8 [B, T, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
    b, t, h, w, c = frames.shape
    video = frames.permute(0, 4, 1, 2, 3).to(torch.float32) / 255.0  # [B, C, T, H, W]
    scale = resolution / min(h, w)
    target = (resolution, math.ceil(w * scale)) if h < w else (math.ceil(h * scale), resolution)
    # the reference interpolates each [C, T, H, W] video as a 4-D batch (C) of T-channel images
    video = F.interpolate(video.reshape(b * c, t, h, w), size=target, mode="bilinear", align_corners=False)
    video = video.reshape(b, c, t, *target)
    h_start, w_start = (target[0] - resolution) // 2, (target[1] - resolution) // 2
    video = video[..., h_start : h_start + resolution, w_start : w_start + resolution]
    return ((video - 0.5) * 2).contiguous()


def i3d_features(
    frames: torch.Tensor,
    detector: Any,
    prefix_lengths: list[int],
    *,
    device: str | torch.device = "cpu",
    batch_size: int = BATCH_SIZE,
) -> np.ndarray:
    """I3D features of every video prefix: ``uint8 [N, T, H, W, 3]`` -> ``float64 [len(prefix_lengths), N, D]``.

    Videos are fed in batches of ``batch_size`` as the reference does (each batch is preprocessed once and cut to
    every prefix, which equals preprocessing each prefix because the resize and crop act frame by frame).
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    per_prefix: list[list[np.ndarray]] = [[] for _ in prefix_lengths]
    with torch.no_grad():
        for start in range(0, frames.shape[0], batch_size):
            batch = preprocess_videos(frames[start : start + batch_size])
            for slot, length in enumerate(prefix_lengths):
                x = batch[:, :, :length].contiguous().to(device)
                feats = detector(x, rescale=False, resize=False, return_features=True)
                if not isinstance(feats, torch.Tensor) or feats.ndim != 2 or feats.shape[0] != x.shape[0]:
                    got = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
                    raise CheckpointError(f"the I3D detector must return features [batch, D], got {got}")
                per_prefix[slot].append(feats.detach().cpu().numpy().astype(np.float64))
    return np.stack([np.concatenate(chunks) for chunks in per_prefix])


def _sqrtm() -> Any:
    try:
        from scipy.linalg import sqrtm
    except ImportError as error:  # optional dependency
        raise ImportError(
            "FVD needs scipy (scipy.linalg.sqrtm); install it with: pip install 'rlir[metrics]'"
        ) from error
    return sqrtm


def frechet_distance(feats_fake: np.ndarray, feats_real: np.ndarray) -> float:
    """StyleGAN-V's ``compute_fvd``: Fréchet distance between Gaussians fitted to two feature sets ``[N, D]``."""
    fake, real = np.asarray(feats_fake, dtype=np.float64), np.asarray(feats_real, dtype=np.float64)
    if fake.ndim != 2 or real.ndim != 2 or fake.shape[1] != real.shape[1]:
        raise DataError(f"features must be [N, D] with the same D, got {fake.shape} and {real.shape}")
    if min(len(fake), len(real)) < 2:
        raise DataError(
            f"FVD needs at least 2 videos per set to estimate a covariance, got {len(fake)} and {len(real)}"
        )
    sqrtm = _sqrtm()
    mu_gen, sigma_gen = fake.mean(axis=0), np.cov(fake, rowvar=False)
    mu_real, sigma_real = real.mean(axis=0), np.cov(real, rowvar=False)
    m = np.square(mu_gen - mu_real).sum()
    sigma_gen, sigma_real = np.atleast_2d(sigma_gen), np.atleast_2d(sigma_real)
    s = sqrtm(np.dot(sigma_gen, sigma_real))
    return float(np.real(m + np.trace(sigma_gen + sigma_real - s * 2)))


def fvd(
    generated: Any,
    reference: Any,
    *,
    detector_path: str | Path | None = None,
    detector: Any = None,
    only_final: bool = False,
    device: str | torch.device = "cpu",
    batch_size: int = BATCH_SIZE,
    return_features: bool = False,
) -> dict[str, Any]:
    """FVD between generated and reference ``uint8 [N, T, H, W, 3]`` videos (StyleGAN-V protocol).

    Args:
        generated: the world model's videos (the reference code's ``videos1``, fitted as "fake").
        reference: the ground-truth videos, same shape.
        detector_path: ``i3d_torchscript.pt``; or pass an already loaded ``detector``.
        only_final: score only the full length instead of every prefix ``10 .. T``.
        device: where the detector runs.
        batch_size: videos per detector call (10 in the reference).
        return_features: also return the features (``float64 [P, N, D]``) so FVD can be re-computed on subsets or
            bootstrapped over videos.

    Returns:
        ``{"value": [FVD per prefix], "prefix_lengths": [...], "mean": mean of "value"}`` (``calculate_fvd``'s
        ``{"value": [...]}`` plus MineWorld's reported mean), and ``features_generated`` / ``features_reference``
        when asked.

    Raises:
        FrameError: fewer than 10 frames, or mismatched shapes.
        DataError: fewer than 2 videos.
        MissingFileError: no detector file.
    """
    a, b = as_video_pair(generated, reference)
    n, t = a.shape[:2]
    if t < MIN_FRAMES:
        raise FrameError(f"FVD needs clips of at least {MIN_FRAMES} frames (the I3D protocol), got {t}")
    if n < 2:
        raise DataError(f"FVD needs at least 2 videos per set, got {n}")
    if detector is None:
        if detector_path is None:
            raise MissingFileError(f"FVD needs detector_path ({I3D_FILE}: {I3D_SOURCE})")
        detector = load_i3d(detector_path, device)
    _sqrtm()  # fail before the expensive feature pass when scipy is missing
    prefixes = [t] if only_final else list(range(MIN_FRAMES, t + 1))
    feats_gen = i3d_features(a, detector, prefixes, device=device, batch_size=batch_size)
    feats_ref = i3d_features(b, detector, prefixes, device=device, batch_size=batch_size)
    values = [frechet_distance(g, r) for g, r in zip(feats_gen, feats_ref)]
    out: dict[str, Any] = {"value": values, "prefix_lengths": prefixes, "mean": float(np.mean(values))}
    if return_features:
        out["features_generated"], out["features_reference"] = feats_gen, feats_ref
    return out
