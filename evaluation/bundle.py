"""Result bundles: what ``rlir eval`` writes and the leaderboard verifies.

A bundle is a directory holding ``bundle.json`` (schema below: provenance, runtime, aggregate metrics and one record
per suite item) and, optionally, ``videos/<item id>.npz`` with the generated frames. Every aggregate in
``metrics`` except ``throughput`` can be recomputed from the per-item records (:func:`recompute_metrics`), and every
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

from worldmodels.data.jsonl import atomic_output
from worldmodels.errors import DataError, MissingFileError

BUNDLE_SCHEMA_VERSION = 1
EVALUATOR_VERSION = 1
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
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


def compute_metrics(
    items: list[ItemRecord], taxonomy_name: str, *, throughput: Throughput | None = None
) -> Metrics:
    """Every aggregate of a bundle, from its per-item records: the one code path used by ``rlir eval`` to write a
    bundle and by the leaderboard to verify one.

    Action metrics pool the per-item confusion counts (MineWorld's definition); the primary metric is the mean over
    the taxonomy's discrete tasks of macro-F1 with a percentile-bootstrap 95% interval over items (``BOOTSTRAP_SEED``,
    ``BOOTSTRAP_RESAMPLES``); ``reward_mean`` is the mean RLIR trajectory reward; PSNR/SSIM are averaged per step over
    items, then over steps, as the official video metrics do.
    """
    from evaluation.metrics.action import confusion_counts, metrics_from_confusion, rlir_frame_reward
    from evaluation.metrics.stats import bootstrap_confusion_ci
    from evaluation.metrics.taxonomy import get_taxonomy
    from evaluation.metrics.video import summarize_per_frame

    if not items:
        raise DataError("a result bundle needs at least one item")
    taxonomy = get_taxonomy(taxonomy_name)
    confusions, rewards = [], []
    for item in items:
        gt, pred = np.asarray(item.gt_labels), np.asarray(item.pred_labels)
        where = f"item {item.id!r}"
        if gt.ndim != 2 or gt.shape != pred.shape or len(gt) == 0:
            raise DataError(f"{where}: gt_labels {gt.shape} and pred_labels {pred.shape} must be equal [T >= 1, tasks]")
        confusions.append(confusion_counts(gt[None], pred[None], taxonomy)[0])
        rewards.append(float(rlir_frame_reward(gt, pred, taxonomy).mean()))
    conf = np.stack(confusions)
    official = metrics_from_confusion(conf, taxonomy)
    mean_on_task = official.pop("metric_mean_on_task")
    low, high = bootstrap_confusion_ci(conf, taxonomy, n_resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED)
    video: dict[str, dict[str, Any] | None] = {}
    for name in ("psnr", "ssim"):
        values = [getattr(item, name) for item in items]
        if all(v is None for v in values):
            video[name] = None
            continue
        if any(v is None for v in values) or len({len(v) for v in values}) != 1:
            raise DataError(f"{name} must be given for every item with the same number of frames, or for none")
        summary = summarize_per_frame(values)
        video[name] = {"mean": summary["mean"], "per_step": summary["per_step"]}
    return Metrics(
        primary=PrimaryMetric(value=mean_on_task["f1_macro"], ci95=(low, high), n_items=len(items)),
        tasks={key: {k: v for k, v in scores.items() if k != "class_num"} for key, scores in official.items()},
        mean_on_task=mean_on_task,
        camera_l1=mean_on_task.get("camera_loss"),
        reward_mean=float(np.mean(rewards)),
        psnr=video["psnr"],
        ssim=video["ssim"],
        throughput=throughput,
    )


def verify_metrics(bundle: ResultBundle, *, rel_tol: float = 1e-9) -> list[str]:
    """Recompute every aggregate from the bundle's items; returns the mismatches (empty when all agree)."""
    recomputed = compute_metrics(bundle.items, bundle.taxonomy, throughput=bundle.metrics.throughput)
    # like throughput, LPIPS and FVD need more than the records (backbone files, videos): carried over, not recomputed
    recomputed = recomputed.model_copy(update={"lpips": bundle.metrics.lpips, "fvd": bundle.metrics.fvd})
    return _differences(bundle.metrics.model_dump(mode="json"), recomputed.model_dump(mode="json"), "metrics", rel_tol)


def _differences(reported: Any, expected: Any, path: str, rel_tol: float) -> list[str]:
    if isinstance(expected, dict) and isinstance(reported, dict):
        problems = [f"{path}.{k}: missing" for k in expected if k not in reported]
        problems += [f"{path}.{k}: unexpected" for k in reported if k not in expected]
        for key in expected.keys() & reported.keys():
            problems += _differences(reported[key], expected[key], f"{path}.{key}", rel_tol)
        return problems
    if isinstance(expected, list) and isinstance(reported, list):
        if len(expected) != len(reported):
            return [f"{path}: {len(reported)} values, expected {len(expected)}"]
        return [p for i, (r, e) in enumerate(zip(reported, expected)) for p in _differences(r, e, f"{path}[{i}]", rel_tol)]
    if isinstance(expected, float) or isinstance(reported, float):
        if isinstance(reported, (int, float)) and isinstance(expected, (int, float)):
            if abs(reported - expected) <= rel_tol * max(1.0, abs(expected)):
                return []
        return [f"{path}: reported {reported!r}, recomputed {expected!r}"]
    return [] if reported == expected else [f"{path}: reported {reported!r}, recomputed {expected!r}"]


def bundle_to_json(bundle: ResultBundle) -> str:
    return json.dumps(bundle.model_dump(mode="json"), sort_keys=True)
