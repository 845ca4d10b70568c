"""The flags every ``rlir`` command spells the same way, defined once.

* ``--progress/--no-progress``: a progress bar (on by default where a command runs for minutes).
* ``--resume auto|never|PATH``: ``auto`` continues from what ``--out`` holds, ``never`` starts afresh, a path names
  a checkpoint (where the command supports one).
* ``--out DIR``: where a command writes its results. Trainers write ``DIR/<what>.safetensors`` with their summary and
  run directory next to it; a path ending in ``.safetensors`` still names the file itself.
* ``--report-to tensorboard|wandb|none``: every trainer (:mod:`worldmodels.training.report`).
* ``--help`` shows each option's default (:class:`DefaultsHelpFormatter`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from worldmodels.errors import ConfigError

__all__ = ["DefaultsHelpFormatter", "add_progress", "add_report_to", "add_resume", "resolve_out", "resume_mode"]


class DefaultsHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Appends ``(default: X)`` to an option's help unless the help already says it or there is nothing to say
    (no default, a flag that is off)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (any(default is v for v in (None, False, argparse.SUPPRESS)) or isinstance(default, list) and not default
                or "default" in text or not action.option_strings):  # fmt: skip
            return text
        if isinstance(action, argparse.BooleanOptionalAction):
            shown = action.option_strings[0] if default else action.option_strings[-1]
            return f"{text} (default: {shown})"
        return f"{text} (default: %(default)s)"


def add_progress(parser: argparse.ArgumentParser, *, default: bool = True, what: str = "a progress bar") -> None:
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=default, help=f"show {what}")


def add_resume(parser: argparse.ArgumentParser, *, default: str = "never", paths: bool = False, what: str = "") -> None:
    """``--resume auto|never`` (``|PATH`` when ``paths``): ``auto`` continues the run in ``--out``."""
    choices = "auto|never|PATH" if paths else "auto|never"
    parser.add_argument("--resume", default=default, metavar=choices,
                        help=f"auto: continue {what or 'the run in --out'}; never: start afresh"
                             + ("; or a checkpoint path" if paths else ""))  # fmt: skip


def resume_mode(value: str, *, paths: bool = False) -> str:
    """The checked ``--resume`` value (``auto``, ``never``, or with ``paths`` an existing file)."""
    if value in ("auto", "never"):
        return value
    if paths:
        if not Path(value).exists():
            raise ConfigError(f"--resume {value!r}: no such checkpoint; use auto, never or an existing path")
        return value
    raise ConfigError(f"--resume {value!r}: use auto (continue the run in --out) or never (start afresh)")


def add_report_to(parser: argparse.ArgumentParser) -> None:
    """``--report-to``: the one option every trainer shares (:mod:`worldmodels.training.report`)."""
    from worldmodels.training.report import DEFAULT_REPORT_TO, REPORT_TO

    parser.add_argument("--report-to", choices=REPORT_TO, default=DEFAULT_REPORT_TO,
                        help="also log scalars to TensorBoard (<run dir>/tensorboard) or W&B; log.jsonl is always "
                             "written")  # fmt: skip


def resolve_out(out: str | Path, name: str, suffix: str = ".safetensors") -> Path:
    """``--out`` of a trainer: a directory gets ``<name><suffix>`` inside it; a path ending in ``suffix`` is the file."""
    out = Path(out)
    if out.suffix == suffix:
        return out
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a file; pass a directory (or a path ending in {suffix})")
    return out / f"{name}{suffix}"
