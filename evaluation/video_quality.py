"""LPIPS and FVD of a bundle's generated videos against the suite's ground truth, when the user supplies the backbone
files (``rlir eval --lpips-weights PATH --i3d-weights FILE``; nothing is downloaded).

Both need the generated frames (the bundle's ``videos/``) and the suite's ground truth. They are computed once all
items are done and stored in the bundle's ``metrics`` (``lpips``: per step and mean, as the official video metrics
report it; ``fvd``: StyleGAN-V's protocol over the whole suite). Like ``throughput`` they are not recomputed from the
per-item records by a verifier, who would need the same backbone files and the videos.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from evaluation.bundle import ResultBundle, load_video, save_bundle
from evaluation.metrics.fvd import I3D_FILE, I3D_SOURCE, MIN_FRAMES
from evaluation.metrics.lpips import BACKBONE_FILE, BACKBONE_SOURCE, LINEAR_FILE, LINEAR_SOURCE
from evaluation.suites import Suite
from worldmodels.errors import ConfigError, MissingFileError

__all__ = ["add_video_quality", "check_video_quality_inputs", "lpips_files"]


def lpips_files(path: str | Path) -> tuple[Path, Path]:
    """``(backbone, linear)`` from ``--lpips-weights``: a directory holding both files under their public names, or the
    linear file ``alex.pth`` with the backbone next to it."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    linear = folder / LINEAR_FILE if path.is_dir() else path
    backbone = folder / BACKBONE_FILE
    for file, name, source in ((backbone, BACKBONE_FILE, BACKBONE_SOURCE), (linear, LINEAR_FILE, LINEAR_SOURCE)):
        if not file.is_file():
            raise MissingFileError(f"--lpips-weights {str(path)!r}: {file} is missing; put {name} there ({source})")
    return backbone, linear


def check_video_quality_inputs(suite: Suite, *, lpips: str | Path | None, i3d: str | Path | None,
                               save_videos: bool) -> None:  # fmt: skip
    """Refuse, before any generation, what would make the LPIPS / FVD pass fail at the end."""
    if lpips is None and i3d is None:
        return
    if not save_videos:
        raise ConfigError("--lpips-weights / --i3d-weights score the generated frames: drop --no-videos")
    if not suite.has_ground_truth:
        raise ConfigError(f"suite {suite.name!r} has no ground-truth frames to compare with: LPIPS and FVD need them")
    if lpips is not None:
        lpips_files(lpips)
    if i3d is not None:
        if not Path(i3d).is_file():
            raise MissingFileError(f"--i3d-weights {str(i3d)!r} does not exist; supply {I3D_FILE}: {I3D_SOURCE}")
        if importlib.util.find_spec("scipy") is None:
            raise ConfigError("--i3d-weights: FVD needs scipy (its matrix square root): pip install 'rlir[metrics]'")
        if len(suite) < 2 or suite.n_frames < MIN_FRAMES:
            raise ConfigError(f"FVD needs at least 2 clips of {MIN_FRAMES} frames; suite {suite.name!r} has "
                              f"{len(suite)} of {suite.n_frames}")  # fmt: skip


def add_video_quality(bundle: ResultBundle, out_dir: str | Path, suite: Suite, *, lpips: str | Path | None = None,
                      i3d: str | Path | None = None, device: str = "cpu") -> ResultBundle:  # fmt: skip
    """``bundle`` with ``metrics.lpips`` and/or ``metrics.fvd`` computed from its stored videos; rewrites
    ``<out_dir>/bundle.json``."""
    if lpips is None and i3d is None:
        return bundle
    check_video_quality_inputs(suite, lpips=lpips, i3d=i3d, save_videos=bundle.videos is not None)
    generated = np.stack([load_video(out_dir, bundle.videos[item_id]) for item_id in suite.item_ids])
    reference = suite.arrays["ground_truth"]
    update = {}
    if lpips is not None:
        from evaluation.metrics.lpips import lpips as lpips_metric

        backbone, linear = lpips_files(lpips)
        result = lpips_metric(generated, reference, backbone_path=backbone, linear_path=linear, device=device)
        update["lpips"] = {"mean": result["mean"], "per_step": result["per_step"]}
    if i3d is not None:
        from evaluation.metrics.fvd import fvd

        result = fvd(generated, reference, detector_path=i3d, device=device)
        update["fvd"] = {"mean": result["mean"], "value": result["value"], "prefix_lengths": result["prefix_lengths"]}
    metrics = bundle.metrics.model_copy(update=update)
    bundle = bundle.model_copy(update={"metrics": metrics})
    save_bundle(bundle, out_dir)
    return bundle
