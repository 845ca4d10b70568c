"""Submission validation: the one code path behind ``rlir leaderboard submit|add`` and ``POST /api/submissions``.

A submission is a result bundle (``bundle.json``), optionally with its videos (``videos/<item>.npz``). Nothing in it
is trusted:

1. **Schema**: valid JSON, a supported ``schema_version`` and ``evaluator_version``, :func:`parse_bundle`'s schema,
   integers within 64 bits, strings of at most 2000 characters, finite numbers.
2. **Suite**: registered here with the same name, version and manifest sha256; the bundle's IDM (name + sha256) is
   the suite's official IDM and its taxonomy the suite's.
0. **Size first**: before anything is decoded, the bundle's bytes and its number of JSON values (counted from
   ``,`` ``[`` ``{`` in the raw bytes, without building anything) must fit what the largest registered suite can
   need (:func:`json_budget`), so a bundle of millions of labels costs neither memory nor CPU.
3. **Completeness**: every suite item exactly once, in the suite's order (the bootstrap interval depends on it), and
   no foreign ids.
4. **Ground truth**: every item's ``gt_labels`` equal the labels the leaderboard derived from the suite's own actions
   at registration (so also the number of frames and tasks); ``pred_labels`` have the same shape, PSNR/SSIM one value
   per frame.
5. **Numbers**: every aggregate recomputed from the per-item records (:func:`evaluation.scoring.verify_metrics`
   returns nothing).
6. **Replays**: a bundle whose canonical sha256 is already stored is refused.
7. **Model names** (:mod:`leaderboard.names`): from a documented ASCII character set, NFKC-normalised, no control
   characters; a name (and every look-alike of it) belongs to its first owner (a token id, or a local name); names
   imitating ``ground-truth`` are reserved for the leaderboard's reference rows (the IDM ceiling), which only the
   operator adds; a checkpoint (file or weights sha256) already submitted by another owner is refused.
8. **Plausible values**: every string without control characters and within its length limit, frames/s and the
   other runtime fields within plausible ranges (the bundle schema's bounds).

Tiers: ``self-reported`` (the bundle alone passes 0-8; its predicted labels are a claim); ``verified`` (videos
included: each file's :func:`~worldmodels.hashing.sha256_array` equals its record's ``video_sha256``, no video is the
suite's ground truth or nearly so (:data:`COPY_PSNR_DB`), and re-scoring them here with the suite's official IDM
(:func:`~evaluation.evaluator.score_videos`) gives the submitted records exactly, seeds aside);
``reproduced`` (the operator re-generated the suite here from the checkpoint named in the bundle, with the recorded
seed and settings, and got identical videos and records). Nothing is stored for a rejected submission.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import threading
import unicodedata
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evaluation.bundle import (
    BUNDLE_SCHEMA_VERSION,
    CEILING_MODEL_NAME,
    EVALUATOR_VERSION,
    PRIMARY_METRIC,
    ResultBundle,
    parse_bundle,
)
from leaderboard.names import name_problem, reserved_lookalike
from leaderboard.store import (
    DuplicateSubmission,
    OwnershipError,
    Store,
    SubmissionRecord,
    SuiteRecord,
    local_principal,
    model_identities,
)
from worldmodels.errors import DataError, MissingFileError
from worldmodels.hashing import sha256_array, sha256_json

import numpy as np

if TYPE_CHECKING:
    from evaluation.bundle import ItemRecord
    from evaluation.suites import Suite

SUPPORTED_SCHEMA_VERSIONS = (BUNDLE_SCHEMA_VERSION,)
SUPPORTED_EVALUATOR_VERSIONS = (EVALUATOR_VERSION,)
RESERVED_MODEL_PREFIX = "ground-truth"
MAX_STRING = 2000
MAX_LISTED_PROBLEMS = 12
RESCORE_CHUNK = 16
MAX_BUNDLE_BYTES = 32 * 1024 * 1024
"""Largest ``bundle.json`` read at all (the server's default body limit)."""
JSON_SLACK_VALUES = 65_536
"""JSON values allowed beyond a suite's need (commas inside free-text strings are counted too)."""
COPY_PSNR_DB = 40.0
"""A generated frame this close to its ground-truth frame (PSNR in dB, infinite for an exact copy) counts as a copy;
a verified submission in which most frames are copies is refused. Models generate frames at 10-30 dB from the ground
truth; 40 dB is what re-encoding the real frames leaves."""
_INT64 = 2**63


class SubmissionRejected(DataError):
    """A submission failed validation; ``reasons`` lists every problem found, ``status`` is the HTTP status
    (400 malformed, 409 replayed, 422 invalid)."""

    def __init__(self, reasons: list[str], *, status: int = 422) -> None:
        self.reasons = list(reasons)
        self.status = status
        super().__init__("submission rejected: " + "; ".join(self.reasons))


@dataclass(frozen=True)
class Reproduction:
    """How the operator re-generates a submission: the checkpoint (registered name or path) and how to load it."""

    checkpoint: str
    config: str | None = None
    vae_config: str | None = None
    device: str = "cpu"


@dataclass(frozen=True)
class Accepted:
    """A submission that passed validation (store it with :func:`store_submission`)."""

    tier: str
    bundle: ResultBundle
    bundle_sha256: str
    suite: SuiteRecord
    kind: str
    """``"reference"`` for the IDM-ceiling row added by the operator, else ``"model"``."""
    videos: dict[str, Path] | None = None
    """Item id -> the verified ``.npz`` file, when videos were included."""


def bundle_sha256(bundle: ResultBundle) -> str:
    """sha256 of the canonical JSON of the parsed bundle (defaults filled in, keys sorted): its identity."""
    return sha256_json(bundle.model_dump(mode="json"))


def model_kind(name: str) -> str:
    return "reference" if name == CEILING_MODEL_NAME else "model"


def validate_submission(
    source: bytes | str | os.PathLike | Mapping[str, Any],
    store: Store,
    *,
    videos_dir: str | Path | None = None,
    submitter: str | None = None,
    allow_reference: bool = False,
    reproduce: Reproduction | None = None,
    owner: str | None = None,
) -> Accepted:
    """Check a submission against ``store``; returns :class:`Accepted` or raises :class:`SubmissionRejected`.

    Args:
        source: ``bundle.json`` bytes (or an already decoded dict), or the path of a bundle directory or file.
        store: the leaderboard store (suites, earlier submissions).
        videos_dir: directory the bundle's ``videos`` paths are relative to; with it the submission is re-scored
            (tier ``verified``). Default for a bundle directory: the directory itself if it has ``videos/``.
        submitter: who submits (display name); a model name already owned by someone else is refused.
        owner: the owner key of ``submitter`` (a token's ``token:<id>``; default ``local:<submitter>``).
        allow_reference: accept the reserved reference model names (the operator's seed bundles).
        reproduce: re-generate the suite from this checkpoint here (tier ``reproduced``).

    Raises:
        SubmissionRejected: every reason found.
        MissingFileError: ``source`` is a path that does not exist.
    """
    raw, videos_dir = _read_source(source, videos_dir)
    if not isinstance(raw, Mapping):
        _check_budget(raw, store)
    data = _decode(raw)
    _check_versions(data)
    try:
        bundle = parse_bundle(data)
    except DataError as error:
        raise SubmissionRejected([str(error)], status=422) from None
    problems = _check_values(bundle.model_dump(mode="json"))  # after parsing: what would be stored
    if problems:
        raise SubmissionRejected(problems)
    digest = bundle_sha256(bundle)
    _refuse_replay(store, digest)
    suite = store.suite(bundle.suite.name, bundle.suite.version)
    problems = _check_suite(bundle, suite, store)
    if suite is not None:
        problems += _check_items(bundle, suite)
        problems += _check_truth(bundle, suite) if not problems else []
        problems += _check_numbers(bundle) if not problems else []
    if submitter is not None and owner is None:
        owner = local_principal(submitter)
    problems += _check_model(bundle, store, owner, allow_reference)
    if problems:
        _refuse_replay(store, digest)  # stored meanwhile by a concurrent submission: say replay, not "name taken"
        raise SubmissionRejected(problems)
    tier, videos = "self-reported", None
    if videos_dir is not None:
        videos = _verify_videos(bundle, suite, Path(videos_dir), allow_ground_truth=allow_reference)
        tier = "verified"
    if reproduce is not None:
        _reproduce(bundle, suite, reproduce)
        tier = "reproduced"
    kind = model_kind(bundle.model.name) if allow_reference else "model"
    return Accepted(tier=tier, bundle=bundle, bundle_sha256=digest, suite=suite, kind=kind, videos=videos)


def _refuse_replay(store: Store, digest: str) -> None:
    existing = store.find_bundle(digest)
    if existing is not None:
        raise SubmissionRejected([f"bundle {digest} was already submitted (submission #{existing}); replays are refused"],
                                 status=409)  # fmt: skip


def store_submission(accepted: Accepted, store: Store, *, submitter: str, owner: str | None = None,
                     submitted_at: str | None = None) -> SubmissionRecord:  # fmt: skip
    """Store an accepted submission; a replay or ownership conflict that raced past validation is still refused."""
    try:
        return store.add_submission(
            accepted.bundle, tier=accepted.tier, submitter=submitter, kind=accepted.kind, videos=accepted.videos,
            owner=owner, submitted_at=submitted_at,
        )  # fmt: skip
    except DuplicateSubmission as error:
        raise SubmissionRejected([str(error)], status=409) from None
    except OwnershipError as error:
        raise SubmissionRejected([str(error)]) from None


def submit_local(
    source: bytes | str | os.PathLike | Mapping[str, Any],
    store: Store,
    *,
    submitter: str,
    videos_dir: str | Path | None = None,
    allow_reference: bool = False,
    reproduce: Reproduction | None = None,
    owner: str | None = None,
    submitted_at: str | None = None,
) -> SubmissionRecord:
    """Validate and store in one call (what ``rlir leaderboard submit`` without ``--server`` and ``add`` do, and
    the server with the token's owner key)."""
    accepted = validate_submission(source, store, videos_dir=videos_dir, submitter=submitter,
                                   allow_reference=allow_reference, reproduce=reproduce, owner=owner)  # fmt: skip
    return store_submission(accepted, store, submitter=submitter, owner=owner, submitted_at=submitted_at)


def register_suite(store: Store, suite_source: str | Path, idm_source: str | Path, *,
                   primary_metric: str = PRIMARY_METRIC) -> SuiteRecord:  # fmt: skip
    """Load a suite (registered name or directory) and its official IDM (name or file), and register both.

    Paths are stored absolute, so the server can load them to re-score videos.
    """
    from evaluation.idm.registry import load_idm
    from evaluation.scoring import taxonomy_for
    from evaluation.suites import load_suite

    suite = load_suite(suite_source)
    idm = load_idm(idm_source)
    if idm.domain != suite.domain:
        raise DataError(f"IDM {idm.name!r} reads {idm.domain!r} actions, suite {suite.name!r} is {suite.domain!r}")
    if idm.sha256 is None:
        raise DataError(f"IDM {idm.name!r} has no sha256 (not loaded from a file); the leaderboard pins IDM files")
    record = SuiteRecord(
        name=suite.name, version=suite.version, sha256=suite.sha256, domain=suite.domain,
        taxonomy=taxonomy_for(suite).name, idm_name=idm.name, idm_sha256=idm.sha256, item_ids=tuple(suite.item_ids),
        primary_metric=primary_metric, suite_source=_source_text(suite_source), idm_source=_source_text(idm_source),
        gt_labels=suite_ground_truth_labels(suite),
    )  # fmt: skip
    _CACHE.put(("suite", record.suite_source, suite.sha256), suite)
    _CACHE.put(("idm", record.idm_source, idm.sha256), idm)
    return store.add_suite(record)


def suite_ground_truth_labels(suite: Suite) -> list[list[list[int]]]:
    """The labels every bundle of ``suite`` must carry as ``gt_labels``: the taxonomy's reading of each item's
    target actions (what :func:`~evaluation.scoring.score_item` writes), ``[items][frames][tasks]``."""
    from evaluation.scoring import target_actions, taxonomy_for

    taxonomy = taxonomy_for(suite)
    return [taxonomy.labels(target_actions(item, suite.domain)).tolist() for item in suite]


def _source_text(source: str | Path) -> str:
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else str(source)


# -- reading ---------------------------------------------------------------------------------------------------------


def _read_source(source: Any, videos_dir: str | Path | None) -> tuple[Any, Path | None]:
    if isinstance(source, (bytes, bytearray, memoryview, Mapping)):
        return source, None if videos_dir is None else Path(videos_dir)
    path = Path(source)
    if path.is_dir():
        if videos_dir is None and (path / "videos").is_dir():
            videos_dir = path
        path = path / "bundle.json"
    if not path.is_file():
        raise MissingFileError(f"result bundle {path} not found; `rlir eval --out DIR` writes DIR/bundle.json")
    size = path.stat().st_size
    if size > MAX_BUNDLE_BYTES:
        raise SubmissionRejected([f"{path} has {size} bytes; a bundle.json holds at most {MAX_BUNDLE_BYTES}"], status=413)
    return path.read_bytes(), None if videos_dir is None else Path(videos_dir)


def json_budget(suites: list[SuiteRecord]) -> tuple[int, int]:
    """``(bytes, JSON values)`` the largest bundle of any of ``suites`` can need: per item, per frame, the gt and
    predicted labels of every task and a PSNR and SSIM value, plus the per-item and aggregate fields, plus
    :data:`JSON_SLACK_VALUES`. A label takes at most 24 bytes and a float 40 in indented JSON."""
    values = bytes_ = 0
    for suite in suites:
        frames, tasks = suite.n_frames or 0, suite.n_tasks or 0
        per_item = 2 * frames * tasks + 2 * frames + 2 * frames + 64
        aggregate = 64 * (tasks + 4) + 4 * frames + 256
        values = max(values, len(suite.item_ids) * per_item + aggregate)
        bytes_ = max(bytes_, len(suite.item_ids) * (48 * frames * tasks + 160 * frames + 1024) + 80 * aggregate)
    return bytes_ + 64 * JSON_SLACK_VALUES, values + JSON_SLACK_VALUES


def _check_budget(raw: Any, store: Store) -> None:
    """Refuse a body larger than any registered suite can need, before decoding it (``bytes.count`` allocates
    nothing; every JSON value after the first of its container follows a comma)."""
    suites = store.suites()
    max_bytes, max_values = json_budget(suites)
    data = raw if isinstance(raw, (bytes, bytearray)) else memoryview(raw).tobytes()
    if len(data) > max_bytes:
        raise SubmissionRejected([f"the bundle has {len(data)} bytes, more than a bundle of the registered suites can "
                                  f"need ({max_bytes}); submit the bundle `rlir eval` wrote"], status=413)  # fmt: skip
    values = data.count(b",") + data.count(b"[") + data.count(b"{")
    if values > max_values:
        raise SubmissionRejected([f"the bundle holds about {values} JSON values, more than a bundle of the registered "
                                  f"suites can need ({max_values}): label lists longer than the suite?"])  # fmt: skip


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _decode(raw: Any) -> dict[str, Any]:
    if isinstance(raw, Mapping):
        return dict(raw)
    try:
        data = json.loads(bytes(raw).decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise SubmissionRejected(["the bundle is not UTF-8 text"], status=400) from None
    except json.JSONDecodeError as error:
        raise SubmissionRejected([f"not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"],
                                 status=400) from None  # fmt: skip
    except (ValueError, RecursionError) as error:
        raise SubmissionRejected([f"not valid JSON: {error}"], status=400) from None
    if not isinstance(data, dict):
        raise SubmissionRejected([f"a result bundle is a JSON object, got {type(data).__name__}"], status=400)
    return data


def _check_versions(data: dict[str, Any]) -> None:
    problems = []
    if data.get("kind") != "rlir-result":
        problems.append(f"kind must be 'rlir-result' (an `rlir eval` bundle), got {data.get('kind')!r}")
    if data.get("schema_version") not in SUPPORTED_SCHEMA_VERSIONS:
        problems.append(f"schema_version {data.get('schema_version')!r} is not supported (supported: "
                        f"{list(SUPPORTED_SCHEMA_VERSIONS)}); re-run `rlir eval` with this rlir version")  # fmt: skip
    if data.get("evaluator_version") not in SUPPORTED_EVALUATOR_VERSIONS:
        problems.append(f"evaluator_version {data.get('evaluator_version')!r} is not supported (supported: "
                        f"{list(SUPPORTED_EVALUATOR_VERSIONS)}); re-run `rlir eval` with this rlir version")  # fmt: skip
    if problems:
        raise SubmissionRejected(problems)


def _check_values(data: Any, path: str = "") -> list[str]:
    """Integers fit SQLite's 64 bits, strings are bounded, floats are finite (canonical JSON refuses NaN/inf)."""
    problems: list[str] = []
    stack = [(path, data)]
    while stack and len(problems) < MAX_LISTED_PROBLEMS:
        where, value = stack.pop()
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int) and not -_INT64 <= value < _INT64:
            problems.append(f"{where}: integer {value} is outside the 64-bit range")
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{where}: {value} is not a finite number")
        elif isinstance(value, str) and len(value) > MAX_STRING:
            problems.append(f"{where}: a string of {len(value)} characters (at most {MAX_STRING})")
        elif isinstance(value, str) and (bad := _control_character(value)) is not None:
            problems.append(f"{where}: control or format character {bad} in {ascii(value[:60])}; remove it")
        elif isinstance(value, dict):
            for key, child in value.items():
                if len(key) > MAX_STRING:
                    problems.append(f"{where}: a key of {len(key)} characters (at most {MAX_STRING})")
                stack.append((f"{where}.{key[:40]}" if where else key[:40], child))
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", child) for i, child in enumerate(value))
    return problems


def _control_character(text: str) -> str | None:
    """The first control / format / separator character of ``text`` as an escape (``\\x1b``), or None. Terminal
    escapes, zero-width and bidi characters would let a stored string rewrite or hide what the views print."""
    if text.isascii() and text.isprintable():
        return None
    for c in text:
        if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            return ascii(c)[1:-1]
    return None


# -- the checks ------------------------------------------------------------------------------------------------------


def _check_suite(bundle: ResultBundle, suite: SuiteRecord | None, store: Store) -> list[str]:
    ref = bundle.suite
    if suite is None:
        known = ", ".join(f"{s.name} v{s.version}" for s in store.suites()) or "none"
        return [f"suite {ref.name!r} v{ref.version} is not registered on this leaderboard (registered: {known})"]
    problems = []
    if ref.sha256 != suite.sha256:
        problems.append(f"suite {ref.name!r} v{ref.version} has sha256 {suite.sha256}, the bundle says {ref.sha256}: "
                        "evaluate on the released suite")  # fmt: skip
    if bundle.idm.name != suite.idm_name or bundle.idm.sha256 != suite.idm_sha256:
        problems.append(f"the bundle was scored with IDM {bundle.idm.name!r} (sha256 {bundle.idm.sha256}); suite "
                        f"{suite.name!r} is scored with {suite.idm_name!r} (sha256 {suite.idm_sha256})")  # fmt: skip
    if bundle.taxonomy != suite.taxonomy:
        problems.append(f"taxonomy {bundle.taxonomy!r} is not the suite's ({suite.taxonomy!r})")
    return problems


def _check_items(bundle: ResultBundle, suite: SuiteRecord) -> list[str]:
    ids = [item.id for item in bundle.items]
    expected = list(suite.item_ids)
    if ids == expected:
        return []
    seen: set[str] = set()
    duplicated = sorted({i for i in ids if i in seen or seen.add(i)})
    known = set(expected)
    missing = [i for i in expected if i not in seen]
    foreign = [i for i in dict.fromkeys(ids) if i not in known]
    problems = []
    for label, values in (("duplicated", duplicated), ("missing", missing), ("not in the suite", foreign)):
        if values:
            shown = ", ".join(repr(v[:60]) for v in values[:5]) + (
                f" (+{len(values) - 5} more)" if len(values) > 5 else ""
            )
            problems.append(f"{len(values)} item id(s) {label}: {shown}")
    if not problems:
        problems.append("items are not in the suite's order; keep the order `rlir eval` writes")
    return problems


def _check_numbers(bundle: ResultBundle) -> list[str]:
    from evaluation.scoring import verify_metrics  # loads torch (video metrics): not at the leaderboard's start-up

    try:
        mismatches = verify_metrics(bundle)
    except (ValueError, TypeError, IndexError, OverflowError) as error:
        return [f"the aggregates cannot be recomputed from the items: {error}"]
    if not mismatches:
        return []
    more = len(mismatches) - MAX_LISTED_PROBLEMS
    return [f"aggregate differs from the per-item records: {m}" for m in mismatches[:MAX_LISTED_PROBLEMS]] + (
        [f"(+{more} more aggregate mismatches)"] if more > 0 else []
    )


def _check_truth(bundle: ResultBundle, suite: SuiteRecord) -> list[str]:
    """Ground-truth labels (hence frame and task counts) as derived from the suite; predictions and per-frame video
    metrics of the same length. Items are already known to be the suite's, in its order."""
    if suite.gt_labels is None:
        return [f"this leaderboard has no ground-truth labels of suite {suite.name!r} v{suite.version} (registered by an "
                "older rlir); the operator re-runs `rlir leaderboard suite add` for it"]  # fmt: skip
    frames, tasks = suite.n_frames, suite.n_tasks
    problems = []
    for item, truth in zip(bundle.items, suite.gt_labels, strict=True):
        where = f"item {item.id[:60]!r}"
        if item.gt_labels != truth:
            shape = f"{len(item.gt_labels)} frames" + (f" x {len(item.gt_labels[0])}" if item.gt_labels else "")
            problems.append(f"{where}: gt_labels ({shape}) differ from the suite's ground truth ({frames} frames x "
                            f"{tasks} tasks, derived from its actions); submit what `rlir eval` wrote")  # fmt: skip
        elif len(item.pred_labels) != frames or any(len(row) != tasks for row in item.pred_labels):
            problems.append(f"{where}: pred_labels must be {frames} frames x {tasks} tasks like the suite's")
        for name in ("psnr", "ssim"):
            values = getattr(item, name)
            if values is not None and len(values) != frames:
                problems.append(f"{where}: {name} has {len(values)} values, the suite has {frames} frames per item")
        if len(problems) >= MAX_LISTED_PROBLEMS:
            break
    return problems[:MAX_LISTED_PROBLEMS]


def _check_model(bundle: ResultBundle, store: Store, owner: str | None, allow_reference: bool) -> list[str]:
    name = bundle.model.name
    problem = name_problem(name)
    if problem is not None and not (allow_reference and name == CEILING_MODEL_NAME):
        return [problem]
    problems = []
    reserved = reserved_lookalike(name)
    if reserved is not None and not allow_reference:
        problems.append(f"model names like {reserved!r} are reserved for the leaderboard's reference rows; choose "
                        "another name")  # fmt: skip
    if owner is not None:
        problems += store.ownership_conflicts(name, model_identities(bundle.model), owner)
    return problems


# -- verified: videos re-scored here ---------------------------------------------------------------------------------


def _verify_videos(bundle: ResultBundle, suite: SuiteRecord, directory: Path, *,
                   allow_ground_truth: bool = False) -> dict[str, Path]:  # fmt: skip
    from evaluation.bundle import load_video
    from evaluation.metrics.video import psnr_per_frame

    if bundle.videos is None:
        raise SubmissionRejected(["videos were supplied but the bundle lists none (its `videos` field is null)"])
    ids = [item.id for item in bundle.items]
    problems = [f"no video listed for item {i!r}" for i in ids if i not in bundle.videos][:MAX_LISTED_PROBLEMS]
    problems += [f"video listed for {k[:60]!r}, which is not a suite item" for k in bundle.videos if k not in set(ids)][
        :MAX_LISTED_PROBLEMS
    ]
    if problems:
        raise SubmissionRejected(problems)
    loaded_suite, idm = _load_scoring(suite)
    h, w = loaded_suite.frame_size
    shape = (loaded_suite.n_frames, h, w, 3)
    files: dict[str, Path] = {}
    copied_frames = 0
    for start in range(0, len(bundle.items), RESCORE_CHUNK):
        chunk = bundle.items[start : start + RESCORE_CHUNK]
        videos: list[tuple[str, np.ndarray]] = []
        for item in chunk:
            relative = bundle.videos[item.id]
            try:
                path = _video_path(directory, relative, max_bytes=_frame_bytes(shape))
                frames = load_video(directory, relative)
            except (DataError, MissingFileError) as error:
                problems.append(f"item {item.id!r}: {error}")
                continue
            if frames.dtype.name != "uint8" or tuple(frames.shape) != shape:
                found = f"{frames.dtype}{list(frames.shape)}"
                problems.append(f"item {item.id!r}: video is {found}, expected uint8{list(shape)}")
            elif sha256_array(frames) != item.video_sha256:
                problems.append(f"item {item.id!r}: video sha256 {sha256_array(frames)} differs from the record's "
                                f"{item.video_sha256}")  # fmt: skip
            else:
                videos.append((item.id, frames))
                files[item.id] = path
        if problems:
            raise SubmissionRejected(problems[:MAX_LISTED_PROBLEMS])
        if loaded_suite.has_ground_truth and not allow_ground_truth:
            for item_id, frames in videos:
                truth = loaded_suite[loaded_suite.index_of(item_id)].ground_truth
                if np.array_equal(frames, truth):
                    problems.append(f"item {item_id!r}: the video is the suite's ground truth, not a model's output")
                copied_frames += int((psnr_per_frame(frames[None], truth[None])[0] >= COPY_PSNR_DB).sum())
            if problems:
                raise SubmissionRejected(problems[:MAX_LISTED_PROBLEMS])
        problems += _compare_records(chunk, _rescore(videos, loaded_suite, idm, chunk), ignore_seed=True)
        if problems:
            raise SubmissionRejected(problems[:MAX_LISTED_PROBLEMS])
    total_frames = len(bundle.items) * loaded_suite.n_frames
    if 2 * copied_frames > total_frames:
        raise SubmissionRejected([f"{copied_frames} of {total_frames} frames are within {COPY_PSNR_DB:g} dB PSNR of the "
                                  "suite's ground truth: these videos are (re-encoded) ground truth, not a model's "
                                  "output"])  # fmt: skip
    return files


def _frame_bytes(shape: tuple[int, ...]) -> int:
    return math.prod(shape) + 4096  # the .npy header is small; anything larger is not the expected array


def _video_path(directory: Path, relative: str, *, max_bytes: int) -> Path:
    """The video file, after refusing paths outside ``directory`` and archives that would inflate past the
    expected array (a decompression bomb)."""
    root = directory.resolve()
    path = (root / relative).resolve()
    if root not in path.parents:
        raise DataError(f"video path {relative!r} escapes the bundle directory")
    if not path.is_file():
        raise MissingFileError(f"video {relative!r} listed in the bundle is missing")
    try:
        with zipfile.ZipFile(path) as archive:
            sizes = {info.filename: info.file_size for info in archive.infolist()}
    except (zipfile.BadZipFile, OSError) as error:
        raise DataError(f"video {relative!r} is not an .npz archive ({error})") from None
    if set(sizes) != {"frames.npy"} or sizes["frames.npy"] > max_bytes:
        raise DataError(f"video {relative!r} must hold only frames.npy of at most {max_bytes} bytes, holds {sizes}")
    return path


def _rescore(
    videos: list[tuple[str, np.ndarray]], suite: Suite, idm: Any, records: list[ItemRecord]
) -> list[ItemRecord]:
    from evaluation.evaluator import score_videos

    video_metrics = any(record.psnr is not None for record in records)
    return score_videos(videos, suite, idm, video_metrics=video_metrics)


def _compare_records(submitted: list[ItemRecord], rescored: list[ItemRecord], *, ignore_seed: bool) -> list[str]:
    problems = []
    for original, fresh in zip(submitted, rescored, strict=True):
        if ignore_seed:
            fresh = fresh.model_copy(update={"seed": original.seed})
        if fresh != original:
            fields = [k for k in type(original).model_fields if getattr(fresh, k) != getattr(original, k)]
            problems.append(f"item {original.id!r}: {', '.join(fields)} differ from what this leaderboard computes "
                            "from the video")  # fmt: skip
    return problems


# -- reproduced: re-generated here -----------------------------------------------------------------------------------


def _reproduce(bundle: ResultBundle, suite: SuiteRecord, spec: Reproduction) -> None:
    from evaluation.evaluator import EvalSettings, as_request, evaluate
    from worldmodels.registry import load_world_model, resolve_checkpoint_path, sha256_file

    from worldmodels.weights import tensors_sha256

    pinned, pinned_weights = bundle.model.checkpoint_sha256, bundle.model.weights_sha256
    if pinned is None and pinned_weights is None:
        raise SubmissionRejected(["the bundle's model has no checkpoint_sha256 or weights_sha256, so it cannot be "
                                  "reproduced"])  # fmt: skip
    path = resolve_checkpoint_path(spec.checkpoint)
    if path is None:
        raise SubmissionRejected([f"checkpoint {spec.checkpoint!r} not found (a registered model name or a file)"])
    same_file = pinned is not None and sha256_file(path) == pinned
    if not same_file and pinned_weights is None:  # identity by the file when that is all we know
        raise SubmissionRejected([f"checkpoint {path} has sha256 {sha256_file(path)}, the bundle pins {pinned}"])
    loaded_suite, idm = _load_scoring(suite)
    options = {k: v for k, v in (("config", spec.config), ("vae_config", spec.vae_config)) if v is not None}
    try:
        model = load_world_model(spec.checkpoint, device=spec.device, **options)
    except (ValueError, FileNotFoundError) as error:
        raise SubmissionRejected([f"checkpoint {path} cannot be loaded ({error}); the bundle pins weights "
                                  f"{pinned_weights or pinned}"]) from None  # fmt: skip
    if pinned_weights is not None and tensors_sha256(model.state_dict()) != pinned_weights:
        raise SubmissionRejected([f"the weights loaded from {path} have content hash {tensors_sha256(model.state_dict())}"
                                  f", the bundle pins {pinned_weights}"])  # fmt: skip
    run = bundle.runtime
    sampler, sampling_steps = run.sampler, run.sampling_steps
    if sampler is None and hasattr(model, "sampling") and hasattr(model.sampling, "steps"):
        # an NFD bundle from before runtime recorded the sampler ran the checkpoint's stored setting
        from worldmodels.nfd.sampling import PUBLIC_NAME

        sampler, sampling_steps = PUBLIC_NAME[model.sampling.sampler], model.sampling.steps
    settings = as_request(EvalSettings(
        num_envs=max(1, run.num_envs), seed=run.seed, decoding=run.decoding, window=run.window,
        temperature=run.temperature,
        top_p=run.top_p, top_k=run.top_k, save_videos=False,
        video_metrics=any(item.psnr is not None for item in bundle.items),
        sampler=sampler, sampling_steps=sampling_steps,
    ))  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="rlir-reproduce-") as tmp:
        regenerated = evaluate(model, loaded_suite, idm, tmp, model_info=bundle.model, settings=settings,
                               resume=False, progress=False)  # fmt: skip
    problems = [
        f"item {a.id!r}: re-generated video sha256 {b.video_sha256} differs from the submitted {a.video_sha256}"
        for a, b in zip(bundle.items, regenerated.items, strict=True)
        if a.video_sha256 != b.video_sha256
    ]
    problems = problems or _compare_records(bundle.items, regenerated.items, ignore_seed=False)
    if problems:
        raise SubmissionRejected(problems[:MAX_LISTED_PROBLEMS])


# -- loading the suite data and the official IDM (cached: a server re-scores many submissions) -------------------------


class _Cache:
    def __init__(self) -> None:
        self._values: dict[tuple, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple, load) -> Any:
        with self._lock:  # one load at a time: IDMs are large and loading twice helps nobody
            if key not in self._values:
                self._values[key] = load()
            return self._values[key]

    def put(self, key: tuple, value: Any) -> None:
        with self._lock:
            self._values[key] = value


_CACHE = _Cache()


def _load_scoring(suite: SuiteRecord) -> tuple[Suite, Any]:
    """The suite data and the official IDM, checked against the pinned sha256s."""
    from evaluation.idm.registry import load_idm
    from evaluation.suites import load_suite

    if suite.suite_source is None or suite.idm_source is None:
        raise SubmissionRejected([f"this leaderboard has no local copy of suite {suite.name!r} or its IDM, so it cannot "
                                  "re-score videos; submit bundle.json alone (self-reported tier)"])  # fmt: skip
    try:
        loaded = _CACHE.get(("suite", suite.suite_source, suite.sha256),
                            lambda: load_suite(suite.suite_source, expected_sha256=suite.sha256))  # fmt: skip
        idm = _CACHE.get(("idm", suite.idm_source, suite.idm_sha256), lambda: load_idm(suite.idm_source))
    except (ValueError, FileNotFoundError) as error:
        reason = f"cannot load suite {suite.name!r} or its IDM here to re-score videos: {error}"
        raise SubmissionRejected([reason]) from None
    if idm.sha256 != suite.idm_sha256:
        raise SubmissionRejected([f"the IDM at {suite.idm_source} has sha256 {idm.sha256}, suite {suite.name!r} pins "
                                  f"{suite.idm_sha256}; restore the official IDM file"])  # fmt: skip
    return loaded, idm
