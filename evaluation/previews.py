"""Pictures a person can watch: generated | ground truth side by side, with the commanded and the IDM-recovered
action written under every frame, so a frame where the model ignored its action stands out (the IDM line turns red).

:func:`preview_frames` draws the frames, :func:`write_preview` writes ``previews/<item>.mp4`` (what ``rlir eval``
does for its first items), :func:`preview_strip` lays a few frames out as one still image (the README picture).
Text is drawn with Pillow's built-in font (Pillow comes with diffusers; nothing is downloaded).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evaluation.metrics.taxonomy import Taxonomy
from worldmodels.data.video import write_video

__all__ = ["PREVIEW_HEIGHT", "describe_labels", "preview_frames", "preview_strip", "write_preview"]

PREVIEW_HEIGHT = 216
"""Frames are enlarged (nearest neighbour, whole factors) to about this height: a 72-pixel Crafter frame is too small
to watch."""
_BAND = 30  # pixels of text under each frame pair (two lines)
_MATCH, _MISS, _TEXT, _BACK = (90, 220, 110), (255, 90, 80), (235, 235, 235), (24, 24, 24)


def describe_labels(labels: np.ndarray, taxonomy: Taxonomy) -> str:
    """One frame's taxonomy labels ``int[n_tasks]`` as short text: Crafter's action name, or the Minecraft keys and
    camera bins that are not at rest."""
    if taxonomy.name == "crafter":
        from worldmodels.actions.crafter import ACTION_NAMES, N_ACTIONS

        # every Crafter action has its own label row, so the row names the action
        match = np.flatnonzero((taxonomy.labels(np.arange(N_ACTIONS)) == np.asarray(labels)).all(axis=1))
        if len(match) == 1:
            return ACTION_NAMES[int(match[0])]
    parts = []
    for task, label in zip(taxonomy.tasks, labels):
        label = int(label)
        if task.kind == "camera":
            parts.append(f"{task.key}={label}")
        elif label != 0:
            # a pair task's classes are (neither, first key, second key); a binary task's (off, on)
            parts.append(task.name[label - 1] if isinstance(task.name, tuple) else str(task.name))
    return " ".join(parts) or "noop"


def _font():
    from PIL import ImageFont

    return ImageFont.load_default()


def preview_frames(
    generated: np.ndarray,
    ground_truth: np.ndarray | None,
    commanded: np.ndarray,
    recovered: np.ndarray,
    taxonomy: Taxonomy,
) -> np.ndarray:
    """``uint8[F, H', W', 3]``: per frame, generated | ground truth (when given) enlarged, then two text lines:
    ``t  cmd <commanded>`` and ``idm <recovered>`` (green where the IDM reads the commanded action, red where not).

    Args:
        generated, ground_truth: ``uint8[F, H, W, 3]``.
        commanded, recovered: taxonomy labels ``int[F, n_tasks]`` (the item record's ``gt_labels``/``pred_labels``).
    """
    from PIL import Image, ImageDraw

    n, h, w, _ = generated.shape
    scale = max(1, PREVIEW_HEIGHT // h)
    panels = [generated] if ground_truth is None else [generated, ground_truth]
    gap = 4
    width = len(panels) * w * scale + (len(panels) - 1) * gap
    width += width % 2  # yuv420p video needs even sizes
    height = h * scale + _BAND
    height += height % 2
    discrete = taxonomy.discrete_indices
    font = _font()
    out = np.empty((n, height, width, 3), dtype=np.uint8)
    for t in range(n):
        canvas = Image.new("RGB", (width, height), _BACK)
        for k, frames in enumerate(panels):
            big = np.repeat(np.repeat(frames[t], scale, axis=0), scale, axis=1)
            canvas.paste(Image.fromarray(big), (k * (w * scale + gap), 0))
        draw = ImageDraw.Draw(canvas)
        same = bool(np.array_equal(np.asarray(commanded[t])[discrete], np.asarray(recovered[t])[discrete]))
        draw.text((4, h * scale + 2), f"{t + 1:>2} cmd {describe_labels(commanded[t], taxonomy)}", fill=_TEXT, font=font)
        draw.text((4, h * scale + 15), f"   idm {describe_labels(recovered[t], taxonomy)}",
                  fill=_MATCH if same else _MISS, font=font)  # fmt: skip
        out[t] = np.asarray(canvas)
    return out


def write_preview(path: str | Path, frames: np.ndarray, fps: float) -> Path:
    """Write preview frames (from :func:`preview_frames`) as an H.264 mp4."""
    write_video(path, frames, fps)
    return Path(path)


def preview_strip(frames: np.ndarray, count: int = 6) -> np.ndarray:
    """``count`` evenly spaced preview frames stacked top to bottom as one image ``uint8[H, W, 3]``."""
    index = np.linspace(0, len(frames) - 1, num=min(count, len(frames))).round().astype(int)
    return np.concatenate([frames[i] for i in index], axis=0)
