"""Atomic file writes: a reader sees the old file or the new one, never a half-written one."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["atomic_output", "to_plain", "write_json"]


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` with ``os.replace``.

    The temporary name keeps ``path``'s suffix (so writers that pick a format from the extension still work) and
    lives in the same directory (so the final rename is atomic). On any exception the temporary file is removed and
    ``path`` is left untouched. The parent directory is created if missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 mode would survive the rename; a fresh random name gets the usual umask mode.
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(8)}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def to_plain(value: Any) -> Any:
    """numpy / torch scalars and arrays, paths and tuples -> plain JSON values, recursively."""
    if hasattr(value, "item") and hasattr(value, "tolist"):  # numpy and torch values, without importing torch
        return value.item() if getattr(value, "ndim", 0) == 0 else value.tolist()
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: str | os.PathLike, value: Any, *, indent: int | None = 2, durable: bool = False) -> Path:
    """Atomically write ``value`` (numpy and torch values made plain) as JSON; NaN and infinity are refused.

    Args:
        indent: ``None`` writes one compact line (per-item shards of a resumable run).
        durable: ``fsync`` before the rename, so the file survives a machine crash, not only a killed process.
    """
    path = Path(path)
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        json.dump(to_plain(value), f, indent=indent, allow_nan=False)
        if indent is not None:
            f.write("\n")
        if durable:
            f.flush()
            os.fsync(f.fileno())
    return path
