"""worldmodels.data.resize: torch resize bit-exact with cv2.resize(..., INTER_LINEAR) on uint8 images."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from worldmodels.data.resize import linear_coefficients, resize_linear_uint8
from worldmodels.errors import FrameError


def _cv2(img: np.ndarray, height: int, width: int) -> np.ndarray:
    out = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
    return out[..., None] if out.ndim == 2 else out


def _ours(img: np.ndarray, height: int, width: int) -> np.ndarray:
    return resize_linear_uint8(torch.from_numpy(img), height, width).numpy()


def _images(height: int, width: int, channels: int, seed: int) -> list[np.ndarray]:
    """Noise, a smooth gradient and saturated blocks: rounding differences show up in all three differently."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    yy, xx = np.meshgrid(np.linspace(0, 255, height), np.linspace(0, 255, width), indexing="ij")
    gradient = np.repeat(((yy + xx) / 2).astype(np.uint8)[..., None], channels, axis=-1)
    blocks = (rng.integers(0, 2, (height, width, channels)) * 255).astype(np.uint8)
    return [noise, gradient, blocks]


@pytest.mark.parametrize(
    ("src_w", "src_h"),
    [
        (640, 360),  # VPT contractor videos
        (384, 224),  # MineWorld generations
        (64, 64),  # upscale
        (256, 256),  # exact 2x: OpenCV switches to INTER_AREA
        (512, 512),  # exact 4x (stays bilinear)
        (255, 257),
        (129, 127),
        (33, 45),
        (1000, 17),
        (7, 300),
        (128, 128),  # unchanged size: a copy
        (1, 1),
    ],
)
def test_bit_exact_to_128(src_w: int, src_h: int) -> None:
    for img in _images(src_h, src_w, 3, seed=src_w * 1000 + src_h):
        np.testing.assert_array_equal(_ours(img, 128, 128), _cv2(img, 128, 128))


@pytest.mark.parametrize(
    ("src_w", "src_h", "dst_w", "dst_h", "channels"),
    [
        (640, 360, 5, 7, 3),
        (640, 360, 100, 90, 3),
        (50, 50, 77, 13, 3),
        (300, 200, 150, 100, 1),  # exact 2x, one channel
        (640, 360, 33, 128, 4),
        (31, 17, 64, 64, 1),
        (300, 200, 1, 1, 3),
    ],
)
def test_bit_exact_other_sizes_and_channels(src_w: int, src_h: int, dst_w: int, dst_h: int, channels: int) -> None:
    for img in _images(src_h, src_w, channels, seed=dst_w):
        np.testing.assert_array_equal(_ours(img, dst_h, dst_w), _cv2(img, dst_h, dst_w))


def test_batched_leading_axes_equal_per_image() -> None:
    rng = np.random.default_rng(3)
    video = rng.integers(0, 256, (2, 3, 90, 160, 3), dtype=np.uint8)
    out = resize_linear_uint8(torch.from_numpy(video), 128, 128, chunk=4)
    assert out.shape == (2, 3, 128, 128, 3) and out.dtype == torch.uint8
    for b in range(2):
        for t in range(3):
            np.testing.assert_array_equal(out[b, t].numpy(), _cv2(video[b, t], 128, 128))


def test_differs_from_float_bilinear() -> None:
    """Guards the point of this module: plain float bilinear is off by one grey level somewhere on noise."""
    img = np.random.default_rng(4).integers(0, 256, (360, 640, 3), dtype=np.uint8)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    naive = torch.nn.functional.interpolate(x, size=(128, 128), mode="bilinear", align_corners=False)
    naive = naive.round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
    reference = _cv2(img, 128, 128)
    assert np.abs(naive.astype(int) - reference).max() >= 1
    np.testing.assert_array_equal(_ours(img, 128, 128), reference)


def test_coefficients_sum_to_2048_and_stay_in_range() -> None:
    for src, dst in [(640, 128), (360, 128), (64, 128), (3, 128), (128, 1)]:
        for clamp in (True, False):
            i0, i1, w0, w1 = linear_coefficients(src, dst, clamp_fraction=clamp)
            assert np.all(w0 + w1 == 2048)
            assert i0.min() >= 0 and i1.max() <= src - 1


def test_rejects_non_uint8() -> None:
    with pytest.raises(FrameError, match="uint8"):
        resize_linear_uint8(torch.zeros(4, 4, 3), 2, 2)
    with pytest.raises(FrameError, match="sizes must be >= 1"):
        resize_linear_uint8(torch.zeros(4, 4, 3, dtype=torch.uint8), 0, 2)
