"""The verifying leaderboard: store (SQLite), submission validation, ranking with bootstrap CIs, views (terminal,
Markdown, JSON, HTML), HTTP server and client. ``rlir leaderboard --help`` for the commands.

Public names load on first use (the server's names need the ``server`` extra)::

    from leaderboard import Store, submit_local, leaderboards, render_markdown
"""

from __future__ import annotations

from worldmodels.runtime.exports import lazy_exports

_EXPORTS = {
    "Store": "leaderboard.store",
    "default_db_path": "leaderboard.store",
    **{name: "leaderboard.validate" for name in (
        "SubmissionRejected", "submit_local", "validate_submission", "store_submission", "register_suite",
    )},  # fmt: skip
    "Board": "leaderboard.ranking",
    "Row": "leaderboard.ranking",
    "leaderboards": "leaderboard.ranking",
    **{name: "leaderboard.render" for name in ("print_terminal", "render_html", "render_json", "render_markdown")},
    "seed_store": "leaderboard.seed",
    "seed_if_empty": "leaderboard.seed",
    "create_app": "leaderboard.server",
    "serve": "leaderboard.server",
    "SubmissionFailed": "leaderboard.client",
    "submit_remote": "leaderboard.client",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
