"""Mu-law camera quantizer shared by MineWorld's action tokenizer and the VPT inverse dynamics model.

Both reference implementations (VPT ``lib/actions.py::CameraQuantizer`` and MineWorld ``mcdataset.py``) clip the
angle to ``±maxval``, compress it with a mu-law curve, and round ``(encoded + maxval) / binsize`` with numpy's
half-to-even ``np.round``. We keep their float64 operation order so bin edges agree to the last bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from worldmodels.errors import ActionError


@dataclass(frozen=True)
class CameraQuantizer:
    """Maps camera angles in degrees to integer bins and back.

    Args:
        maxval: angles are clipped to ``[-maxval, maxval]`` degrees.
        binsize: bin width in the mu-law-encoded domain (degrees).
        mu: mu-law compression strength.
    """

    maxval: float
    binsize: float
    mu: float

    def __post_init__(self) -> None:
        ratio = 2 * self.maxval / self.binsize
        if self.maxval <= 0 or self.binsize <= 0 or self.mu <= 0 or ratio != int(ratio):
            raise ActionError(
                f"CameraQuantizer(maxval={self.maxval}, binsize={self.binsize}, mu={self.mu}) is invalid: all "
                "three must be positive and 2*maxval must be a multiple of binsize"
            )

    @property
    def n_bins(self) -> int:
        """Number of bins per axis (21 for MineWorld, 11 for the VPT IDM)."""
        return int(2 * self.maxval / self.binsize) + 1

    @property
    def zero_bin(self) -> int:
        """The bin of zero motion (10 for MineWorld, 5 for the VPT IDM)."""
        return self.n_bins // 2

    def discretize(self, angles: ArrayLike) -> np.ndarray:
        """Angles in degrees (any shape) -> ``int64`` bins of the same shape."""
        x = np.asarray(angles, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise ActionError(f"camera angles must be finite, got {x[~np.isfinite(x)][:4].tolist()}")
        x = np.clip(x, -self.maxval, self.maxval)
        x = x / self.maxval
        x = np.sign(x) * (np.log(1.0 + self.mu * np.abs(x)) / np.log(1.0 + self.mu))
        x = x * self.maxval
        return np.round((x + self.maxval) / self.binsize).astype(np.int64)

    def undiscretize(self, bins: ArrayLike) -> np.ndarray:
        """``int`` bins (any shape) -> bin-centre angles in degrees (``float64``)."""
        b = np.asarray(bins)
        if b.size and (not np.issubdtype(b.dtype, np.integer) or b.min() < 0 or b.max() >= self.n_bins):
            raise ActionError(f"camera bins must be integers in [0, {self.n_bins - 1}], got {b.ravel()[:8].tolist()}")
        x = b.astype(np.float64) * self.binsize - self.maxval
        x = x / self.maxval
        x = np.sign(x) * (1.0 / self.mu) * ((1.0 + self.mu) ** np.abs(x) - 1.0)
        return x * self.maxval

    def centres(self) -> np.ndarray:
        """Bin centres in degrees, ``float64[n_bins]``."""
        return self.undiscretize(np.arange(self.n_bins))


MINEWORLD_CAMERA = CameraQuantizer(maxval=90.0, binsize=9.0, mu=11.4887)
"""MineWorld's action tokenizer (``mcdataset.py``): 21 bins per axis, zero bin 10."""

VPT_IDM_CAMERA = CameraQuantizer(maxval=10.0, binsize=2.0, mu=10.0)
"""The VPT inverse dynamics model's camera head (``ActionTransformer`` mu-law kwargs): 11 bins, zero bin 5."""
