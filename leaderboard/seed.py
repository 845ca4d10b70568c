"""Pre-population: the embedded suite and the bundles shipped with the package.

:func:`seed_store` registers ``crafter-af-v1`` bound to its official IDM ``crafter-idm-heldout`` (when both are
available in this installation) and adds every ``leaderboard/seed_bundles/*.json`` (ground-truth ceiling, bundled
models) as submitter ``rlir`` (owner key ``local:rlir``, a name no token can take), dated by the bundles' own
``created_at``. Seed bundles go through the same validation as any submission; they may use the
reserved reference name ``"ground-truth (IDM ceiling)"`` (:data:`leaderboard.validate.CEILING_MODEL_NAME`), which
marks the row as the ceiling. ``show``, ``export`` and ``serve`` seed a store that has no suite yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from leaderboard.store import SEED_SUBMITTER, Store, SuiteRecord
from leaderboard.validate import SubmissionRejected, register_suite, store_submission, validate_submission

SEED_SUITE = "crafter-af-v1"
SEED_IDM = "crafter-idm-heldout"
SEED_BUNDLES_DIR = Path(__file__).with_name("seed_bundles")


@dataclass
class SeedReport:
    suite: SuiteRecord | None = None
    added: list[int] = field(default_factory=list)
    """Submission ids added."""
    already_present: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def seed_store(store: Store, *, bundles_dir: str | Path = SEED_BUNDLES_DIR, suite: str = SEED_SUITE,
               idm: str = SEED_IDM) -> SeedReport:  # fmt: skip
    """Register the embedded suite and add the shipped bundles (idempotent: present entries are skipped).

    Raises:
        SubmissionRejected: a shipped bundle fails validation (a packaging bug: it names the file).
    """
    report = SeedReport()
    try:
        report.suite = register_suite(store, suite, idm)
    except (ValueError, FileNotFoundError) as error:
        report.notes.append(f"suite {suite!r} with IDM {idm!r} not registered: {error}")
    for path in sorted(Path(bundles_dir).glob("*.json")):
        try:
            # "submitted" is when the shipped bundle was made, not when this database happened to be seeded
            accepted = validate_submission(path, store, submitter=SEED_SUBMITTER, allow_reference=True)
            record = store_submission(accepted, store, submitter=SEED_SUBMITTER,
                                      submitted_at=accepted.bundle.created_at)  # fmt: skip
        except SubmissionRejected as error:
            if error.status == 409:
                report.already_present.append(path.name)
                continue
            raise SubmissionRejected([f"seed bundle {path}: {r}" for r in error.reasons], status=error.status) from None
        report.added.append(record.id)
    return report


def seed_if_empty(store: Store, **kwargs) -> SeedReport | None:
    """:func:`seed_store` when no suite is registered yet (a fresh database), else nothing."""
    if store.suites():
        return None
    return seed_store(store, **kwargs)
