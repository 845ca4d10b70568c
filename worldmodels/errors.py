"""Error types shared by every rlir package.

Each error is a ``ValueError`` or ``FileNotFoundError`` subclass, so callers that catch the builtin types keep
working, and each message names the offending value and says how to fix it.
"""

from __future__ import annotations


class RlirError(Exception):
    """Base class of every error raised on purpose by rlir."""


class ActionError(RlirError, ValueError):
    """An action is outside its space or malformed."""


class FrameError(RlirError, ValueError):
    """Frames have the wrong shape, dtype or value range."""


class DataError(RlirError, ValueError):
    """A dataset file (video, jsonl, shard, manifest) is malformed, truncated or inconsistent."""


class CheckpointError(RlirError, ValueError):
    """A checkpoint has missing/unexpected keys, wrong shapes, or is otherwise unusable."""


class UnsafePickleError(CheckpointError):
    """A pickle references something other than plain data (it could run code), so it is refused."""


class ConfigError(RlirError, ValueError):
    """A configuration has unknown keys or impossible values."""


class IntegrityError(RlirError, ValueError):
    """A sha256 does not match the value it is pinned to (tampered or corrupted file)."""


class NumericalError(RlirError, ValueError):
    """NaN or inf appeared where finite numbers are required (logits, rewards, losses)."""


class MissingFileError(RlirError, FileNotFoundError):
    """A required file is missing; the message says which file to put where."""
