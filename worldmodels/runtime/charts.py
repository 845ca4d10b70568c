"""Line charts of training logs, drawn once for every trainer: the post-trainer's reward curves and the world model's
learning curves are both :func:`line_chart` panels.

Drawn with Pillow (it comes with diffusers), so no plotting library is needed; the charts are for a person to look at,
the numbers stay in the logs and summaries.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["Series", "line_chart", "log_records", "save_panels"]


@dataclass(frozen=True)
class Series:
    """One curve: its legend, colour and ``(step, value)`` points."""

    label: str
    colour: tuple[int, int, int]
    points: Sequence[tuple[float, float]]


def log_records(log_path: str | Path) -> Iterator[dict]:
    """The JSON objects of a JSON Lines log, skipping a line torn by an interruption."""
    for line in Path(log_path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            yield record


def line_chart(series: Sequence[Series], *, title: str, x_label: str, size: tuple[int, int] = (720, 420)) -> Image:
    """A chart of ``series`` (their finite points) with a value grid, the first, middle and last step, and a legend.

    Raises:
        ValueError: no series has a finite point.
    """
    from PIL import Image, ImageDraw, ImageFont

    series = [Series(s.label, s.colour, [(x, v) for x, v in s.points if math.isfinite(v)]) for s in series]
    series = [s for s in series if s.points]
    if not series:
        raise ValueError(f"chart {title!r} has no points to draw")
    width, height = size
    left, right, top, bottom = 64, 16, 40, 48
    steps = [x for s in series for x, _ in s.points]
    values = [v for s in series for _, v in s.points]
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
        draw.text((x - 8, height - bottom + 6), f"{step:g}", fill="black", font=font)
    draw.text(((width - left) // 2, height - 18), x_label, fill="black", font=font)
    for row, curve in enumerate(series):
        points = [at(x, v) for x, v in sorted(curve.points)]
        if len(points) > 1:
            draw.line(points, fill=curve.colour, width=2)
        for x, y in points:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=curve.colour)
        legend_y = top + 6 + 14 * row
        draw.line([width - right - 190, legend_y + 6, width - right - 170, legend_y + 6], fill=curve.colour, width=2)
        draw.text((width - right - 164, legend_y), curve.label, fill="black", font=font)
    return image


def save_panels(panels: Sequence[Image], png_path: str | Path) -> Path:
    """Stack chart panels top to bottom into one PNG (parent folders made as needed)."""
    from PIL import Image

    width = max(panel.width for panel in panels)
    canvas = Image.new("RGB", (width, sum(panel.height for panel in panels)), "white")
    y = 0
    for panel in panels:
        canvas.paste(panel, (0, y))
        y += panel.height
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(png_path, optimize=True)
    return png_path
