"""The post-training curve a person looks at first: reward per iteration (and the held-out reward when the run
scores an evaluation suite), drawn from ``log.jsonl`` into ``curves.png`` at the end of every run.

Drawn with Pillow (it comes with diffusers) so that no plotting library is needed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

__all__ = ["CURVES", "draw_curves", "read_curves"]

CURVES = (("reward_mean", "reward (training rollouts)", (66, 133, 244)),
          ("eval_reward_mean", "reward (held-out suite)", (234, 67, 53)))  # fmt: skip
"""Log key, legend, colour of each curve drawn."""


def read_curves(log_path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """``key -> [(step, value), ...]`` for the keys in :data:`CURVES` that the log has (finite values only)."""
    curves: dict[str, list[tuple[int, float]]] = {key: [] for key, _, _ in CURVES}
    for line in Path(log_path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by an interruption
        for key in curves:
            value = record.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value) and isinstance(record.get("step"), int):
                curves[key].append((record["step"], float(value)))
    return {key: points for key, points in curves.items() if points}


def draw_curves(log_path: str | Path, png_path: str | Path, *, title: str = "RLIR post-training",
                size: tuple[int, int] = (720, 420)) -> Path | None:  # fmt: skip
    """Draw the reward curves of ``log_path`` to ``png_path``; returns the path, or None when nothing was logged."""
    from PIL import Image, ImageDraw, ImageFont

    curves = read_curves(log_path)
    if not curves:
        return None
    width, height = size
    left, right, top, bottom = 64, 16, 40, 48
    steps = [s for points in curves.values() for s, _ in points]
    values = [v for points in curves.values() for _, v in points]
    x0, x1 = min(steps), max(max(steps), min(steps) + 1)
    y0, y1 = min(values), max(values)
    pad = (y1 - y0) * 0.08 or max(abs(y1) * 0.05, 1e-3)
    y0, y1 = y0 - pad, y1 + pad

    def at(step: float, value: float) -> tuple[float, float]:
        return (left + (step - x0) / (x1 - x0) * (width - left - right),
                top + (y1 - value) / (y1 - y0) * (height - top - bottom))  # fmt: skip

    font = ImageFont.load_default()
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.text((left, 12), title, fill="black", font=font)
    draw.rectangle([left, top, width - right, height - bottom], outline=(120, 120, 120))
    for i in range(5):  # horizontal grid with value labels
        value = y0 + (y1 - y0) * i / 4
        _, y = at(x0, value)
        draw.line([left, y, width - right, y], fill=(230, 230, 230))
        draw.text((4, y - 6), f"{value:.3f}", fill="black", font=font)
    for step in sorted({x0, (x0 + x1) // 2, x1}):
        x, _ = at(step, y0)
        draw.text((x - 8, height - bottom + 6), str(step), fill="black", font=font)
    draw.text(((width - left) // 2, height - 18), "iteration", fill="black", font=font)
    for row, (key, label, colour) in enumerate(c for c in CURVES if c[0] in curves):
        points = [at(s, v) for s, v in sorted(curves[key])]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        legend_y = top + 6 + 14 * row
        draw.line([width - right - 190, legend_y + 6, width - right - 170, legend_y + 6], fill=colour, width=2)
        draw.text((width - right - 164, legend_y), label, fill="black", font=font)
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    image.save(png_path)
    return png_path
