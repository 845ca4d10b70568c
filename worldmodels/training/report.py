"""Where trainers send their scalars besides ``log.jsonl``: one ``report_to`` option shared by every trainer.

``report_to`` is ``"tensorboard"`` (``<run dir>/tensorboard``), ``"wandb"`` (Weights & Biases, project ``rlir``; its
own environment variables such as ``WANDB_MODE=offline`` apply) or ``"none"``. The JSON Lines log is written in every
case; it is the record the summaries, curves and tests read. A chosen backend that is not installed is an error at
start-up, never a silent skip.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from worldmodels.errors import ConfigError

__all__ = ["DEFAULT_REPORT_TO", "REPORT_TO", "Reporter", "check_report_to", "open_reporter"]

REPORT_TO = ("tensorboard", "wandb", "none")
DEFAULT_REPORT_TO = "none"
"""Every trainer's default: the JSON Lines log alone needs no optional package."""

_PACKAGE = {"tensorboard": ("tensorboard", "pip install tensorboard (or the rlir[agents] extra)"),
            "wandb": ("wandb", "pip install wandb, then `wandb login` (or WANDB_MODE=offline)")}  # fmt: skip


def check_report_to(report_to: str) -> str:
    """``report_to`` after checking that it is known and its package is installed.

    Raises:
        ConfigError: an unknown backend, or one whose package is missing (the message says what to install).
    """
    if report_to not in REPORT_TO:
        raise ConfigError(f"unknown report_to {report_to!r}; choose one of {list(REPORT_TO)}")
    if report_to in _PACKAGE:
        module, install = _PACKAGE[report_to]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"report_to {report_to!r} needs the {module} package, which is not installed: "
                              f"{install}, or use report_to 'none'")  # fmt: skip
    return report_to


class Reporter:
    """Scalars of one run to TensorBoard or W&B (numbers only; a list becomes one scalar per index)."""

    def __init__(self, report_to: str, run_dir: str | Path, *, start: int = 0, config: Mapping[str, Any] | None = None):
        self.report_to = check_report_to(report_to)
        run_dir = Path(run_dir)
        self._writer: Any = None
        self._run: Any = None
        if report_to == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops the events an interrupted run logged after its last checkpoint
            self._writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start or None)
        elif report_to == "wandb":
            import wandb

            run_dir.mkdir(parents=True, exist_ok=True)
            self._run = wandb.init(project="rlir", name=run_dir.name, dir=str(run_dir),
                                   config=dict(config or {}), resume="allow")  # fmt: skip

    def scalars(self, step: int, record: Mapping[str, Any]) -> None:
        values = _numbers(record)
        values.pop("step", None)
        if not values:
            return
        if self._writer is not None:
            for key, value in values.items():
                self._writer.add_scalar(key, value, step)
            self._writer.flush()
        if self._run is not None:
            self._run.log(values, step=step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._run is not None:
            self._run.finish()


def _numbers(record: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers in a log record, nested keys joined with ``/`` (``{"eval": {"psnr": 30}}`` -> ``eval/psnr``)."""
    values: dict[str, float] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, (int, float)):
            values[name] = float(value)
        elif isinstance(value, Mapping):
            values.update(_numbers(value, f"{name}/"))
        elif isinstance(value, list) and value and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                        for v in value):  # fmt: skip
            values.update({f"{name}/{i}": float(v) for i, v in enumerate(value)})
    return values


def open_reporter(report_to: str, run_dir: str | Path, *, start: int = 0,
                  config: Mapping[str, Any] | None = None) -> Reporter | None:  # fmt: skip
    """A :class:`Reporter`, or ``None`` for ``"none"`` (after the same checks)."""
    if check_report_to(report_to) == "none":
        return None
    return Reporter(report_to, run_dir, start=start, config=config)
