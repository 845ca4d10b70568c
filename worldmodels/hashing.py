"""sha256 of files, arrays and JSON documents: the identities that suites, bundles and registries pin."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_array(array: np.ndarray) -> str:
    """Hex sha256 of an array's dtype, shape and C-order bytes (so a reshaped or re-typed array differs)."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256()
    digest.update(f"{array.dtype.str}|{array.shape}|".encode())
    digest.update(array.data)
    return digest.hexdigest()


def canonical_json(value: Any) -> bytes:
    """The canonical JSON encoding hashed by :func:`sha256_json`: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def sha256_json(value: Any) -> str:
    """Hex sha256 of a JSON-serialisable value in canonical form."""
    return hashlib.sha256(canonical_json(value)).hexdigest()
