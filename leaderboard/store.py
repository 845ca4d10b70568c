"""The leaderboard's store: one SQLite file (WAL, ``synchronous=FULL``), append-only.

Tables: ``suites`` (what may be submitted to: name, version, manifest sha256, domain, the official IDM, the item ids),
``models`` (name + version, where the version is the checkpoint sha256), ``submissions`` (one accepted result bundle:
tier, bundle sha256, evaluator version, submitter, every aggregate as JSON, throughput), ``items`` (the per-item
records), ``artifacts`` (stored videos: sha256 + path relative to the artifact directory) and ``tokens`` (API tokens,
salted sha256 digests).

Entries are immutable: triggers abort any ``UPDATE`` or ``DELETE`` of suites, models, submissions, items and
artifacts, so a model's new version is a new entry and a score, once published, stays as it was. Every write runs in
one ``BEGIN IMMEDIATE`` transaction (concurrent writers, threads or processes, queue on the lock), and only
parameterised SQL is used.

Schema changes are numbered migrations (:data:`MIGRATIONS`), applied in order and recorded in ``PRAGMA
user_version``; each runs in its own transaction, so a crash leaves the file at the last complete version.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import shutil
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from evaluation.bundle import ItemRecord, ResultBundle, parse_bundle
from leaderboard.names import check_name, skeleton
from worldmodels.errors import ConfigError, DataError, IntegrityError
from worldmodels.hashing import sha256_json
from worldmodels.runtime.files import atomic_output

DB_FILENAME = "leaderboard.db"
ARTIFACTS_DIRNAME = "leaderboard-artifacts"
TIERS = ("self-reported", "verified", "reproduced")
KINDS = ("model", "reference")
TOKEN_PREFIX = "rlir"
BUSY_TIMEOUT_MS = 60_000


def default_db_path() -> Path:
    """``$RLIR_HOME/leaderboard.db``."""
    from worldmodels.registry import rlir_home

    return rlir_home() / DB_FILENAME


def _immutable(table: str) -> tuple[str, ...]:
    return tuple(
        f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} entries are immutable: add a new entry instead'); END"
        for action in ("UPDATE", "DELETE")
    )


MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # v1: suites, models, submissions with their items and stored videos; all append-only
    (
        """CREATE TABLE suites (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            sha256 TEXT NOT NULL UNIQUE,
            domain TEXT NOT NULL,
            taxonomy TEXT NOT NULL,
            idm_name TEXT NOT NULL,
            idm_sha256 TEXT NOT NULL,
            primary_metric TEXT NOT NULL,
            item_ids TEXT NOT NULL,
            suite_source TEXT,
            idm_source TEXT,
            added_at TEXT NOT NULL,
            UNIQUE (name, version))""",
        """CREATE TABLE models (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            version TEXT NOT NULL,
            checkpoint_sha256 TEXT,
            parameters INTEGER,
            description TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('model', 'reference')),
            owner TEXT NOT NULL,
            added_at TEXT NOT NULL,
            UNIQUE (name, version))""",
        """CREATE TABLE submissions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            suite_id INTEGER NOT NULL REFERENCES suites(id),
            model_id INTEGER NOT NULL REFERENCES models(id),
            tier TEXT NOT NULL CHECK (tier IN ('self-reported', 'verified', 'reproduced')),
            bundle_sha256 TEXT NOT NULL UNIQUE,
            schema_version INTEGER NOT NULL,
            evaluator_version INTEGER NOT NULL,
            rlir_version TEXT NOT NULL,
            submitter TEXT NOT NULL,
            submitted_at TEXT NOT NULL,
            created_at TEXT NOT NULL,
            primary_value REAL NOT NULL,
            metrics TEXT NOT NULL,
            throughput TEXT,
            header TEXT NOT NULL)""",
        "CREATE INDEX submissions_by_suite ON submissions (suite_id, evaluator_version, model_id)",
        """CREATE TABLE items (
            submission_id INTEGER NOT NULL REFERENCES submissions(id),
            position INTEGER NOT NULL,
            item_id TEXT NOT NULL,
            seed INTEGER NOT NULL,
            gt_labels TEXT NOT NULL,
            pred_labels TEXT NOT NULL,
            psnr TEXT,
            ssim TEXT,
            video_sha256 TEXT NOT NULL,
            PRIMARY KEY (submission_id, item_id),
            UNIQUE (submission_id, position))""",
        """CREATE TABLE artifacts (
            submission_id INTEGER NOT NULL REFERENCES submissions(id),
            item_id TEXT NOT NULL,
            video_sha256 TEXT NOT NULL,
            path TEXT NOT NULL,
            PRIMARY KEY (submission_id, item_id))""",
        *(
            statement
            for table in ("suites", "models", "submissions", "items", "artifacts")
            for statement in _immutable(table)
        ),
    ),
    # v2: API tokens for the HTTP server (salted sha256 of a 256-bit random secret); submissions by submitter
    (
        """CREATE TABLE tokens (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL,
            salt BLOB NOT NULL,
            digest BLOB NOT NULL,
            created_at TEXT NOT NULL,
            revoked_at TEXT)""",
        "CREATE INDEX submissions_by_submitter ON submissions (submitter)",
    ),
    # v3: the suite's ground-truth labels (what every bundle's gt_labels must equal); model ownership by a principal
    # key (``token:<id>`` or ``local:<name>``) instead of the display name; token expiry. Models created before v3
    # belong to the token of that name if exactly one such token existed before the model, else to the local name.
    (
        """CREATE TABLE suite_truth (
            suite_id INTEGER PRIMARY KEY REFERENCES suites(id),
            n_frames INTEGER NOT NULL,
            n_tasks INTEGER NOT NULL,
            gt_labels TEXT NOT NULL)""",
        *_immutable("suite_truth"),
        "ALTER TABLE tokens ADD COLUMN expires_at TEXT",
        "DROP TRIGGER models_no_update",
        "ALTER TABLE models ADD COLUMN owner_key TEXT",
        """UPDATE models SET owner_key = COALESCE(
            (SELECT 'token:' || MIN(t.id) FROM tokens t WHERE t.name = models.owner AND t.created_at <= models.added_at
             HAVING COUNT(*) = 1),
            'local:' || models.owner)""",
        _immutable("models")[0],
        "CREATE INDEX models_by_checkpoint ON models (checkpoint_sha256)",
        "CREATE INDEX models_by_version ON models (version)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class SuiteRecord:
    """A suite submissions may target, bound to its official IDM.

    ``suite_source`` / ``idm_source`` say where this leaderboard loads the suite data and the IDM from to re-score
    videos (a registered name or a path); ``None`` when they are not available here (then only the self-reported tier
    can be accepted for the suite).
    """

    name: str
    version: int
    sha256: str
    domain: str
    taxonomy: str
    idm_name: str
    idm_sha256: str
    item_ids: tuple[str, ...]
    primary_metric: str = "mean_macro_f1"
    suite_source: str | None = None
    idm_source: str | None = None
    id: int | None = None
    added_at: str | None = None
    gt_labels: list[list[list[int]]] | None = field(default=None, repr=False, compare=False)
    """Per item, per generated frame, the taxonomy labels of the suite's target actions (``[N][F][tasks]``): what
    every bundle's ``gt_labels`` must equal. Derived from the suite at registration; None for a suite registered
    before they were stored (re-run ``rlir leaderboard suite add``)."""

    @property
    def n_frames(self) -> int | None:
        return None if not self.gt_labels else len(self.gt_labels[0])

    @property
    def n_tasks(self) -> int | None:
        return None if not self.gt_labels or not self.gt_labels[0] else len(self.gt_labels[0][0])

    def identity(self) -> tuple:
        """Everything that defines the suite (what two registrations of it must agree on)."""
        return (self.name, self.version, self.sha256, self.domain, self.taxonomy, self.idm_name, self.idm_sha256,
                tuple(self.item_ids), self.primary_metric)  # fmt: skip


@dataclass(frozen=True)
class SubmissionRecord:
    """One stored submission (the bundle's header fields; items via :meth:`Store.items`)."""

    id: int
    suite_name: str
    suite_version: int
    suite_sha256: str
    model_name: str
    model_version: str
    model_kind: str
    parameters: int | None
    tier: str
    bundle_sha256: str
    evaluator_version: int
    submitter: str
    submitted_at: str
    created_at: str
    primary_value: float
    metrics: dict[str, Any]
    throughput: dict[str, Any] | None
    header: dict[str, Any] = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        """What the HTTP API returns for a stored submission."""
        return {
            "id": self.id,
            "suite": {"name": self.suite_name, "version": self.suite_version, "sha256": self.suite_sha256},
            "model": {
                "name": self.model_name,
                "version": self.model_version,
                "kind": self.model_kind,
                "parameters": self.parameters,
            },  # fmt: skip
            "tier": self.tier,
            "bundle_sha256": self.bundle_sha256,
            "evaluator_version": self.evaluator_version,
            "submitter": self.submitter,
            "submitted_at": self.submitted_at,
            "metrics": self.metrics,
        }


@dataclass(frozen=True)
class TokenRecord:
    id: int
    name: str
    created_at: str
    expires_at: str | None = None
    revoked_at: str | None = None

    @property
    def principal(self) -> str:
        """The owner key of what this token submits (names are display only)."""
        return f"token:{self.id}"


def local_principal(submitter: str) -> str:
    """The owner key of local submissions (``rlir leaderboard submit`` without ``--server``, ``add``, the seeder)."""
    return f"local:{submitter}"


SEED_SUBMITTER = "rlir"
SEED_OWNER = local_principal(SEED_SUBMITTER)
"""Owner of the seeded rows (the bundled models and the ceiling); no token may take this name."""


class DuplicateSubmission(IntegrityError):
    """A bundle with the same sha256 is already stored (a replay)."""


class OwnershipError(IntegrityError):
    """The model name belongs to another submitter."""


def model_version(info: Any) -> str:
    """A model's version (a :class:`~evaluation.bundle.ModelInfo`): the content hash of its weights when the bundle
    has it (identical tensors, any file layout: one version), else its checkpoint file's sha256, else ``""``."""
    return getattr(info, "weights_sha256", None) or info.checkpoint_sha256 or ""


def model_identities(info: Any) -> list[str]:
    """Every hash that identifies the model's weights (each may be claimed by one owner only)."""
    return [h for h in (getattr(info, "weights_sha256", None), info.checkpoint_sha256) if h]


def _ownership_conflicts(conn: sqlite3.Connection, name: str, versions: Sequence[str], owner: str) -> list[str]:
    problems = []
    shape = skeleton(name)
    for other, other_owner, display in conn.execute("SELECT DISTINCT name, owner_key, owner FROM models"):
        if other_owner == owner:
            continue
        if other == name:
            problems.append(f"model name {name!r} belongs to submitter {display!r}; submit under your own model name "
                            "(`rlir eval --model-name NAME` or `rlir demo --model-name NAME`)")  # fmt: skip
        elif skeleton(other) == shape:
            problems.append(f"model name {name!r} looks like {other!r}, which belongs to submitter {display!r}; "
                            "choose a clearly different name")  # fmt: skip
    for digest in versions:  # the bundled models' weights are public: anyone may submit their own run of them
        row = conn.execute(
            "SELECT name, owner FROM models WHERE (version = ? OR checkpoint_sha256 = ?) AND owner_key NOT IN (?, ?) "
            "LIMIT 1",
            (digest, digest, owner, SEED_OWNER),
        ).fetchone()
        if row is not None:
            problems.append(f"checkpoint {digest[:16]}... is already on the leaderboard as {row[0]!r} of submitter "
                            f"{row[1]!r}; submit your own weights")  # fmt: skip
    return problems


class Store:
    """The leaderboard database at ``path`` (default ``$RLIR_HOME/leaderboard.db``), created and migrated on open.

    Args:
        path: the SQLite file.
        artifacts_dir: where stored videos go (default: ``leaderboard-artifacts/`` next to the database).
        migrate_to: apply migrations only up to this version (tests of the migration path); default: the latest.

    Each call opens its own connection, so one ``Store`` may be shared by threads; processes share the file.
    """

    def __init__(self, path: str | Path | None = None, *, artifacts_dir: str | Path | None = None,
                 migrate_to: int | None = None) -> None:  # fmt: skip
        self.path = Path(path) if path is not None else default_db_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            # owner-only: the file holds the token digests and every submitter's name; SQLite gives its -wal and
            # -shm files the database file's mode
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        self.artifacts_dir = Path(artifacts_dir) if artifacts_dir is not None else self.path.parent / ARTIFACTS_DIRNAME
        target = SCHEMA_VERSION if migrate_to is None else migrate_to
        if not 0 <= target <= SCHEMA_VERSION:
            raise ConfigError(f"migrate_to={migrate_to} is outside 0..{SCHEMA_VERSION}")
        with self._connection() as conn:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise ConfigError(
                    f"{self.path}: SQLite refused WAL mode (got {mode!r}); put the database on a local disk"
                )
            self._migrate(conn, target)

    # -- connections and transactions ---------------------------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: ``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on any error)."""
        with self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees the same snapshot."""
        with self._connection() as conn:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("ROLLBACK")

    def _migrate(self, conn: sqlite3.Connection, target: int) -> None:
        while True:
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]  # re-read under the lock
                if version > SCHEMA_VERSION:
                    raise ConfigError(
                        f"{self.path} has schema version {version}, newer than this rlir ({SCHEMA_VERSION}); "
                        "upgrade rlir"
                    )
                if version >= target:
                    conn.execute("COMMIT")
                    return
                for statement in MIGRATIONS[version]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version + 1}")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @property
    def schema_version(self) -> int:
        with self._connection() as conn:
            return conn.execute("PRAGMA user_version").fetchone()[0]

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check`` (``"ok"`` for a sound file)."""
        with self._connection() as conn:
            return "; ".join(row[0] for row in conn.execute("PRAGMA integrity_check"))

    # -- suites --------------------------------------------------------------------------------------------------

    def add_suite(self, suite: SuiteRecord) -> SuiteRecord:
        """Register a suite (idempotent for an identical registration).

        Raises:
            IntegrityError: another suite already holds the name and version or the sha256 with different content.
        """
        if not suite.item_ids or len(set(suite.item_ids)) != len(suite.item_ids):
            raise DataError(f"suite {suite.name!r}: item ids must be non-empty and unique")
        with self._write() as conn:
            row = conn.execute(
                "SELECT * FROM suites WHERE (name = ? AND version = ?) OR sha256 = ?",
                (suite.name, suite.version, suite.sha256),
            ).fetchone()
            if row is not None:
                existing = _suite_from_row(conn, row)
                if existing.identity() != suite.identity():
                    raise IntegrityError(
                        f"suite {suite.name!r} v{suite.version} (sha256 {suite.sha256[:12]}) conflicts with the "
                        f"registered {existing.name!r} v{existing.version} (sha256 {existing.sha256[:12]}, IDM "
                        f"{existing.idm_name}); registered suites never change: give the new one a new version"
                    )
                if existing.gt_labels is None and suite.gt_labels is not None:  # registered before v3
                    _insert_truth(conn, existing.id, suite)
                    return _suite_from_row(conn, row)
                if suite.gt_labels is not None and existing.gt_labels != suite.gt_labels:
                    raise IntegrityError(f"suite {suite.name!r} v{suite.version}: its ground-truth labels differ "
                                         "from the registered ones (a different taxonomy version?)")  # fmt: skip
                return existing
            cursor = conn.execute(
                "INSERT INTO suites (name, version, sha256, domain, taxonomy, idm_name, idm_sha256, primary_metric, "
                "item_ids, suite_source, idm_source, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    suite.name,
                    suite.version,
                    suite.sha256,
                    suite.domain,
                    suite.taxonomy,
                    suite.idm_name,
                    suite.idm_sha256,
                    suite.primary_metric,
                    json.dumps(list(suite.item_ids)),
                    suite.suite_source,
                    suite.idm_source,
                    utc_now(),
                ),  # fmt: skip
            )
            _insert_truth(conn, cursor.lastrowid, suite)
            return _suite_from_row(
                conn, conn.execute("SELECT * FROM suites WHERE id = ?", (cursor.lastrowid,)).fetchone()
            )

    def suite(self, name: str, version: int | None = None) -> SuiteRecord | None:
        """The suite ``name`` at ``version`` (default: its highest version), or None."""
        with self._read() as conn:
            if version is None:
                row = conn.execute(
                    "SELECT * FROM suites WHERE name = ? ORDER BY version DESC LIMIT 1", (name,)
                ).fetchone()
            else:
                row = conn.execute("SELECT * FROM suites WHERE name = ? AND version = ?", (name, version)).fetchone()
            return None if row is None else _suite_from_row(conn, row)

    def suites(self) -> list[SuiteRecord]:
        with self._read() as conn:
            return [_suite_from_row(conn, row) for row in conn.execute("SELECT * FROM suites ORDER BY name, version")]

    # -- submissions ---------------------------------------------------------------------------------------------

    def find_bundle(self, bundle_sha256: str) -> int | None:
        """The id of the submission holding this bundle, or None."""
        with self._connection() as conn:
            row = conn.execute("SELECT id FROM submissions WHERE bundle_sha256 = ?", (bundle_sha256,)).fetchone()
            return None if row is None else row[0]

    def model_owner(self, name: str) -> tuple[str, str] | None:
        """``(owner key, owner display name)`` of whoever first submitted a model of this name (later versions and
        submissions must come from the same owner key), or None."""
        with self._connection() as conn:
            row = conn.execute("SELECT owner_key, owner FROM models WHERE name = ? ORDER BY id LIMIT 1",
                               (name,)).fetchone()  # fmt: skip
            return None if row is None else (row[0], row[1])

    def ownership_conflicts(self, name: str, versions: Sequence[str], owner: str) -> list[str]:
        """Why a model ``name`` with these identities (checkpoint / weights sha256s) cannot be submitted by owner key
        ``owner``: the name, a look-alike of it, or one of the identities belongs to another owner. Empty when free."""
        with self._connection() as conn:
            return _ownership_conflicts(conn, name, versions, owner)

    def add_submission(
        self,
        bundle: ResultBundle,
        *,
        tier: str,
        submitter: str,
        kind: str = "model",
        videos: dict[str, Path] | None = None,
        owner: str | None = None,
        submitted_at: str | None = None,
    ) -> SubmissionRecord:
        """Store an accepted bundle (use :func:`leaderboard.validate.store_submission`, which validates first).

        ``submitter`` is the display name; ``owner`` the key that owns the model name (default
        :func:`local_principal` of ``submitter``; the server passes the token's :attr:`TokenRecord.principal`).
        ``submitted_at`` defaults to now (the seeder passes the bundle's own date).

        Everything lands in one transaction. ``videos`` (item id -> ``.npz`` file) are copied into the artifact
        directory under their video sha256 while the write lock is held, and files this call created are removed
        again if the transaction fails (no other writer can have referenced them in between).

        Raises:
            DuplicateSubmission: the bundle is already stored.
            OwnershipError: the model name (or a look-alike, or its checkpoint) belongs to another owner.
            DataError: the suite is not registered.
        """
        owner = owner or local_principal(submitter)
        if tier not in TIERS:
            raise ConfigError(f"tier must be one of {TIERS}, got {tier!r}")
        if kind not in KINDS:
            raise ConfigError(f"kind must be one of {KINDS}, got {kind!r}")
        data = bundle.model_dump(mode="json")
        bundle_sha256 = sha256_json(data)  # the bundle's identity: canonical JSON of the parsed bundle
        items = data.pop("items")
        replayed = f"bundle {bundle_sha256} was already submitted (replayed submission)"
        copied: list[Path] = []
        try:
            with self._write() as conn:
                if conn.execute("SELECT 1 FROM submissions WHERE bundle_sha256 = ?", (bundle_sha256,)).fetchone():
                    raise DuplicateSubmission(replayed)
                suite = conn.execute(
                    "SELECT id FROM suites WHERE name = ? AND version = ? AND sha256 = ?",
                    (bundle.suite.name, bundle.suite.version, bundle.suite.sha256),
                ).fetchone()
                if suite is None:
                    raise DataError(f"suite {bundle.suite.name!r} v{bundle.suite.version} is not registered")
                model_id = self._model_id(conn, bundle, submitter, owner, kind)
                cursor = conn.execute(
                    "INSERT INTO submissions (suite_id, model_id, tier, bundle_sha256, schema_version, evaluator_version, "
                    "rlir_version, submitter, submitted_at, created_at, primary_value, metrics, throughput, header) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (suite[0], model_id, tier, bundle_sha256, bundle.schema_version, bundle.evaluator_version,
                     bundle.rlir_version, submitter, submitted_at or utc_now(), bundle.created_at, bundle.metrics.primary.value,
                     json.dumps(data["metrics"]), _json_or_none(data["metrics"]["throughput"]), json.dumps(data)),
                )  # fmt: skip
                submission_id = cursor.lastrowid
                conn.executemany(
                    "INSERT INTO items (submission_id, position, item_id, seed, gt_labels, pred_labels, psnr, ssim, "
                    "video_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(submission_id, position, item["id"], item["seed"], json.dumps(item["gt_labels"]),
                      json.dumps(item["pred_labels"]), _json_or_none(item["psnr"]), _json_or_none(item["ssim"]),
                      item["video_sha256"]) for position, item in enumerate(items)],
                )  # fmt: skip
                for item in bundle.items if videos else ():
                    relative = self._store_video(videos[item.id], item.video_sha256, copied)
                    conn.execute(
                        "INSERT INTO artifacts (submission_id, item_id, video_sha256, path) VALUES (?, ?, ?, ?)",
                        (submission_id, item.id, item.video_sha256, relative),
                    )
        except sqlite3.IntegrityError as error:
            self._remove(copied)
            if "bundle_sha256" in str(error):
                raise DuplicateSubmission(replayed) from None
            raise
        except BaseException:
            self._remove(copied)
            raise
        return self.submission(submission_id)

    def _model_id(self, conn: sqlite3.Connection, bundle: ResultBundle, submitter: str, owner: str, kind: str) -> int:
        info = bundle.model
        conflicts = _ownership_conflicts(conn, info.name, model_identities(info), owner)
        if conflicts:
            raise OwnershipError("; ".join(conflicts))
        version = model_version(info)
        row = conn.execute("SELECT id FROM models WHERE name = ? AND version = ?", (info.name, version)).fetchone()
        if row is not None:
            return row[0]
        cursor = conn.execute(
            "INSERT INTO models (name, version, checkpoint_sha256, parameters, description, kind, owner, added_at, "
            "owner_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (info.name, version, info.checkpoint_sha256, info.parameters, info.description, kind, submitter, utc_now(),
             owner),
        )  # fmt: skip
        return cursor.lastrowid

    def _store_video(self, source: Path, video_sha256: str, copied: list[Path]) -> str:
        relative = f"{video_sha256[:2]}/{video_sha256}.npz"
        target = self.artifacts_dir / relative
        if not target.is_file():
            with atomic_output(target) as tmp, open(tmp, "wb") as out, open(source, "rb") as src:
                shutil.copyfileobj(src, out)
                out.flush()
                os.fsync(out.fileno())
            copied.append(target)
        return relative

    @staticmethod
    def _remove(paths: Sequence[Path]) -> None:
        for path in paths:
            path.unlink(missing_ok=True)

    def submission(self, submission_id: int) -> SubmissionRecord:
        with self._read() as conn:
            rows = _submission_rows(conn, "WHERE s.id = ?", (submission_id,))
        if not rows:
            raise DataError(f"no submission with id {submission_id}")
        return rows[0]

    def submissions(self, *, suite_sha256: str | None = None) -> list[SubmissionRecord]:
        """Stored submissions (of one suite when given), oldest first."""
        with self._read() as conn:
            if suite_sha256 is None:
                return _submission_rows(conn, "", ())
            return _submission_rows(conn, "WHERE u.sha256 = ?", (suite_sha256,))

    def items(self, submission_id: int) -> list[ItemRecord]:
        """The per-item records of a submission, in the submitted order."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT item_id, seed, gt_labels, pred_labels, psnr, ssim, video_sha256 FROM items "
                "WHERE submission_id = ? ORDER BY position",
                (submission_id,),
            ).fetchall()
        return [
            ItemRecord(
                id=r[0],
                seed=r[1],
                gt_labels=json.loads(r[2]),
                pred_labels=json.loads(r[3]),
                psnr=_loads_or_none(r[4]),
                ssim=_loads_or_none(r[5]),
                video_sha256=r[6],
            )  # fmt: skip
            for r in rows
        ]

    def bundle(self, submission_id: int) -> ResultBundle:
        """The stored bundle, rebuilt exactly (its canonical sha256 equals the stored ``bundle_sha256``)."""
        record = self.submission(submission_id)
        items = [item.model_dump(mode="json") for item in self.items(submission_id)]
        return parse_bundle(record.header | {"items": items})

    def artifacts(self, submission_id: int) -> dict[str, tuple[str, Path]]:
        """Item id -> (video sha256, absolute path) of the videos stored with a submission."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT item_id, video_sha256, path FROM artifacts WHERE submission_id = ?", (submission_id,)
            ).fetchall()
        return {item_id: (sha, self.artifacts_dir / path) for item_id, sha, path in rows}

    # -- API tokens ----------------------------------------------------------------------------------------------

    def create_token(self, name: str, *, expires_at: str | None = None) -> str:
        """Create an API token for submitter ``name``; returns the token (only its salted digest is stored).

        A token reads ``rlir_<id>_<secret>``: the id finds the row, the 256-bit random secret is checked against
        ``sha256(salt || secret)`` in constant time. A slow KDF (scrypt) protects low-entropy passwords; a 256-bit
        random secret cannot be brute-forced, so a salted sha256 is enough and keeps every request cheap.

        Token names are unique (compared by their look-alike :func:`~leaderboard.names.skeleton`, revoked tokens
        included, so a name is never handed to someone else) and follow the model-name character set; the seeder's
        name ``rlir`` is reserved. What a token submits is owned by the token's id, not its name. ``expires_at``
        (ISO 8601, UTC) ends the token's validity.

        Raises:
            ConfigError: a malformed, reserved or already used name, or a malformed / past ``expires_at``.
        """
        check_name(name, "token name")
        if skeleton(name) == skeleton(SEED_SUBMITTER):
            raise ConfigError(f"token name {name!r} is reserved for the leaderboard's own rows; choose another")
        if expires_at is not None:
            expiry = _parse_time(expires_at, "expires_at")
            if expiry <= datetime.now(timezone.utc):
                raise ConfigError(f"expires_at {expires_at!r} is in the past; give a future date")
            expires_at = expiry.isoformat(timespec="seconds")
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        with self._write() as conn:
            for (other,) in conn.execute("SELECT name FROM tokens"):
                if skeleton(other) == skeleton(name):
                    raise ConfigError(f"token name {name!r} is taken (by {other!r}); token names are unique")
            cursor = conn.execute(
                "INSERT INTO tokens (name, salt, digest, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                (name, salt, _token_digest(salt, secret), utc_now(), expires_at),
            )
        return f"{TOKEN_PREFIX}_{cursor.lastrowid}_{secret}"

    def verify_token(self, token: str) -> TokenRecord | None:
        """The token's record if ``token`` is valid, not revoked and not expired, else None (constant-time digest
        compare)."""
        parts = token.split("_", 2)
        well_formed = len(parts) == 3 and parts[0] == TOKEN_PREFIX and parts[1].isascii() and parts[1].isdigit()
        token_id = int(parts[1]) if well_formed and len(parts[1]) <= 18 else -1
        secret = parts[2] if len(parts) == 3 else token
        with self._connection() as conn:
            row = conn.execute(
                "SELECT id, name, salt, digest, created_at, revoked_at, expires_at FROM tokens WHERE id = ?",
                (token_id,),
            ).fetchone()
        salt, digest = (row[2], row[3]) if row is not None else (b"\0" * 16, b"\0" * 32)
        valid = hmac.compare_digest(_token_digest(salt, secret), digest)  # computed either way: no timing oracle
        if row is None or not valid or row[5] is not None:
            return None
        if row[6] is not None and _parse_time(row[6], "expires_at") <= datetime.now(timezone.utc):
            return None
        return TokenRecord(id=row[0], name=row[1], created_at=row[4], expires_at=row[6])

    def tokens(self) -> list[TokenRecord]:
        """Every token (revoked and expired ones included), oldest first."""
        with self._read() as conn:
            rows = conn.execute("SELECT id, name, created_at, expires_at, revoked_at FROM tokens ORDER BY id").fetchall()
        return [TokenRecord(id=r[0], name=r[1], created_at=r[2], expires_at=r[3], revoked_at=r[4]) for r in rows]

    def revoke_token(self, token_id: int) -> None:
        """Revoke a token (idempotent for a revoked one).

        Raises:
            DataError: no token has this id.
        """
        with self._write() as conn:
            cursor = conn.execute("UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?",
                                  (utc_now(), token_id))  # fmt: skip
            if cursor.rowcount != 1:
                raise DataError(f"no token with id {token_id}; `rlir leaderboard token list` shows the ids")


def _parse_time(text: str, what: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} {text!r} is not an ISO 8601 date (e.g. 2027-01-31 or 2027-01-31T12:00:00+00:00)") from None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _token_digest(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode("utf-8", "surrogatepass")).digest()


def _json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _loads_or_none(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _suite_from_row(conn: sqlite3.Connection, row: tuple) -> SuiteRecord:
    columns = [d[1] for d in conn.execute("PRAGMA table_info(suites)")]
    values = dict(zip(columns, row, strict=True))
    return SuiteRecord(
        id=values["id"], name=values["name"], version=values["version"], sha256=values["sha256"],
        domain=values["domain"], taxonomy=values["taxonomy"], idm_name=values["idm_name"],
        idm_sha256=values["idm_sha256"], primary_metric=values["primary_metric"],
        item_ids=tuple(json.loads(values["item_ids"])), suite_source=values["suite_source"],
        idm_source=values["idm_source"], added_at=values["added_at"], gt_labels=_suite_truth(conn, values["id"]),
    )  # fmt: skip


def _suite_truth(conn: sqlite3.Connection, suite_id: int) -> list | None:
    row = conn.execute("SELECT gt_labels FROM suite_truth WHERE suite_id = ?", (suite_id,)).fetchone()
    return None if row is None else json.loads(row[0])


def _insert_truth(conn: sqlite3.Connection, suite_id: int, suite: SuiteRecord) -> None:
    labels = suite.gt_labels
    if labels is None:
        return
    if len(labels) != len(suite.item_ids) or len({(len(i), *(len(f) for f in i)) for i in labels}) != 1:
        raise DataError(f"suite {suite.name!r}: ground-truth labels must be [items={len(suite.item_ids)}][frames][tasks]")
    conn.execute("INSERT INTO suite_truth (suite_id, n_frames, n_tasks, gt_labels) VALUES (?, ?, ?, ?)",
                 (suite_id, suite.n_frames, suite.n_tasks, json.dumps(labels, separators=(",", ":"))))  # fmt: skip


def _submission_rows(conn: sqlite3.Connection, where: str, params: tuple) -> list[SubmissionRecord]:
    rows = conn.execute(
        "SELECT s.id, u.name, u.version, u.sha256, m.name, m.version, m.kind, m.parameters, s.tier, s.bundle_sha256, "
        "s.evaluator_version, s.submitter, s.submitted_at, s.created_at, s.primary_value, s.metrics, s.throughput, "
        "s.header FROM submissions s JOIN suites u ON u.id = s.suite_id JOIN models m ON m.id = s.model_id "
        f"{where} ORDER BY s.id",
        params,
    ).fetchall()
    return [
        SubmissionRecord(
            id=r[0],
            suite_name=r[1],
            suite_version=r[2],
            suite_sha256=r[3],
            model_name=r[4],
            model_version=r[5],
            model_kind=r[6],
            parameters=r[7],
            tier=r[8],
            bundle_sha256=r[9],
            evaluator_version=r[10],
            submitter=r[11],
            submitted_at=r[12],
            created_at=r[13],
            primary_value=r[14],
            metrics=json.loads(r[15]),
            throughput=_loads_or_none(r[16]),
            header=json.loads(r[17]),
        )  # fmt: skip
        for r in rows
    ]
