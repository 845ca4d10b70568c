"""Subcommands of the ``rlir`` CLI; each module exposes ``register(subparsers)``.

Commands that need upper layers (evaluation, posttrain, leaderboard) import them lazily inside their ``run``
function: the one sanctioned exception to the one-way import rule.
"""
