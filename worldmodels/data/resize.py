"""``cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)`` for uint8 images, bit for bit, in torch.

The VPT IDM was trained on frames squashed to 128x128 by OpenCV's bilinear resize, and its authors warn that other
resizers change its predictions. ``torch.nn.functional.interpolate(mode="bilinear")`` differs from OpenCV by up to
one grey level on uint8 input because OpenCV works in fixed point. This module reproduces OpenCV's arithmetic
(``imgproc/src/resize.cpp``, ``resizeGeneric_`` with ``HResizeLinear`` + ``VResizeLinear<uchar, int, short>``):

1. Per output column ``d``: ``f = float32((d + 0.5) * (src / dst) - 0.5)``, ``s = floor(f)``, ``f -= s``; columns
   are clamped (``s < 0`` -> ``s = 0, f = 0``; ``s >= src - 1`` -> ``s = src - 1, f = 0``). Weights are
   ``rint(float32(1 - f) * 2048)`` and ``rint(f * 2048)`` (``INTER_RESIZE_COEF_BITS = 11``, round half to even).
2. Rows get the same coefficients, but OpenCV does *not* zero the fraction at the borders: it only clamps the two
   source row indices. (A border row read twice with weights ``(a, b)`` can round differently from weight
   ``2048`` on one row, so this matters.)
3. Horizontal pass in int32: ``H = S[s] * a0 + S[s + 1] * a1`` (at most ``255 * 2048``).
4. Vertical pass with the formula of OpenCV's vectorised kernel (``VResizeLinearVec_32s8u``), which the uint8 path
   uses for every column: ``(((H0 >> 4) * b0 >> 16) + ((H1 >> 4) * b1 >> 16) + 2) >> 2``. It truncates twice, so it
   is *not* ``round((H0 * b0 + H1 * b1) / 2**22)``.

OpenCV's special case for an exact 2x downscale (it switches to ``INTER_AREA``: ``(a + b + c + d + 2) >> 2``) gives
the same numbers as the formula above (weights 1024/1024 make every shift exact), and an unchanged size is a
copy. Verified identical to opencv-python 5.0.0 on random images from 1x1 to 1000x360, up- and downscales, 1, 3
and 4 channels (``tests/test_idm_resize.py``).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from worldmodels.errors import FrameError

COEF_BITS = 11
"""OpenCV's ``INTER_RESIZE_COEF_BITS``: interpolation weights are integers summing to ``2**11``."""

_COEF_SCALE = 1 << COEF_BITS


@functools.lru_cache(maxsize=64)
def linear_coefficients(src: int, dst: int, *, clamp_fraction: bool) -> tuple[np.ndarray, ...]:
    """OpenCV's fixed-point bilinear taps for one axis.

    Args:
        src: input length along the axis.
        dst: output length along the axis.
        clamp_fraction: ``True`` for columns (OpenCV zeroes the fraction outside the image), ``False`` for rows
            (OpenCV only clamps the row indices).

    Returns:
        ``(index0, index1, weight0, weight1)``, ``int64[dst]`` each; ``weight0 + weight1 == 2048``.
    """
    scale = 1.0 / (dst / src)  # OpenCV: scale_x = 1. / inv_scale_x, inv_scale_x = (double)dst / src
    centre = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    first = np.floor(centre).astype(np.int64)
    frac = (centre - first.astype(np.float32)).astype(np.float32)
    if clamp_fraction:
        low, high = first < 0, first >= src - 1
        frac[low | high] = 0.0
        first[low] = 0
        first[high] = src - 1
    index0 = np.clip(first, 0, src - 1)
    index1 = np.clip(first + 1, 0, src - 1)
    weight0 = np.rint((np.float32(1.0) - frac) * np.float32(_COEF_SCALE)).astype(np.int64)
    weight1 = np.rint(frac * np.float32(_COEF_SCALE)).astype(np.int64)
    for array in (index0, index1, weight0, weight1):
        array.setflags(write=False)
    return index0, index1, weight0, weight1


def resize_linear_uint8(frames: torch.Tensor, height: int, width: int, *, chunk: int = 64) -> torch.Tensor:
    """Bilinear squash-resize of channels-last uint8 images, bit-exact with OpenCV's ``INTER_LINEAR``.

    Args:
        frames: ``uint8[..., H, W, C]`` (any number of leading axes, any channel count), on any device.
        height: output height.
        width: output width.
        chunk: images processed per step (bounds the int32 intermediates).

    Returns:
        ``uint8[..., height, width, C]`` on the input's device; a copy when the size is unchanged.

    Raises:
        FrameError: ``frames`` is not a uint8 tensor with at least 3 dimensions, or a size is not positive.
    """
    if not isinstance(frames, torch.Tensor) or frames.dtype != torch.uint8 or frames.ndim < 3:
        got = f"{frames.dtype} {tuple(frames.shape)}" if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise FrameError(f"resize_linear_uint8 needs a uint8 tensor [..., H, W, C], got {got}")
    if height < 1 or width < 1 or min(frames.shape[-3:-1]) < 1:
        raise FrameError(f"cannot resize {tuple(frames.shape[-3:-1])} to ({height}, {width}): sizes must be >= 1")
    *lead, src_h, src_w, channels = frames.shape
    if (src_h, src_w) == (height, width):
        return frames.clone()
    device = frames.device
    y0, y1, b0, b1 = (torch.tensor(a, device=device) for a in linear_coefficients(src_h, height, clamp_fraction=False))
    x0, x1, a0, a1 = (torch.tensor(a, device=device) for a in linear_coefficients(src_w, width, clamp_fraction=True))
    a0, a1 = a0.to(torch.int32)[:, None], a1.to(torch.int32)[:, None]  # broadcast over channels
    b0, b1 = b0.to(torch.int32)[:, None, None], b1.to(torch.int32)[:, None, None]  # over columns and channels

    def horizontal(rows: torch.Tensor) -> torch.Tensor:  # [n, h, W, C] uint8 -> [n, h, width, C] int32
        rows = rows.to(torch.int32)
        return rows.index_select(2, x0) * a0 + rows.index_select(2, x1) * a1

    flat = frames.reshape(-1, src_h, src_w, channels)
    out = torch.empty((flat.shape[0], height, width, channels), dtype=torch.uint8, device=device)
    for start in range(0, flat.shape[0], chunk):
        part = flat[start : start + chunk]
        top = horizontal(part.index_select(1, y0))
        bottom = horizontal(part.index_select(1, y1))
        value = ((((top >> 4) * b0) >> 16) + (((bottom >> 4) * b1) >> 16) + 2) >> 2
        out[start : start + chunk] = value.clamp_(0, 255).to(torch.uint8)
    return out.reshape(*lead, height, width, channels)
