"""Ranking: one board per (suite, evaluator version), rows recomputed from the stored per-item records.

Nothing stored as a number is trusted here: every row's primary value, 95% interval, per-task F1, camera L1 and
PSNR/SSIM are recomputed from the submission's items with :func:`evaluation.scoring.compute_metrics` (the code that
wrote and verified the bundle; percentile bootstrap over items, fixed seed). Only throughput cannot be recomputed and
is shown as submitted.

* Only the latest submission per (model name, model version) per suite is ranked; the version is the checkpoint
  sha256, so a new checkpoint is a new row.
* Bundles of different evaluator versions are never ranked together: each evaluator version gets its own board.
* Reference rows (the official IDM on ground-truth video, the ceiling) are shown but take no band.
* Self-reported rows are ranked apart, below the checked ones: their videos were not re-scored here, so their
  predicted labels are a claim. Verified and reproduced rows share one ranking; self-reported rows get their own
  bands (shown ``s1``, ``s2``, ...).
* A row scoring above the ceiling (the IDM on the real frames) is flagged (:attr:`Row.above_ceiling`): no world model
  can be read better than the real game, so such a number is a defect or a forgery.

**Rank bands** (:data:`BAND_RULE`): rows are sorted by the primary value, highest first (ties: the higher interval
lower bound, then the earlier submission). The first row opens band 1 and is its top model. Each following row stays
in the current band if its 95% interval's upper bound is at least the lower bound of the current band's top model
(the two intervals overlap); otherwise it opens the next band and becomes that band's top model. So a band holds
the models that cannot be told apart from its top model at this suite's size, and band numbers only grow down the
table.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leaderboard.store import Store, SubmissionRecord, SuiteRecord

BAND_RULE = (
    "Rows are sorted by the primary metric (mean macro-F1 over tasks), highest first; ties go to the higher 95% CI "
    "lower bound, then the earlier submission. The first row opens band 1 and is its top model. Each following row "
    "stays in the current band if its 95% CI upper bound is at least the CI lower bound of the band's top model (the "
    "intervals overlap); otherwise it opens the next band and becomes that band's top model. CIs are percentile "
    "bootstraps over suite items (1000 resamples, seed 0), recomputed here from the stored per-item records. "
    "Reference rows (ground truth through the official IDM: the ceiling) take no band. Self-reported rows (videos not "
    "re-scored here) are ranked apart, below the verified and reproduced ones, with their own bands s1, s2, ...; a "
    "row above the ceiling is flagged."
)
CHECKED_TIERS = ("verified", "reproduced")


@dataclass(frozen=True)
class Row:
    """One ranked submission (numbers recomputed from its items, except throughput)."""

    band: int | None
    submission_id: int
    model: str
    model_version: str
    kind: str
    value: float
    ci_low: float
    ci_high: float
    n_items: int
    tasks: dict[str, float]
    """Task name -> macro-F1."""
    task_scores: dict[str, dict[str, float]]
    """Task name -> every score of the task (precision/recall/F1, micro and macro)."""
    camera_l1: float | None
    psnr: float | None
    ssim: float | None
    reward_mean: float
    fps: float | None
    device: str | None
    device_name: str
    num_envs: int | None
    parameters: int | None
    tier: str
    submitter: str
    submitted_at: str
    bundle_sha256: str
    above_ceiling: bool = False
    """The row's primary value exceeds the board's ceiling row (the IDM on ground truth): flagged in every view."""
    sampling: str = ""
    """How the frames were generated (``dpm-solver++, 18 steps``; ``naive decoding``), from the bundle's runtime."""
    previews: tuple[Path, ...] = ()
    """Preview videos stored with the submission (``rlir leaderboard submit|add`` copies a bundle's ``previews/``)."""
    lpips: float | None = None
    fvd: float | None = None
    """Mean LPIPS / FVD as the bundle reports them (present when its author supplied the backbone files)."""

    @property
    def checked(self) -> bool:
        """Videos re-scored (verified) or re-generated (reproduced) here; self-reported rows are ranked apart."""
        return self.tier in CHECKED_TIERS

    def to_json(self) -> dict[str, Any]:
        return {
            "band": self.band, "submission_id": self.submission_id, "model": self.model,
            "model_version": self.model_version, "kind": self.kind,
            "primary": {"value": self.value, "ci95": [self.ci_low, self.ci_high], "n_items": self.n_items},
            "tasks": self.task_scores, "camera_l1": self.camera_l1, "psnr": self.psnr, "ssim": self.ssim,
            "reward_mean": self.reward_mean,
            "throughput": None if self.fps is None else {"frames_per_second": self.fps, "device": self.device,
                                                         "device_name": self.device_name, "num_envs": self.num_envs},
            "parameters": self.parameters, "tier": self.tier, "submitter": self.submitter,
            "submitted_at": self.submitted_at, "bundle_sha256": self.bundle_sha256,
            "ranking": "reference" if self.kind == "reference" else "checked" if self.checked else "self-reported",
            "above_ceiling": self.above_ceiling,
            "sampling": self.sampling, "lpips": self.lpips, "fvd": self.fvd,
        }  # fmt: skip


@dataclass(frozen=True)
class Board:
    """The ranking of one suite under one evaluator version."""

    suite: SuiteRecord
    evaluator_version: int
    rows: list[Row]
    task_names: list[str] = field(default_factory=list)

    @property
    def has_camera(self) -> bool:
        return any(r.camera_l1 is not None for r in self.rows)

    @property
    def has_psnr(self) -> bool:
        return any(r.psnr is not None for r in self.rows)

    @property
    def has_ssim(self) -> bool:
        return any(r.ssim is not None for r in self.rows)

    def to_json(self) -> dict[str, Any]:
        s = self.suite
        return {
            "suite": {
                "name": s.name,
                "version": s.version,
                "sha256": s.sha256,
                "domain": s.domain,
                "idm": {"name": s.idm_name, "sha256": s.idm_sha256},
                "primary_metric": s.primary_metric,
                "n_items": len(s.item_ids),
            },  # fmt: skip
            "evaluator_version": self.evaluator_version,
            "tasks": self.task_names,
            "rows": [row.to_json() for row in self.rows],
        }


def assign_bands(intervals: Sequence[tuple[float, float]]) -> list[int]:
    """Band numbers for rows already sorted best first, given each row's ``(ci_low, ci_high)`` (see :data:`BAND_RULE`)."""
    bands: list[int] = []
    band, top_low = 0, None
    for low, high in intervals:
        if top_low is None or high < top_low:
            band, top_low = band + 1, low
        bands.append(band)
    return bands


def leaderboards(store: Store, *, suite: str | None = None, version: int | None = None,
                 evaluator_version: int | None = None) -> list[Board]:  # fmt: skip
    """Every board (or those of one suite name, optionally one version / evaluator version), newest evaluator first.

    Suites with no submission still get an (empty) board, so a fresh leaderboard shows what can be submitted to.
    """
    suites = [
        s for s in store.suites() if (suite is None or s.name == suite) and (version is None or s.version == version)
    ]
    from evaluation.bundle import EVALUATOR_VERSION

    boards = []
    for record in suites:
        submissions = store.submissions(suite_sha256=record.sha256)
        if evaluator_version is not None:
            versions = [evaluator_version]
        else:
            versions = sorted({s.evaluator_version for s in submissions}, reverse=True) or [EVALUATOR_VERSION]
        for ev in versions:
            boards.append(rank(store, record, [s for s in submissions if s.evaluator_version == ev], ev))
    return boards


def rank(store: Store, suite: SuiteRecord, submissions: Sequence[SubmissionRecord], evaluator_version: int) -> Board:
    """Rank submissions of one suite and one evaluator version (the latest per model name + version)."""
    if {s.evaluator_version for s in submissions} - {evaluator_version}:
        raise ValueError("bundles of different evaluator versions are never ranked together")
    latest: dict[tuple[str, str], SubmissionRecord] = {}
    for submission in sorted(submissions, key=lambda s: s.id):
        latest[(submission.model_name, submission.model_version)] = submission
    rows = [_row(store, s, suite.taxonomy) for s in latest.values()]
    rows.sort(key=lambda r: (-r.value, -r.ci_low, r.submission_id))
    ceiling = max((r.value for r in rows if r.kind == "reference"), default=None)
    bands: dict[int, int] = {}
    for checked in (True, False):  # two rankings: checked rows, then self-reported rows
        models = [r for r in rows if r.kind != "reference" and r.checked == checked]
        bands.update(zip((r.submission_id for r in models), assign_bands([(r.ci_low, r.ci_high) for r in models])))
    rows = [
        _with_band(r, bands.get(r.submission_id), ceiling is not None and r.kind != "reference" and r.value > ceiling)
        for r in rows
    ]
    # stable: references first, then the checked ranking, then the self-reported one
    rows.sort(key=lambda r: (r.kind != "reference", not r.checked))
    tasks = list(rows[0].tasks) if rows else []
    return Board(suite=suite, evaluator_version=evaluator_version, rows=rows, task_names=tasks)


def _with_band(row: Row, band: int | None, above_ceiling: bool) -> Row:
    from dataclasses import replace

    return replace(row, band=band, above_ceiling=above_ceiling)


_METRICS: dict[tuple, Any] = {}
_METRICS_LOCK = threading.Lock()


def recompute(store: Store, submission: SubmissionRecord, taxonomy: str):
    """The submission's :class:`~evaluation.bundle.Metrics` recomputed from its stored items (memoised per database
    and submission: entries are immutable, so a result never goes stale)."""
    from evaluation.scoring import compute_metrics

    key = (str(store.path.resolve()), submission.id, submission.bundle_sha256, taxonomy)
    with _METRICS_LOCK:
        cached = _METRICS.get(key)
    if cached is None:
        cached = compute_metrics(store.items(submission.id), taxonomy)
        with _METRICS_LOCK:
            _METRICS[key] = cached
    return cached


def _row(store: Store, submission: SubmissionRecord, taxonomy: str) -> Row:
    metrics = recompute(store, submission, taxonomy)
    throughput = submission.throughput or {}
    runtime = submission.header.get("runtime", {})
    low, high = metrics.primary.ci95
    return Row(
        band=None, submission_id=submission.id, model=submission.model_name, model_version=submission.model_version,
        kind=submission.model_kind, value=metrics.primary.value, ci_low=low, ci_high=high,
        n_items=metrics.primary.n_items, tasks={k: v["f1_macro"] for k, v in metrics.tasks.items()},
        task_scores=metrics.tasks,
        camera_l1=metrics.camera_l1, psnr=None if metrics.psnr is None else metrics.psnr["mean"],
        ssim=None if metrics.ssim is None else metrics.ssim["mean"], reward_mean=metrics.reward_mean,
        fps=throughput.get("frames_per_second"), device=throughput.get("device"),
        device_name=runtime.get("device_name", ""), num_envs=throughput.get("num_envs"),
        parameters=submission.parameters, tier=submission.tier, submitter=submission.submitter,
        submitted_at=submission.submitted_at, bundle_sha256=submission.bundle_sha256,
        sampling=describe_sampling(runtime) if submission.model_kind != "reference" else "",
        previews=tuple(sorted((store.artifacts_dir / PREVIEWS_DIRNAME / str(submission.id)).glob("*.mp4"))),
        lpips=_reported_mean(submission.metrics, "lpips"), fvd=_reported_mean(submission.metrics, "fvd"),
    )  # fmt: skip


def _reported_mean(metrics: dict[str, Any], name: str) -> float | None:
    value = (metrics or {}).get(name)
    return float(value["mean"]) if isinstance(value, dict) and isinstance(value.get("mean"), (int, float)) else None


PREVIEWS_DIRNAME = "previews"


def describe_sampling(runtime: dict[str, Any]) -> str:
    """A bundle runtime's sampling settings in a few words (NFD: sampler and steps; MineWorld: decoding)."""
    if runtime.get("sampler"):
        return f"{runtime['sampler']}, {runtime.get('sampling_steps')} steps"
    if not runtime.get("decoding"):
        return ""
    parts = [f"{runtime['decoding']} decoding"]
    if runtime["decoding"] == "diagonal" and runtime.get("window") is not None:
        parts.append(f"window {runtime['window']}")
    parts += [f"{k.replace('_', '-')} {runtime[k]}" for k in ("top_p", "top_k") if runtime.get(k) is not None]
    if runtime.get("temperature") not in (None, 1.0):
        parts.append(f"temperature {runtime['temperature']}")
    return ", ".join(parts)
