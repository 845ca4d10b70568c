"""Submitting to a leaderboard server (``rlir leaderboard submit BUNDLE_DIR --server URL --token T``).

Light on purpose (httpx and the standard library): a submitting machine needs nothing else. The payload is the
``bundle.json`` bytes (``application/json``), or with videos a zip of ``bundle.json`` and the ``videos/<item>.npz``
files the bundle lists (``application/zip``); see :mod:`leaderboard.server`.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

from worldmodels.errors import DataError, MissingFileError, RlirError

TOKEN_ENV = "RLIR_LEADERBOARD_TOKEN"


class SubmissionFailed(RlirError, ValueError):
    """The server refused a submission; ``status`` is the HTTP status and ``reasons`` what it said."""

    def __init__(self, status: int, reasons: list[str], error: str = "") -> None:
        self.status, self.reasons = status, list(reasons)
        super().__init__(f"the server answered {status} {error}: " + "; ".join(self.reasons))


def pack_bundle(bundle_dir: str | Path, *, include_videos: bool = True) -> tuple[bytes, str]:
    """``(body, content type)`` for a bundle directory: the zip with the listed videos when ``include_videos`` and
    the bundle lists videos that exist, else ``bundle.json`` alone."""
    directory = Path(bundle_dir)
    file = directory / "bundle.json" if directory.is_dir() else directory
    if not file.is_file():
        raise MissingFileError(f"result bundle {file} not found; `rlir eval --out DIR` writes DIR/bundle.json")
    raw = file.read_bytes()
    if not include_videos or not directory.is_dir():
        return raw, "application/json"
    try:
        videos = json.loads(raw).get("videos") or {}
    except (ValueError, AttributeError):
        return raw, "application/json"  # let the server say what is wrong with it
    if not videos:
        return raw, "application/json"
    missing = [path for path in videos.values() if not (directory / path).is_file()]
    if missing:
        raise MissingFileError(
            f"{len(missing)} video(s) listed in {file} are missing (first: {missing[0]}); pass --no-videos to submit "
            "the bundle alone (self-reported tier)"
        )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("bundle.json", raw, compress_type=zipfile.ZIP_DEFLATED)
        for relative in sorted(set(videos.values())):
            archive.write(directory / relative, relative, compress_type=zipfile.ZIP_STORED)  # npz is compressed
    return buffer.getvalue(), "application/zip"


def submit_remote(bundle_dir: str | Path, server: str, token: str, *, include_videos: bool = True,
                  timeout: float = 600.0) -> dict[str, Any]:  # fmt: skip
    """POST a bundle to ``server``; returns the stored submission (the server's ``submission`` object).

    Raises:
        SubmissionFailed: any non-201 answer, with the server's reasons.
        DataError: the server cannot be reached.
    """
    import httpx

    if not token:
        raise SubmissionFailed(401, [f"no token: pass --token or set ${TOKEN_ENV}"])
    body, content_type = pack_bundle(bundle_dir, include_videos=include_videos)
    url = server.rstrip("/") + "/api/submissions"
    try:
        response = httpx.post(url, content=body, timeout=timeout,
                              headers={"Authorization": f"Bearer {token}", "Content-Type": content_type})  # fmt: skip
    except httpx.HTTPError as error:
        raise DataError(f"cannot reach the leaderboard at {url}: {error}") from None
    try:
        answer = response.json()
    except ValueError:
        answer = {"error": response.reason_phrase, "reasons": [response.text[:500]]}
    if response.status_code != 201:
        raise SubmissionFailed(response.status_code, answer.get("reasons") or [str(answer)], answer.get("error", ""))
    return answer["submission"]
