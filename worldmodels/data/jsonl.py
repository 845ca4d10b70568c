"""JSON Lines reading and writing, plus the atomic-write helper every writer in ``worldmodels.data`` uses.

Lines are parsed with ``json.loads`` only (MineWorld's ``inference.py`` uses ``eval``; we never do). The policy is
strict so nothing is silently dropped: every line must be one JSON object, blank lines are errors, ``NaN`` /
``Infinity`` are refused, and every error names the file and the 1-based line number. A final newline at the end
of the file is not a blank line.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from worldmodels.errors import DataError, MissingFileError
from worldmodels.runtime.files import atomic_output

__all__ = ["iter_jsonl", "read_jsonl", "write_jsonl", "count_jsonl_lines"]


def _refuse_constant(name: str) -> float:
    # json.loads accepts NaN/Infinity by default; they are not JSON and break downstream math.
    raise ValueError(f"non-finite number {name} is not valid JSON")


def iter_jsonl(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Stream the objects of a JSON Lines file, one per line.

    Raises:
        MissingFileError: ``path`` does not exist.
        DataError: a line is blank, is not valid JSON, is not a JSON object, or the file is not UTF-8; the message
            names the file and the 1-based line number.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"JSON Lines file {str(path)!r} does not exist; check the path")
    with open(path, encoding="utf-8", newline=None) as f:
        lineno = 0
        while True:
            try:
                raw = f.readline()
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{path}: line {lineno + 1} is not UTF-8 ({e.reason} at byte {e.start}); re-save the file as UTF-8"
                ) from e
            if not raw:
                return
            lineno += 1
            text = raw.rstrip("\n")
            if not text.strip():
                raise DataError(
                    f"{path}: line {lineno} is blank; every line must hold one JSON object (remove the blank line)"
                )
            try:
                obj = json.loads(text, parse_constant=_refuse_constant)
            except ValueError as e:
                raise DataError(f"{path}: line {lineno} is not valid JSON ({e}): {_preview(text)}") from e
            if not isinstance(obj, dict):
                raise DataError(
                    f"{path}: line {lineno} is a JSON {type(obj).__name__}, expected an object {{...}}: "
                    f"{_preview(text)}"
                )
            yield obj


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a whole JSON Lines file into a list of dicts (see :func:`iter_jsonl` for the errors)."""
    return list(iter_jsonl(path))


def count_jsonl_lines(path: str | os.PathLike) -> int:
    """Number of lines in a JSON Lines file without parsing them (a final newline does not add a line)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"JSON Lines file {str(path)!r} does not exist; check the path")
    count = 0
    last = b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def _to_json(value: Any) -> Any:
    # Actions often carry numpy scalars/arrays (camera); store them as plain JSON numbers/lists.
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_jsonl(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> int:
    """Atomically write ``rows`` (mappings) as JSON Lines, one compact object per line; returns the line count.

    Numpy scalars and arrays are converted to plain JSON numbers and lists.

    Raises:
        DataError: a row is not a mapping, holds a non-finite float, or holds something JSON cannot represent; the
            message gives the 0-based row index.
    """
    path = Path(path)
    count = 0
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise DataError(f"write_jsonl({str(path)!r}): row {i} is a {type(row).__name__}, expected a dict")
            try:
                f.write(json.dumps(dict(row), allow_nan=False, default=_to_json) + "\n")
            except (TypeError, ValueError) as e:
                raise DataError(f"write_jsonl({str(path)!r}): row {i} cannot be written as JSON ({e}): {row!r}") from e
            count += 1
    return count


def _preview(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")
