"""The evaluator: run a suite through a world model's batched env, read the actions back with an IDM, score, bundle.

Per item: the env is reset to the item's context with a seed derived from ``(seed, item id)``, steps through the
item's action script, and the generated frames are scored on their own (:func:`evaluation.scoring.score_item`: IDM
labels against the commanded actions, PSNR/SSIM against ground truth, and the sha256 of the frames). Each record is
written atomically to ``<out>/items/<id>.json`` as soon as it is done, so a crashed run resumes where it stopped
(``resume=True`` skips done items) and ends with the same numbers. Under ``torchrun`` (gloo or nccl) items are split
over ranks; rank 0 assembles the bundle once every rank is done.

Because an item's seed depends only on its id, neither the batch an item lands in, nor the number of envs, nor
the sharding changes its frames: a run may resume with another ``num_envs``. Throughput counts every generated
frame and the generation time of every part of a resumed run (``<out>/.throughput-rank<N>.json``, updated after each
batch), and re-running a finished directory returns its bundle untouched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evaluation.bundle import (
    CEILING_MODEL_NAME,
    EVALUATOR_VERSION,
    IdmRef,
    ItemRecord,
    ModelInfo,
    ResultBundle,
    Runtime,
    SuiteRef,
    Throughput,
    load_bundle,
    save_bundle,
    save_video,
)
from evaluation.metrics.taxonomy import Taxonomy
from evaluation.previews import preview_frames, write_preview
from evaluation.scoring import compute_metrics, score_item, taxonomy_for
from evaluation.suites import Suite, SuiteItem
from rlir_env.vector import AUTOREGRESSIVE_DEFAULTS, WorldModelVectorEnv
from worldmodels import __version__
from worldmodels.errors import ConfigError, DataError
from worldmodels.hashing import sha256_file
from worldmodels.nfd import NFD
from worldmodels.protocol import AutoregressiveModel, WorldModel
from worldmodels.runtime.distributed import Distributed
from worldmodels.runtime.files import write_json
from worldmodels.runtime.progress import Progress
from worldmodels.weights import tensors_sha256


@dataclass(frozen=True)
class EvalSettings:
    """How a suite is generated (recorded in the bundle's ``runtime``)."""

    num_envs: int = 8
    seed: int = 0
    decoding: str | None = None
    """Autoregressive models: ``decoding``, ``window``, ``temperature``, ``top_p``, ``top_k``; None keeps the model's
    default (:meth:`~worldmodels.mineworld.MineWorld.token_sampling`), and the bundle records what ran."""
    window: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    save_videos: bool = True
    video_metrics: bool = True
    sampler: str | None = None
    """NFD models: ``"euler"`` or ``"dpm-solver++"``; None: RLIR's protocol (:data:`NFD_PROTOCOL`)."""
    sampling_steps: int | None = None
    """NFD models: denoising steps per frame; None: RLIR's protocol."""


NFD_PROTOCOL = ("dpm-solver++", 18)
"""How NFD models are evaluated unless told otherwise: the RLIR paper's DPM-Solver++ with 18 steps per frame."""


_AUTOREGRESSIVE_FIELDS = tuple(AUTOREGRESSIVE_DEFAULTS)


def settings_for(model: WorldModel, settings: EvalSettings) -> EvalSettings:
    """``settings`` as they apply to ``model``, so the bundle records what ran: for autoregressive models the
    sampling fields with the model's defaults filled in; for NFD models the sampler (RLIR's protocol unless chosen)
    and no autoregressive fields."""
    if isinstance(model, AutoregressiveModel):
        sampling = model.token_sampling(**{name: getattr(settings, name) for name in _AUTOREGRESSIVE_FIELDS})
        return dataclasses.replace(settings, **{name: getattr(sampling, name) for name in _AUTOREGRESSIVE_FIELDS})
    if not isinstance(model, NFD):
        return settings  # a sampler given for another model is refused by the env, never dropped
    given = [name for name in _AUTOREGRESSIVE_FIELDS
             if getattr(settings, name) not in (None, AUTOREGRESSIVE_DEFAULTS[name])]  # fmt: skip
    if given:
        raise ConfigError(f"{', '.join(f'{n}={getattr(settings, n)!r}' for n in given)}: settings of autoregressive "
                          f"(MineWorld) models; {model.spec.name!r} is an NFD model: set sampler and sampling_steps")
    return dataclasses.replace(
        settings, sampler=settings.sampler or NFD_PROTOCOL[0], sampling_steps=settings.sampling_steps or NFD_PROTOCOL[1],
        decoding=None, window=None, temperature=None, top_p=None, top_k=None,
    )  # fmt: skip


def as_request(settings: EvalSettings) -> EvalSettings:
    """Resolved settings (:func:`settings_for`, or a bundle's ``runtime``) as a request that resolves to them again:
    there, an autoregressive run's ``top_p = top_k = None`` is no truncation, which a request spells ``top_p=1``
    (None in a request asks for the model's default)."""
    if settings.decoding is not None and settings.top_p is None and settings.top_k is None:
        return dataclasses.replace(settings, top_p=1.0)
    return settings


def item_seed(seed: int, item_id: str) -> int:
    """The generation seed of one item: a function of the run seed and the item id only."""
    digest = hashlib.sha256(f"{seed}:{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _claim_run_dir(out_dir: Path, suite: Suite, model_info: ModelInfo, settings: EvalSettings, *, resume: bool,
                   rank: int) -> None:  # fmt: skip
    """Record which run the item records in ``out_dir`` belong to, so that resuming never mixes the records of two
    different runs (another model, checkpoint, suite or setting) into one bundle."""
    identity = {"suite": suite.sha256, "model": model_info.name, "checkpoint_sha256": model_info.checkpoint_sha256,
                "settings": _run_settings(settings)}  # fmt: skip
    path = out_dir / "run.json"
    if resume and path.is_file():
        previous = json.loads(path.read_text())
        if isinstance(previous.get("settings"), dict):  # run.json of older versions recorded num_envs too
            previous["settings"].pop("num_envs", None)
        if previous != identity:
            changed = sorted(k for k in identity if previous.get(k) != identity[k])
            raise ConfigError(
                f"{out_dir} holds item records of another run (different {', '.join(changed)}); use another --out, "
                "or --resume never to regenerate every item"
            )
    elif resume and any((out_dir / "items").glob("*.json")):
        raise ConfigError(
            f"{out_dir} holds item records without the run.json that says which run they belong to; use another "
            "--out, or --resume never to regenerate every item"
        )
    elif rank == 0:
        if not resume:
            for stale in [*(out_dir / "items").glob("*.json"), *out_dir.glob(".throughput-rank*.json")]:
                stale.unlink()
        # the bundle of an earlier run must not outlive its items (a crash would leave it looking current)
        (out_dir / "bundle.json").unlink(missing_ok=True)
        write_json(path, identity, indent=None, durable=True)


def _run_settings(settings: EvalSettings) -> dict[str, Any]:
    """The settings that decide the frames (``num_envs`` does not: item seeds depend on the item id alone)."""
    return {k: v for k, v in dataclasses.asdict(settings).items() if k != "num_envs"}


def _throughput_path(out_dir: Path, rank: int) -> Path:
    return out_dir / f".throughput-rank{rank}.json"


def _read_throughput(path: Path) -> tuple[int, float]:
    try:
        stats = json.loads(path.read_text())
        return int(stats["frames"]), float(stats["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0, 0.0


def _read_record(path: Path) -> ItemRecord | None:
    try:
        return ItemRecord.model_validate_json(path.read_bytes())
    except (OSError, ValueError):
        return None  # torn or foreign file: the item is generated again


def evaluate(
    model: WorldModel,
    suite: Suite,
    idm: Any,
    out_dir: str | Path,
    *,
    model_info: ModelInfo,
    settings: EvalSettings = EvalSettings(),
    resume: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
    on_item: Callable[[ItemRecord], None] | None = None,
    previews: int = 0,
) -> ResultBundle | None:
    """Evaluate ``model`` on ``suite`` with ``idm``; writes ``<out_dir>/bundle.json`` and returns the bundle.

    Args:
        model: any :class:`~worldmodels.protocol.WorldModel` of the suite's domain and frame size.
        suite: a loaded (verified) suite.
        idm: an :class:`~evaluation.idm.base.InverseDynamicsModel` of the suite's domain.
        out_dir: bundle directory (``items/`` holds per-item records while the run is in progress).
        model_info: name, checkpoint sha256 and parameter count recorded in the bundle.
        settings: generation settings.
        resume: skip items whose record already exists in ``out_dir/items``.
        progress: show a rich progress bar.
        stop_after: stop after generating this many items (to simulate a crash in tests); returns None.
        on_item: called with each new record.
        previews: write ``previews/<item>.mp4`` (generated | ground truth, commanded and IDM-read actions) for the
            first this many suite items (:mod:`evaluation.previews`).

    Returns:
        The bundle (on rank 0; other ranks return None).
    """
    if model.spec.domain != suite.domain or tuple(model.spec.frame_size) != suite.frame_size:
        raise ConfigError(
            f"model {model.spec.name!r} ({model.spec.domain}, frames {tuple(model.spec.frame_size)}) cannot run suite "
            f"{suite.name!r} ({suite.domain}, frames {suite.frame_size})"
        )
    if idm.domain != suite.domain:
        raise ConfigError(f"IDM {idm.name!r} reads {idm.domain!r} actions, suite {suite.name!r} is {suite.domain!r}")
    out_dir = Path(out_dir)
    items_dir = out_dir / "items"
    settings = settings_for(model, settings)
    layout = Distributed.from_env("cuda" if torch.cuda.is_available() else "cpu")
    rank, world = layout.rank, layout.world
    taxonomy = taxonomy_for(suite)
    mine = [i for i in range(len(suite)) if i % world == rank]
    _claim_run_dir(out_dir, suite, model_info, settings, resume=resume, rank=rank)
    layout.barrier()  # no rank writes a record before rank 0 has cleared stale ones
    todo = [i for i in mine if not (resume and _read_record(items_dir / f"{suite[i].id}.json"))]
    if not todo and world == 1 and (out_dir / "bundle.json").is_file():
        finished = _finished_bundle(out_dir, suite)
        if finished is not None:
            return finished  # nothing to do: the bundle stays as it was (throughput included)
    stats_path = _throughput_path(out_dir, rank)
    earlier_frames, earlier_seconds = _read_throughput(stats_path) if resume else (0, 0.0)

    request = as_request(settings)
    env = WorldModelVectorEnv(
        min(settings.num_envs, max(len(todo), 1)),
        model=model,
        decoding=settings.decoding,
        window=settings.window,
        temperature=settings.temperature,
        top_p=request.top_p,
        top_k=settings.top_k,
        sampler=settings.sampler,
        sampling_steps=settings.sampling_steps,
    )
    generation_seconds, generated_frames, done = 0.0, 0, 0
    bar = Progress(len(todo), f"{suite.name}: {model_info.name}", enabled=progress and layout.main and bool(todo))
    try:
        with bar:
            for start in range(0, len(todo), env.num_envs):
                batch = [suite[i] for i in todo[start : start + env.num_envs]]
                padded = batch + [batch[-1]] * (env.num_envs - len(batch))  # extra slots repeat an item, ignored
                seeds = [item_seed(settings.seed, item.id) for item in padded]
                begin = time.perf_counter()
                env.reset(
                    seed=seeds,
                    options={
                        "frames": np.stack([item.context_frames for item in padded]),
                        "actions": np.stack([item.context_actions for item in padded]),
                    },
                )
                frames = [env.step(np.stack([item.actions[t] for item in padded]))[0] for t in range(suite.n_frames)]
                generation_seconds += time.perf_counter() - begin
                generated = np.stack(frames, axis=1)  # [n, F, H, W, 3]
                generated_frames += len(batch) * suite.n_frames
                # written before the batch's records, so a crash never leaves frames on disk that no count covers
                throughput = {"frames": earlier_frames + generated_frames,
                              "seconds": earlier_seconds + generation_seconds}  # fmt: skip
                write_json(stats_path, throughput, indent=None, durable=True)
                for k, item in enumerate(batch):
                    record = score_item(
                        item, generated[k], seeds[k], idm=idm, taxonomy=taxonomy, domain=suite.domain,
                        video_metrics=settings.video_metrics,
                    )  # fmt: skip
                    if todo[start + k] < previews:
                        _write_preview(out_dir, item, generated[k], record, taxonomy, fps=suite.manifest.get("fps"))
                    if settings.save_videos:
                        save_video(generated[k], out_dir, item.id)
                    write_json(items_dir / f"{item.id}.json", record.model_dump(mode="json"), indent=None, durable=True)
                    if on_item is not None:
                        on_item(record)
                    done += 1
                    bar.advance()
                    if stop_after is not None and done >= stop_after:
                        return None
    finally:
        env.close()
    throughput = {"frames": earlier_frames + generated_frames, "seconds": earlier_seconds + generation_seconds}
    write_json(stats_path, throughput, indent=None, durable=True)
    layout.barrier()
    if rank != 0:
        return None
    return assemble_bundle(
        suite, out_dir, taxonomy=taxonomy, model_info=model_info, idm=idm, settings=settings, world=world,
        device=str(next(iter(getattr(model, "parameters", lambda: iter([torch.empty(0)]))())).device),
        compiled=getattr(model, "compile", False) is True,  # MineWorld's flag; other modules have a compile() method
    )  # fmt: skip


def _finished_bundle(out_dir: Path, suite: Suite) -> ResultBundle | None:
    """The directory's bundle if it is complete for ``suite`` (its run identity was checked already), else None."""
    try:
        bundle = load_bundle(out_dir)
    except (DataError, FileNotFoundError):
        return None
    complete = bundle.suite.sha256 == suite.sha256 and [r.id for r in bundle.items] == suite.item_ids
    return bundle if complete else None


def _write_preview(out_dir: Path, item: SuiteItem, generated: np.ndarray, record: ItemRecord, taxonomy: Taxonomy, *,
                   fps: float | None) -> None:  # fmt: skip

    frames = preview_frames(generated, item.ground_truth, np.asarray(record.gt_labels), np.asarray(record.pred_labels),
                            taxonomy)  # fmt: skip
    write_preview(out_dir / "previews" / f"{item.id}.mp4", frames, fps or 5.0)


def assemble_bundle(
    suite: Suite,
    out_dir: Path,
    *,
    taxonomy: Taxonomy,
    model_info: ModelInfo,
    idm: Any,
    settings: EvalSettings,
    world: int = 1,
    device: str = "cpu",
    compiled: bool = False,
) -> ResultBundle:
    """Collect every item record (each suite item exactly once), compute the metrics, write ``bundle.json``
    (``compiled``: the model decoded with ``compile=True``, recorded in the runtime)."""
    items_dir = out_dir / "items"
    records = []
    for item_id in suite.item_ids:
        record = _read_record(items_dir / f"{item_id}.json")
        if record is None:
            raise DataError(f"item {item_id!r} has no record in {items_dir}; run the evaluation again to finish it")
        records.append(record)
    frames = seconds = 0.0
    for path in out_dir.glob(".throughput-rank*.json"):
        rank_frames, rank_seconds = _read_throughput(path)
        frames, seconds = frames + rank_frames, max(seconds, rank_seconds)
    throughput = Throughput(frames_per_second=frames / seconds, device=device, num_envs=settings.num_envs) if seconds else None
    videos = {item_id: f"videos/{item_id}.npz" for item_id in suite.item_ids} if settings.save_videos else None
    bundle = ResultBundle(
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        rlir_version=__version__,
        evaluator_version=EVALUATOR_VERSION,
        taxonomy=taxonomy.name,
        suite=SuiteRef(name=suite.name, version=suite.version, sha256=suite.sha256),
        model=model_info,
        idm=IdmRef(name=idm.name, sha256=idm.sha256),
        runtime=Runtime(
            device=device, device_name=_device_name(device), dtype="float32", decoding=settings.decoding,
            window=settings.window, temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k, seed=settings.seed,
            num_envs=settings.num_envs * world, torch_version=torch.__version__, sampler=settings.sampler,
            sampling_steps=settings.sampling_steps, compiled=compiled,
        ),  # fmt: skip
        metrics=compute_metrics(records, taxonomy.name, throughput=throughput),
        items=records,
        videos=videos,
    )
    save_bundle(bundle, out_dir)
    return bundle


def _device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads"



def model_info_for(model: WorldModel, name: str, checkpoint: str | Path | None) -> ModelInfo:
    """Name, checkpoint file sha256, weights content hash (the model's identity: equal tensors, equal hash, in any
    file) and parameter count of a model, for the bundle."""
    sha = sha256_file(checkpoint) if checkpoint is not None and Path(checkpoint).is_file() else None
    module = isinstance(model, torch.nn.Module)
    params = sum(p.numel() for p in model.parameters()) if module else None
    weights = tensors_sha256(model.state_dict()) if module else None
    return ModelInfo(name=name, checkpoint_sha256=sha, weights_sha256=weights, parameters=params)


def score_videos(
    videos: Sequence[tuple[str, np.ndarray]],
    suite: Suite,
    idm: Any,
    *,
    video_metrics: bool = True,
) -> list[ItemRecord]:
    """Score already generated videos (``(item id, uint8[F, H, W, 3])``) against the suite, without generating.

    Seeds are unknown for foreign videos and recorded as 0.
    """
    taxonomy = taxonomy_for(suite)
    return [
        score_item(suite[suite.index_of(item_id)], frames, 0, idm=idm, taxonomy=taxonomy, domain=suite.domain,
                   video_metrics=video_metrics)  # fmt: skip
        for item_id, frames in videos
    ]


def bundle_from_videos(
    videos: Sequence[tuple[str, np.ndarray]],
    suite: Suite,
    idm: Any,
    out_dir: str | Path,
    *,
    model_info: ModelInfo,
    video_metrics: bool = True,
) -> ResultBundle:
    """Score videos of every suite item (see :func:`score_videos`) and write their bundle to ``out_dir``."""
    out_dir = Path(out_dir)
    for record in score_videos(videos, suite, idm, video_metrics=video_metrics):
        write_json(out_dir / "items" / f"{record.id}.json", record.model_dump(mode="json"), indent=None, durable=True)
    return assemble_bundle(suite, out_dir, taxonomy=taxonomy_for(suite), model_info=model_info, idm=idm,
                           settings=EvalSettings(num_envs=0, save_videos=False))  # fmt: skip


def evaluate_ground_truth(suite: Suite, idm: Any, out_dir: str | Path) -> ResultBundle:
    """The ceiling row (the paper's "GT"): ``idm`` on the suite's own ground-truth videos, as a bundle named
    :data:`~evaluation.bundle.CEILING_MODEL_NAME`. No world model can be scored above what the IDM reads from the
    real game, so this is the number a model's action-following is compared with."""
    if not suite.has_ground_truth:
        raise ConfigError(f"suite {suite.name!r} has no ground-truth frames, so it has no IDM ceiling")
    videos = [(item.id, item.ground_truth) for item in suite]
    info = ModelInfo(name=CEILING_MODEL_NAME, description=f"{idm.name} on the ground-truth frames of {suite.name}")
    return bundle_from_videos(videos, suite, idm, out_dir, model_info=info, video_metrics=False)
