"""PSNR / SSIM against an independent numpy + OpenCV transcription of common_metrics_on_video_quality's
``calculate_psnr.py`` / ``calculate_ssim.py`` (same loader, same operation order, one frame at a time)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from evaluation.metrics import psnr, ssim, summarize_per_frame
from evaluation.metrics.video import gaussian_kernel_1d
from worldmodels.errors import DataError, FrameError


def official_load(videos: np.ndarray) -> torch.Tensor:
    """common_metrics.load_videos_to_tensor after decoding: [N, T, C, H, W] float32 = uint8 / 255.0."""
    return torch.tensor(np.transpose(videos, (0, 1, 4, 2, 3)), dtype=torch.float32) / 255.0


def official_img_psnr(img1: np.ndarray, img2: np.ndarray) -> float:
    mse = np.mean((img1 / 1.0 - img2 / 1.0) ** 2)
    if mse < 1e-10:
        return 100
    return 20 * math.log10(1 / math.sqrt(mse))


def official_ssim_channel(img1: np.ndarray, img2: np.ndarray) -> float:
    c1, c2 = 0.01**2, 0.03**2
    img1, img2 = img1.astype(np.float64), img2.astype(np.float64)
    kernel = cv2.getGaussianKernel(11, 1.5)
    window = np.outer(kernel, kernel.transpose())
    mu1 = cv2.filter2D(img1, -1, window)[5:-5, 5:-5]
    mu2 = cv2.filter2D(img2, -1, window)[5:-5, 5:-5]
    mu1_sq, mu2_sq, mu1_mu2 = mu1**2, mu2**2, mu1 * mu2
    sigma1_sq = cv2.filter2D(img1**2, -1, window)[5:-5, 5:-5] - mu1_sq
    sigma2_sq = cv2.filter2D(img2**2, -1, window)[5:-5, 5:-5] - mu2_sq
    sigma12 = cv2.filter2D(img1 * img2, -1, window)[5:-5, 5:-5] - mu1_mu2
    ssim_map = ((2 * mu1_mu2 + c1) * (2 * sigma12 + c2)) / ((mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2))
    return ssim_map.mean()


def official_metric(videos1: np.ndarray, videos2: np.ndarray, frame_fn) -> dict:
    v1, v2 = official_load(videos1), official_load(videos2)
    results = np.array(
        [[frame_fn(v1[n, t].numpy(), v2[n, t].numpy()) for t in range(v1.shape[1])] for n in range(v1.shape[0])]
    )
    value = [np.mean(results[:, t]) for t in range(v1.shape[1])]
    value_std = [np.std(results[:, t]) for t in range(v1.shape[1])]
    return {"per_frame": results, "value": value, "value_std": value_std, "mean": np.mean(value)}


def official_ssim_frame(img1: np.ndarray, img2: np.ndarray) -> float:
    return np.array([official_ssim_channel(img1[i], img2[i]) for i in range(3)]).mean()


@pytest.fixture(scope="module")
def videos() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(3, 4, 30, 44, 3), dtype=np.uint8)
    smooth = cv2.GaussianBlur(a.reshape(-1, 44, 3), (5, 5), 1.0).reshape(a.shape)
    b = np.clip(smooth.astype(np.int64) + rng.integers(-25, 26, size=a.shape), 0, 255).astype(np.uint8)
    b[1, 2] = a[1, 2]  # one identical frame pair
    return a, b


def test_psnr_matches_official(videos):
    a, b = videos
    ours, ref = psnr(a, b), official_metric(a, b, official_img_psnr)
    # numpy's float32 pairwise mean differs from a correctly rounded float32 mean by at most about 1 float32 ulp
    np.testing.assert_allclose(ours["per_frame"], ref["per_frame"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours["per_step"], ref["value"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours["per_step_std"], ref["value_std"], rtol=0, atol=1e-6)
    assert ours["mean"] == pytest.approx(ref["mean"], abs=1e-6)
    assert ours["per_frame"][1][2] == 100.0
    assert len(ours["per_step"]) == 4 and len(ours["per_item"]) == 3


def test_ssim_matches_official(videos):
    a, b = videos
    ours, ref = ssim(a, b), official_metric(a, b, official_ssim_frame)
    np.testing.assert_allclose(ours["per_frame"], ref["per_frame"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours["per_step"], ref["value"], rtol=0, atol=1e-12)
    assert ours["mean"] == pytest.approx(ref["mean"], abs=1e-12)
    assert ours["per_frame"][1][2] == pytest.approx(1.0, abs=1e-12)


def test_identical_videos_and_torch_input(videos):
    a, _ = videos
    assert psnr(a, a)["mean"] == 100.0
    assert ssim(a, a)["mean"] == pytest.approx(1.0, abs=1e-12)
    a2, b2 = videos
    assert psnr(torch.from_numpy(a2), torch.from_numpy(b2)) == psnr(a2, b2)
    assert ssim(a2, b2, chunk_frames=1) == ssim(torch.from_numpy(a2), b2, chunk_frames=5)


def test_gaussian_kernel_is_opencvs():
    np.testing.assert_allclose(gaussian_kernel_1d(11, 1.5), cv2.getGaussianKernel(11, 1.5)[:, 0], rtol=0, atol=1e-16)
    assert gaussian_kernel_1d().sum() == pytest.approx(1.0, abs=1e-15)


def test_summary_reaggregates():
    per_frame = np.arange(12, dtype=np.float64).reshape(3, 4) ** 1.5
    summary = summarize_per_frame(per_frame)
    assert summary["per_step"] == pytest.approx(per_frame.mean(axis=0).tolist())
    assert summary["per_item"] == pytest.approx(per_frame.mean(axis=1).tolist())
    assert summary["mean"] == pytest.approx(per_frame.mean())
    subset = summarize_per_frame(np.array(summary["per_frame"])[[0, 2]])
    assert subset["per_step"] == pytest.approx(per_frame[[0, 2]].mean(axis=0).tolist())


def test_frame_errors(videos):
    a, b = videos
    with pytest.raises(FrameError, match="uint8"):
        psnr(a.astype(np.float32), b.astype(np.float32))
    with pytest.raises(FrameError, match="same shape"):
        ssim(a, b[:, :3])
    with pytest.raises(FrameError, match=r"\[N, T, H, W, 3\]"):
        psnr(a[0], b[0])
    with pytest.raises(FrameError, match="11x11"):
        ssim(a[:, :, :10], b[:, :, :10])
    with pytest.raises(FrameError, match="numpy array or torch tensor"):
        psnr(a.tolist(), b)


def test_cluster_bootstrap_resamples_whole_clusters():
    from evaluation.metrics.stats import cluster_bootstrap_mean

    values = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    # one cluster of ones, one of zeros: a resample holds 0, 1 or 2 copies of each, so its mean is 0, 1/2 or 1
    mean, low, high = cluster_bootstrap_mean(values, np.array([7, 7, 7, 9, 9, 9]), n_resamples=400, seed=3)
    assert (mean, low, high) == (0.5, 0.0, 1.0)
    # values without spread leave an interval without width
    assert cluster_bootstrap_mean(np.full(6, 0.25), np.arange(6)) == (0.25, 0.25, 0.25)
    with pytest.raises(DataError, match="one cluster id each"):
        cluster_bootstrap_mean(values, np.zeros(5))
