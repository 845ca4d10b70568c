"""The post-training curve a person looks at first: reward per iteration (and the held-out reward when the run
scores an evaluation suite), drawn from ``log.jsonl`` into ``curves.png`` at the end of every run.

Drawn by :func:`worldmodels.runtime.charts.line_chart`, as the world model's learning curves are.
"""

from __future__ import annotations

import math
from pathlib import Path

from worldmodels.runtime.charts import Series, line_chart, log_records, save_panels

__all__ = ["CURVES", "draw_curves", "read_curves"]

CURVES = (("reward_mean", "reward (training rollouts)", (66, 133, 244)),
          ("eval_reward_mean", "reward (held-out suite)", (234, 67, 53)))  # fmt: skip
"""Log key, legend, colour of each curve drawn."""


def read_curves(log_path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """``key -> [(step, value), ...]`` for the keys in :data:`CURVES` that the log has (finite values only)."""
    curves: dict[str, list[tuple[int, float]]] = {key: [] for key, _, _ in CURVES}
    for record in log_records(log_path):
        for key in curves:
            value = record.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value) and isinstance(record.get("step"), int):
                curves[key].append((record["step"], float(value)))
    return {key: points for key, points in curves.items() if points}


def draw_curves(log_path: str | Path, png_path: str | Path, *, title: str = "RLIR post-training",
                size: tuple[int, int] = (720, 420)) -> Path | None:  # fmt: skip
    """Draw the reward curves of ``log_path`` to ``png_path``; returns the path, or None when nothing was logged."""
    curves = read_curves(log_path)
    if not curves:
        return None
    series = [Series(label, colour, curves[key]) for key, label, colour in CURVES if key in curves]
    return save_panels([line_chart(series, title=title, x_label="iteration", size=size)], png_path)
