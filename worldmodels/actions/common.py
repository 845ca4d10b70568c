"""Checks shared by the action domains."""

from __future__ import annotations

import numpy as np

from worldmodels.errors import ActionError


def require_integers(array: np.ndarray, what: str) -> np.ndarray:
    """``array`` as ``int64`` if its dtype is an integer type, else :class:`ActionError` naming the first offending
    value. Booleans and floats are refused even when they hold whole numbers (``True``, ``np.float32(2.0)``): an
    action that arrives as one is a bug upstream (a flag or a policy's raw output), not an action id."""
    if array.size and (array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer)):
        flat = array.reshape(-1)
        value = flat[0]
        if array.dtype.kind in "fc":
            bad = ~np.isfinite(flat)
            value = flat[np.argmax(bad)] if bad.any() else value
        shown = value.item() if isinstance(value, np.generic) else value
        raise ActionError(f"{what} must be integers, got {shown!r} (dtype {array.dtype}); pass action ids as ints, "
                          "e.g. np.int64")  # fmt: skip
    return array.astype(np.int64)
