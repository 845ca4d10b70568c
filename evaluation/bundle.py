"""Result bundles: what ``rlir eval`` writes and the leaderboard verifies. This module is the data format only.

A bundle is a directory holding ``bundle.json`` (schema below: provenance, runtime, aggregate metrics and one record
per suite item) and, optionally, ``videos/<item id>.npz`` with the generated frames. Every aggregate in
``metrics`` except ``throughput`` can be recomputed from the per-item records
(:func:`evaluation.scoring.compute_metrics`, checked by :func:`evaluation.scoring.verify_metrics`), and every
record's ``video_sha256`` is the :func:`~worldmodels.hashing.sha256_array` of its generated frames, so a verifier can
check a submission without trusting any number in it.

Versioning: ``schema_version`` changes with the JSON layout; ``evaluator_version`` changes whenever the protocol or
the metric code would change a score. Bundles of different evaluator versions are never ranked together.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from worldmodels.errors import DataError, MissingFileError
from worldmodels.runtime.files import atomic_output

BUNDLE_SCHEMA_VERSION = 1
EVALUATOR_VERSION = 1
PRIMARY_METRIC = "mean_macro_f1"
CEILING_MODEL_NAME = "ground-truth (IDM ceiling)"
"""Model name of the reference row: the suite's IDM on the suite's ground-truth videos (the paper's "GT" row)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_SHA256 = r"^[0-9a-f]{64}$"
# Plausible ranges and lengths of every free field: what no real run exceeds, so that a number or string that would
# wreck a view (frames/s = 1e-300 on a log axis, a 2000-character device name in a table) is refused at the door.
MAX_FPS = 1e7
MIN_FPS = 1e-3
_Label = Annotated[int, Field(ge=0, le=1_000_000)]
_Psnr = Annotated[float, Field(ge=0.0, le=1000.0)]
_Ssim = Annotated[float, Field(ge=-1.0, le=1.0)]


class SuiteRef(_Strict):
    name: str = Field(min_length=1, max_length=200)
    version: int = Field(ge=0, le=1_000_000)
    sha256: str = Field(pattern=_SHA256)


class ModelInfo(_Strict):
    name: str = Field(min_length=1, max_length=200)
    checkpoint_sha256: str | None = Field(default=None, pattern=_SHA256)
    """sha256 of the checkpoint file (provenance: which file was loaded)."""
    weights_sha256: str | None = Field(default=None, pattern=_SHA256)
    """Content hash of the weights (:func:`worldmodels.weights.tensors_sha256`: names, dtypes, shapes and bytes of
    every tensor): the model's identity, equal for equal tensors whatever the file layout."""
    parameters: int | None = Field(default=None, ge=0, le=10**13)
    env_id: str | None = Field(default=None, max_length=200)
    description: str = Field(default="", max_length=2000)


class IdmRef(_Strict):
    name: str = Field(min_length=1, max_length=200)
    sha256: str | None = Field(default=None, pattern=_SHA256)


class Runtime(_Strict):
    """How the frames were generated. Autoregressive (MineWorld) models record ``decoding`` to ``top_k`` (and whether
    the decode steps ran ``compiled``); NFD models record ``sampler`` and ``sampling_steps`` and None for the
    autoregressive fields."""

    device: str = Field(min_length=1, max_length=32)
    device_name: str = Field(default="", max_length=120)
    dtype: str = Field(min_length=1, max_length=16)
    decoding: str | None = Field(default="naive", max_length=32)
    window: int | None = Field(default=2, ge=0, le=100_000)
    temperature: float | None = Field(default=1.0, ge=0.0, le=100.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=1, le=10_000_000)
    sampler: str | None = Field(default=None, max_length=32)
    sampling_steps: int | None = Field(default=None, ge=1, le=100_000)
    compiled: bool = False
    """MineWorld(compile=True): the same tokens as eager; frames VQ-decoded in calls of up to 16 (pixels may differ
    from eager by one level on ~1e-4 of the values)."""
    seed: int
    num_envs: int = Field(ge=0, le=1_000_000)
    torch_version: str = Field(default="", max_length=64)


class ItemRecord(_Strict):
    """One suite item: per-frame taxonomy labels of the commanded and the IDM-recovered actions, and per-frame video
    metrics against ground truth when the suite has it."""

    id: str = Field(min_length=1, max_length=200)
    seed: int
    gt_labels: list[list[_Label]]
    pred_labels: list[list[_Label]]
    psnr: list[_Psnr] | None = None
    ssim: list[_Ssim] | None = None
    video_sha256: str = Field(pattern=_SHA256)


class PrimaryMetric(_Strict):
    name: Literal["mean_macro_f1"] = PRIMARY_METRIC
    value: float
    ci95: tuple[float, float]
    n_items: int


class Throughput(_Strict):
    frames_per_second: float = Field(ge=MIN_FPS, le=MAX_FPS)
    device: str = Field(min_length=1, max_length=32)
    num_envs: int = Field(ge=0, le=1_000_000)


class Metrics(_Strict):
    primary: PrimaryMetric
    tasks: dict[str, dict[str, float]]
    mean_on_task: dict[str, float]
    camera_l1: float | None = None
    reward_mean: float
    psnr: dict[str, Any] | None = None
    ssim: dict[str, Any] | None = None
    throughput: Throughput | None = None
    lpips: dict[str, Any] | None = None
    """LPIPS against ground truth (``evaluation.video_quality``), when the backbone files were supplied."""
    fvd: dict[str, Any] | None = None
    """FVD against ground truth over the suite, when the I3D file was supplied."""


class ResultBundle(_Strict):
    schema_version: Literal[1] = BUNDLE_SCHEMA_VERSION
    kind: Literal["rlir-result"] = "rlir-result"
    created_at: str = Field(min_length=10, max_length=40)
    rlir_version: str = Field(min_length=1, max_length=40)
    evaluator_version: int
    taxonomy: str = Field(min_length=1, max_length=40)
    suite: SuiteRef
    model: ModelInfo
    idm: IdmRef
    runtime: Runtime
    metrics: Metrics
    items: list[ItemRecord]
    videos: dict[str, str] | None = None
    """Item id -> path of its ``.npz`` video relative to the bundle directory, when videos are included."""


def parse_bundle(data: bytes | str | dict[str, Any]) -> ResultBundle:
    """Parse and schema-check a bundle (JSON text, bytes or an already decoded dict).

    Raises:
        DataError: malformed JSON or a schema violation, with the offending field paths.
    """
    try:
        if isinstance(data, dict):
            return ResultBundle.model_validate(data)
        return ResultBundle.model_validate_json(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in error.errors()[:8]
        )
        more = f" (+{error.error_count() - 8} more)" if error.error_count() > 8 else ""
        raise DataError(f"invalid result bundle: {problems}{more}") from None


def load_bundle(path: str | Path) -> ResultBundle:
    """Load ``bundle.json`` from a bundle directory (or the file itself)."""
    path = Path(path)
    file = path / "bundle.json" if path.is_dir() else path
    if not file.is_file():
        raise MissingFileError(f"result bundle {file} not found; `rlir eval --out DIR` writes DIR/bundle.json")
    return parse_bundle(file.read_bytes())


def save_bundle(bundle: ResultBundle, directory: str | Path) -> Path:
    """Write ``bundle.json`` atomically into ``directory``; returns the file path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "bundle.json"
    with atomic_output(target) as tmp, open(tmp, "w", encoding="utf-8") as f:  # umask mode, unlike mkstemp's 0600
        f.write(bundle.model_dump_json(indent=1))
        f.flush()
        os.fsync(f.fileno())
    return target


def save_video(frames: np.ndarray, directory: str | Path, item_id: str) -> str:
    """Store generated frames losslessly as ``videos/<item>.npz``; returns the path relative to ``directory``."""
    relative = f"videos/{item_id}.npz"
    target = Path(directory) / relative
    with atomic_output(target) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, frames=np.ascontiguousarray(frames, dtype=np.uint8))
    return relative


def load_video(directory: str | Path, relative: str) -> np.ndarray:
    """Load frames stored by :func:`save_video` (no pickles); the path must stay inside ``directory``."""
    root = Path(directory).resolve()
    target = (root / relative).resolve()
    if root not in target.parents:
        raise DataError(f"video path {relative!r} escapes the bundle directory")
    if not target.is_file():
        raise MissingFileError(f"video {target} listed in the bundle is missing")
    try:
        with np.load(target, allow_pickle=False) as data:
            return data["frames"]
    except (OSError, ValueError, KeyError, EOFError) as error:
        raise DataError(f"video {target} cannot be read ({error})") from None


def bundle_to_json(bundle: ResultBundle) -> str:
    return json.dumps(bundle.model_dump(mode="json"), sort_keys=True)
