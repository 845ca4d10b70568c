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


def refused_pickle_reason(message: str) -> str:
    """What ``torch.load(weights_only=True)`` refused, from its error message: ``"the global os.system"`` when it
    names one, else a short reason. torch's message also advises re-running with ``weights_only=False``, which
    would run the file's code; our errors quote only this part, never that advice."""
    import re

    found = re.search(r"GLOBAL ([\w.]+)", message) or re.search(r"Unsupported global: ([\w.]+)", message)
    if found:
        return f"the global {found.group(1)}"
    reason = message.split("WeightsUnpickler error:")[-1].split("Check the documentation")[0].strip()
    reason = re.sub(r"\s+", " ", reason)[:200]
    return f"something the safe loader refuses ({reason})" if reason and "weights_only" not in reason else (
        "something other than tensors and plain containers")

