"""Helpers shared by CLI subcommands: jsonl in/out and numpy-aware JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from worldmodels.errors import DataError


def to_jsonable(value: Any) -> Any:
    """numpy scalars/arrays -> plain Python, recursively (for ``json.dumps``)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


def iter_input_jsonl(path: str | None) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, parsed_value)`` from a jsonl file or stdin (``path`` None or ``-``); blank lines skipped."""
    stream: IO[str]
    name = "<stdin>" if path in (None, "-") else str(path)
    stream = sys.stdin if path in (None, "-") else Path(path).open(encoding="utf-8")
    try:
        for number, text in enumerate(stream, start=1):
            if not text.strip():
                continue
            try:
                yield number, json.loads(text)
            except json.JSONDecodeError as error:
                raise DataError(f"{name}:{number}: not valid JSON ({error.msg})") from None
    finally:
        if stream is not sys.stdin:
            stream.close()


def write_jsonl_line(value: Any, out: IO[str]) -> None:
    out.write(json.dumps(to_jsonable(value)) + "\n")
