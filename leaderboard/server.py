"""The leaderboard's HTTP server (FastAPI, run by uvicorn; ``rlir leaderboard serve``), bound to 127.0.0.1 by default.

Endpoints:

* ``GET /`` — the HTML page (:func:`leaderboard.render.render_html`, sent with its Content-Security-Policy).
* ``GET /api/leaderboard?suite=NAME[&version=N][&evaluator_version=N]`` — the boards as JSON
  (:func:`leaderboard.render.payload`).
* ``GET /api/submissions/{id}`` — one stored submission.
* ``GET /api/health`` — ``{"ok": true, "schema_version": N}``.
* ``POST /api/submissions`` with ``Authorization: Bearer <token>`` (``rlir leaderboard token create NAME``). Body:
  ``Content-Type: application/json`` — the ``bundle.json`` bytes (tier self-reported); or
  ``Content-Type: application/zip`` — a zip of the bundle directory: ``bundle.json`` at the top and
  ``videos/<item>.npz`` (tier verified; :func:`leaderboard.client.pack_bundle` writes it). Answers ``201`` with
  ``{"submission": {...}}``; ``400`` malformed body, ``401`` missing/unknown token, ``409`` replayed bundle,
  ``413`` body over the size limit, ``415`` other content types, ``422`` failed validation, ``429`` over the
  per-token rate limit; every error is ``{"error": ..., "reasons": [...]}``.

Submissions go through :func:`leaderboard.validate.validate_submission`, the code ``rlir leaderboard submit`` runs
locally, and are acknowledged (201) only after their transaction committed (``synchronous=FULL``), so an
acknowledged submission survives a crash of the server.

Connection limits (:class:`LimitedH11Protocol`): at most ``max_connections`` open connections (default
:data:`DEFAULT_MAX_CONNECTIONS`; a connection beyond it is closed at once), and a connection must deliver a request's
complete headers within ``header_timeout`` seconds (default :data:`DEFAULT_HEADER_TIMEOUT`) of opening or of its
previous response, else it is closed, so half-open or trickling clients cannot hold the server. Idle keep-alive
connections close after 5 s (uvicorn's default).
"""

from __future__ import annotations

import io
import shutil
import sys
import tempfile
import threading
import time
import zipfile
from collections import deque
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse

from leaderboard.ranking import leaderboards
from leaderboard.render import HTML_CSP, payload, render_html
from leaderboard.seed import seed_if_empty
from leaderboard.store import Store, TokenRecord
from leaderboard.validate import SubmissionRejected, submit_local
from worldmodels.errors import DataError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8123
DEFAULT_MAX_BODY = 64 * 1024 * 1024
"""Room for a full crafter-af-v1 bundle with its videos (`rlir demo` writes about 38 MB); bundle.json alone is at most
:data:`leaderboard.validate.MAX_BUNDLE_BYTES`."""
DEFAULT_RATE_LIMIT = 10
"""Submissions per token per minute."""
UNZIPPED_FACTOR = 4
"""An archive may unpack to at most this multiple of the body limit (videos are compressed already)."""
MAX_ARCHIVE_MEMBERS = 100_000
DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_HEADER_TIMEOUT = 10.0


class RateLimiter:
    """At most ``limit`` events per ``window`` seconds per key (sliding window; thread-safe)."""

    def __init__(self, limit: int, window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self.clock = limit, window, clock
        self._events: dict[Any, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: Any) -> float | None:
        """Record an event; returns None when allowed, else the seconds until the next one would be."""
        now = self.clock()
        with self._lock:
            events = self._events.setdefault(key, deque())
            while events and events[0] <= now - self.window:
                events.popleft()
            if len(events) >= self.limit:
                return events[0] + self.window - now
            events.append(now)
            return None


def _error(status: int, error: str, reasons: list[str], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "reasons": reasons}, status_code=status, headers=headers)


def create_app(
    store: Store,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    rate_limit: int = DEFAULT_RATE_LIMIT,
    rate_window: float = 60.0,
) -> FastAPI:
    """The ASGI app over ``store``: body limit ``max_body_bytes``, ``rate_limit`` submissions per token per
    ``rate_window`` seconds (counting every authenticated attempt, accepted or not)."""
    app = FastAPI(title="rlir leaderboard", docs_url=None, redoc_url=None, openapi_url=None)
    limiter = RateLimiter(rate_limit, rate_window)

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        return {"ok": True, "schema_version": store.schema_version}

    @app.get("/api/leaderboard")
    def leaderboard(suite: str | None = None, version: int | None = None, evaluator_version: int | None = None):
        return payload(leaderboards(store, suite=suite, version=version, evaluator_version=evaluator_version))

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        headers = {
            "Content-Security-Policy": HTML_CSP + "; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        }
        return HTMLResponse(render_html(leaderboards(store)), headers=headers)

    @app.get("/api/submissions/{submission_id}")
    def submission(submission_id: int):
        try:
            return {"submission": store.submission(submission_id).to_json()}
        except (DataError, OverflowError):
            return _error(404, "not found", [f"no submission with id {submission_id}"])

    @app.post("/api/submissions")
    async def submit(request: Request):
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        challenge = {"WWW-Authenticate": "Bearer"}
        if scheme.lower() != "bearer" or not token.strip():
            reason = "send `Authorization: Bearer <token>` (`rlir leaderboard token create NAME` makes one)"
            return _error(401, "unauthorized", [reason], challenge)
        record = await run_in_threadpool(store.verify_token, token.strip())
        if record is None:
            return _error(401, "unauthorized", ["unknown or revoked token"], challenge)
        wait = limiter.hit(record.id)
        if wait is not None:
            reason = f"at most {rate_limit} submissions per {rate_window:g} s per token; retry in {wait:.0f} s"
            return _error(429, "too many requests", [reason], {"Retry-After": str(max(1, round(wait)))})
        reason = (f"the body exceeds {max_body_bytes} bytes; submit bundle.json alone, or ask the operator for a "
                  "larger --max-body-mb")  # fmt: skip
        too_large = _error(413, "payload too large", [reason])
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > max_body_bytes):
            return too_large
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in ("application/json", "application/zip"):
            reason = (f"content type {content_type or 'none'!r}: send application/json (bundle.json) or "
                      "application/zip (bundle.json + videos/)")  # fmt: skip
            return _error(415, "unsupported media type", [reason])
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body_bytes:
                return too_large
        try:
            stored = await run_in_threadpool(_accept, store, body, content_type, record, max_body_bytes)
        except SubmissionRejected as error:
            kind = {400: "malformed submission", 409: "duplicate submission"}.get(error.status, "rejected")
            return _error(error.status, kind, error.reasons)
        except (DataError, FileNotFoundError) as error:
            return _error(400, "malformed submission", [str(error)])
        return JSONResponse({"submission": stored.to_json()}, status_code=201,
                            headers={"Location": f"/api/submissions/{stored.id}"})  # fmt: skip

    return app


def _accept(store: Store, body: bytearray, content_type: str, token: TokenRecord, max_body_bytes: int):
    """Validate and store one submission body (runs in a worker thread); what it stores is owned by the token's id,
    shown under the token's name."""
    submitter, owner = token.name, token.principal
    if content_type == "application/json":
        return submit_local(body, store, submitter=submitter, owner=owner)
    directory = Path(tempfile.mkdtemp(prefix="rlir-submission-"))
    try:
        extract_bundle_zip(body, directory, max_bytes=UNZIPPED_FACTOR * max_body_bytes)
        videos_dir = directory if (directory / "videos").is_dir() else None
        return submit_local(directory, store, submitter=submitter, videos_dir=videos_dir, owner=owner)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def extract_bundle_zip(data: bytes, directory: Path, *, max_bytes: int) -> None:
    """Unpack a submission archive: only ``bundle.json`` and ``videos/<name>.npz`` members, no path tricks, at most
    ``max_bytes`` unpacked (counted while copying, not taken from the archive's own claims).

    Raises:
        DataError: not a zip, unexpected members, or too large.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as error:
        raise DataError(f"the body is not a readable zip archive ({error})") from None
    if len(members) > MAX_ARCHIVE_MEMBERS:
        raise DataError(f"the archive has {len(members)} members (at most {MAX_ARCHIVE_MEMBERS})")
    files = [m for m in members if not m.is_dir()]
    names = [m.filename for m in files]
    bad = [n for n in names if not _allowed_member(n)]
    if bad:
        shown = ", ".join(repr(n[:80]) for n in bad[:5])
        raise DataError(f"unexpected archive members {shown}: a submission holds bundle.json and videos/<item>.npz")
    if len(set(names)) != len(names):
        raise DataError("the archive lists a file twice")
    if "bundle.json" not in names:
        raise DataError("the archive has no bundle.json at its top level")
    total = 0
    (directory / "videos").mkdir(parents=True, exist_ok=True)
    for member in files:
        with archive.open(member) as source, open(directory / member.filename, "wb") as target:
            while chunk := source.read(1 << 20):
                total += len(chunk)
                if total > max_bytes:
                    raise DataError(f"the archive unpacks to more than {max_bytes} bytes")
                target.write(chunk)
    if not any(n.startswith("videos/") for n in names):
        (directory / "videos").rmdir()


def _allowed_member(name: str) -> bool:
    if name == "bundle.json":
        return True
    if "\\" in name or "\0" in name or name.startswith("/"):
        return False
    parts = PurePosixPath(name).parts
    return len(parts) == 2 and parts[0] == "videos" and parts[1].endswith(".npz") and parts[1] not in (".npz",) \
        and not parts[1].startswith(".")  # fmt: skip


def limited_protocol(max_connections: int, header_timeout: float) -> type:
    """uvicorn's h11 protocol with a connection cap and a header deadline (see the module docstring)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class LimitedH11Protocol(H11Protocol):
        _header_timer = None
        _waiting_cycle = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                transport.close()  # over the cap: refuse before reading anything
                return
            self._await_headers()

        def _await_headers(self) -> None:
            self._waiting_cycle = self.cycle  # a new request replaces the cycle once its headers are complete
            self._header_timer = self.loop.call_later(header_timeout, self._headers_overdue)

        def _headers_overdue(self) -> None:
            if self.cycle is self._waiting_cycle and not self.transport.is_closing():
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._header_timer is not None and self.cycle is not self._waiting_cycle:
                self._header_timer.cancel()
                self._header_timer = None

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._await_headers()

        def connection_lost(self, exc) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            super().connection_lost(exc)

    return LimitedH11Protocol


def serve(
    db: str | Path | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    rate_limit: int = DEFAULT_RATE_LIMIT,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    seed: bool = True,
) -> None:
    """Run the server until interrupted (the seed suites and bundles are added to an empty store first)."""
    import uvicorn

    store = Store(db)
    if seed:
        report = seed_if_empty(store)
        for note in report.notes if report is not None else ():
            print(f"note: {note}", file=sys.stderr)
    app = create_app(store, max_body_bytes=max_body_bytes, rate_limit=rate_limit)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False,
                http=limited_protocol(max_connections, header_timeout))  # fmt: skip
