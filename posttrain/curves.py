"""The post-training curves a person looks at first, drawn from ``log.jsonl`` into ``curves.png`` at the end of every
run: the reward per iteration and, when the run probes a suite (:mod:`posttrain.probe`), the probe's training reward
and each watching IDM's reading of it; when the reward is a sum of terms, each term's mean in a panel of its own
(unweighted, so a term that is learnt and one that only holds show apart); last, the probe's PSNR (a gain bought with
noisier frames shows there).

Drawn by :func:`worldmodels.runtime.charts.line_chart`, as the world model's learning curves are.
"""

from __future__ import annotations

import math
from pathlib import Path

from worldmodels.runtime.charts import Series, line_chart, log_records, save_panels

__all__ = ["CURVES", "draw_curves", "read_curves"]

CURVES = (("reward_mean", "reward (training rollouts)", (66, 133, 244)),
          ("eval_reward_mean", "reward (probe: fixed items, seeds)", (234, 67, 53)))  # fmt: skip
"""Log key, legend, colour of the reward curves; every ``eval_reward_<idm>_mean`` of a watching IDM is drawn too."""
WATCHER_COLOURS = ((52, 168, 83), (251, 188, 5), (171, 71, 188))
TERM_PREFIX = "reward_mean_"
"""``reward_mean_<label>``: a reward term's mean (:func:`posttrain.metrics.reward_term_metrics`)."""
TERM_COLOURS = ((0, 150, 136), (255, 112, 67), (121, 85, 72))
PSNR = ("eval_psnr_mean", "PSNR of the probe (dB)", (96, 96, 96))


def _watchers(record: dict) -> list[str]:
    return sorted(key for key in record if key.startswith("eval_reward_") and key.endswith("_mean")
                  and key != "eval_reward_mean")  # fmt: skip


def read_curves(log_path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """``key -> [(step, value), ...]`` of the drawn keys that the log has (finite values only)."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for record in log_records(log_path):
        if not isinstance(record.get("step"), int):
            continue
        terms = [key for key in record if key.startswith(TERM_PREFIX)]
        for key in [key for key, _, _ in CURVES] + _watchers(record) + terms + [PSNR[0]]:
            value = record.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                curves.setdefault(key, []).append((record["step"], float(value)))
    return curves


def draw_curves(log_path: str | Path, png_path: str | Path, *, title: str = "RLIR post-training",
                size: tuple[int, int] = (720, 420)) -> Path | None:  # fmt: skip
    """Draw the curves of ``log_path`` to ``png_path``; returns the path, or None when nothing was logged."""
    curves = read_curves(log_path)
    if not curves:
        return None
    rewards = [Series(label, colour, curves[key]) for key, label, colour in CURVES if key in curves]
    terms = sorted(key for key in curves if key.startswith(TERM_PREFIX))
    watchers = sorted(key for key in curves if key not in {k for k, _, _ in CURVES} | {PSNR[0]} | set(terms))
    for key, colour in zip(watchers, WATCHER_COLOURS * len(watchers)):
        name = key.removeprefix("eval_reward_").removesuffix("_mean").replace("_", "-")
        rewards.append(Series(f"probe, {name} (watching)", colour, curves[key]))
    panels = [line_chart(rewards, title=title, x_label="iteration", size=size)] if rewards else []
    for key, colour in zip(terms, TERM_COLOURS * len(terms)):  # a panel each: their scales differ
        label = key.removeprefix(TERM_PREFIX)
        panels.append(line_chart([Series(f"{label} term (unweighted)", colour, curves[key])],
                                 title=f"reward term: {label}", x_label="iteration", size=(size[0], size[1] * 2 // 3)))
    if PSNR[0] in curves:
        panels.append(line_chart([Series(PSNR[1], PSNR[2], curves[PSNR[0]])], title="probe PSNR", x_label="iteration",
                                 size=(size[0], size[1] * 2 // 3)))  # fmt: skip
    return save_panels(panels, png_path) if panels else None
