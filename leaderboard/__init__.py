"""The verifying leaderboard: store (SQLite), submission validation, ranking with bootstrap CIs, views (terminal,
Markdown, JSON, HTML), HTTP server and client. ``rlir leaderboard --help`` for the commands."""
