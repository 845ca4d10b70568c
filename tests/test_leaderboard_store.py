"""Leaderboard store, validation, ranking and text views, on real bundles of the tiny MineWorld + tiny VPT IDM.

The helpers at the top (``build_world``, ``variant``, ``synthetic_bundle``) are shared with the server and HTML tests.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from evaluation.bundle import ModelInfo, ResultBundle, load_bundle, load_video
from leaderboard.ranking import assign_bands, leaderboards
from leaderboard.store import MIGRATIONS, SCHEMA_VERSION, Store, SuiteRecord
from leaderboard.validate import (
    CEILING_MODEL_NAME,
    Reproduction,
    SubmissionRejected,
    bundle_sha256,
    register_suite,
    submit_local,
    validate_submission,
)
from worldmodels.errors import ConfigError
from worldmodels.hashing import sha256_array, sha256_json

# -- shared helpers ------------------------------------------------------------------------------------------------


@dataclass
class World:
    root: Path
    suite_dir: Path
    idm_weights: Path
    checkpoint: Path
    bundles: dict[int, Path]
    """Run seed -> bundle directory (bundle.json + videos/)."""


def build_world(root: Path, seeds=(0, 1)) -> World:
    """Tiny suite (4 items x 5 frames), tiny VPT IDM files, a tiny MineWorld checkpoint, one evaluated bundle per
    seed (model name "tiny", the checkpoint's sha256 recorded)."""
    from evaluation.evaluator import EvalSettings, evaluate, model_info_for
    from evaluation.idm.vpt import VPTInverseDynamicsModel
    from evaluation.suites import load_suite, save_suite
    from tests.world_models import tiny_minecraft_suite, tiny_mineworld, tiny_vpt_idm_files
    from worldmodels.mineworld import save_safetensors

    model = tiny_mineworld()
    save_suite(tiny_minecraft_suite(model, n_items=4, n_frames=5), root / "suite")
    suite = load_suite(root / "suite")
    model_path, weights = tiny_vpt_idm_files(root)
    idm = VPTInverseDynamicsModel.from_files(model_path, weights)
    checkpoint = root / "tiny.safetensors"
    save_safetensors(model, checkpoint)
    info = model_info_for(model, "tiny", checkpoint)
    bundles = {}
    for seed in seeds:
        out = root / f"bundle-{seed}"
        evaluate(model, suite, idm, out, model_info=info, settings=EvalSettings(num_envs=4, seed=seed), progress=False)
        bundles[seed] = out
    return World(root=root, suite_dir=root / "suite", idm_weights=weights, checkpoint=checkpoint, bundles=bundles)


def shared_world(tmp_path_factory) -> World:
    """:func:`build_world` once per test session: pytest-xdist workers share it (the first builds it under a file
    lock, the others wait), since every module that needs bundles would otherwise pay for the model and the runs."""
    import fcntl
    import os

    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "leaderboard-world"
    with open(f"{root}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "ready").exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            build_world(root)
            (root / "ready").touch()
    return World(root=root, suite_dir=root / "suite", idm_weights=root / "tiny_idm.weights",
                 checkpoint=root / "tiny.safetensors", bundles={seed: root / f"bundle-{seed}" for seed in (0, 1)})  # fmt: skip


def variant(source: Path, out: Path, edit=None, **model) -> Path:
    """A copy of ``source``'s bundle.json in ``out`` with ``model`` fields replaced and ``edit(dict)`` applied.
    A new ``name`` without a ``checkpoint_sha256`` gets a checkpoint sha256 of its own (another model, since a
    checkpoint belongs to one owner). Returns ``out``."""
    data = json.loads(((source / "bundle.json") if source.is_dir() else source).read_text())
    if "name" in model and "checkpoint_sha256" not in model and data["model"]["checkpoint_sha256"] is not None:
        model["checkpoint_sha256"] = sha256_json(["checkpoint of", model["name"]])
    if "name" in model and "weights_sha256" not in model and data["model"].get("weights_sha256") is not None:
        model["weights_sha256"] = sha256_json(["weights of", model["name"]])
    data["model"].update(model)
    if edit is not None:
        edit(data)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bundle.json").write_text(json.dumps(data))
    return out


def synthetic_bundle(suite: SuiteRecord, name: str, *, accuracy: float, seed: int, fps: float | None,
                     parameters: int | None = None, description: str = "") -> dict:  # fmt: skip
    """A valid bundle (aggregates computed from its records) for a registered Crafter ``suite``, with a chosen share
    of correctly read frames; no model run needed (the tests of views use it)."""
    from evaluation.bundle import (
        EVALUATOR_VERSION,
        IdmRef,
        ItemRecord,
        Runtime,
        SuiteRef,
        Throughput,
    )  # fmt: skip
    from evaluation.scoring import compute_metrics

    rng = np.random.default_rng(seed)
    sizes = np.array([5, 2, 2, 5, 7])  # the Crafter taxonomy's tasks: movement, do, sleep, place, make
    items = []
    for k, item_id in enumerate(suite.item_ids):
        gt = np.array(suite.gt_labels[k])
        wrong = rng.random((10, 5)) > accuracy
        pred = np.where(wrong, (gt + 1) % sizes, gt)
        items.append(ItemRecord(id=item_id, seed=k, gt_labels=gt.tolist(), pred_labels=pred.tolist(),
                                video_sha256=sha256_json([name, k])))  # fmt: skip
    throughput = None if fps is None else Throughput(frames_per_second=fps, device="cuda", num_envs=8)
    bundle = ResultBundle(
        created_at="2026-01-01T00:00:00+00:00", rlir_version="0.1.0", evaluator_version=EVALUATOR_VERSION,
        taxonomy="crafter", suite=SuiteRef(name=suite.name, version=suite.version, sha256=suite.sha256),
        model=ModelInfo(name=name, parameters=parameters, description=description),
        idm=IdmRef(name=suite.idm_name, sha256=suite.idm_sha256),
        runtime=Runtime(device="cuda", dtype="float32", seed=seed, num_envs=8),
        metrics=compute_metrics(items, "crafter", throughput=throughput), items=items,
    )  # fmt: skip
    return bundle.model_dump(mode="json")


def crafter_suite_record(n_items: int = 12) -> SuiteRecord:
    """A registered-suite record without suite data: 10 frames per item, ground-truth labels drawn once."""
    sizes = np.array([5, 2, 2, 5, 7])
    labels = np.random.default_rng(1234).integers(0, sizes, size=(n_items, 10, 5)).tolist()
    return SuiteRecord(name="crafter-test", version=1, sha256="a" * 64, domain="crafter", taxonomy="crafter",
                       idm_name="crafter-idm-test", idm_sha256="b" * 64,
                       item_ids=tuple(f"seed-{i:03d}" for i in range(n_items)), gt_labels=labels)  # fmt: skip


# -- fixtures ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return shared_world(tmp_path_factory)


@pytest.fixture
def store(tmp_path, world) -> Store:
    store = Store(tmp_path / "lb.db")
    register_suite(store, world.suite_dir, world.idm_weights)
    return store


def _count(store: Store) -> tuple[int, int, int]:
    with sqlite3.connect(store.path) as conn:
        return tuple(
            conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("submissions", "items", "models")
        )


# -- schema, migrations, immutability ------------------------------------------------------------------------------


def test_fresh_store_is_wal_full_sync_and_latest_schema(tmp_path):
    store = Store(tmp_path / "a" / "lb.db")
    assert store.schema_version == SCHEMA_VERSION == len(MIGRATIONS) >= 2
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"suites", "models", "submissions", "items", "artifacts", "tokens"} <= tables
    with store._connection() as conn:  # every connection the store opens runs with synchronous=FULL (2)
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert store.integrity_check() == "ok"


def test_migration_from_v2_keeps_entries_and_moves_ownership_to_principals(tmp_path, world):
    """A v2 database (written here with the v2 schema's own SQL) migrates: its models get owner keys (the token of
    that name when exactly one existed before the model, else the local name, so a token named like the seeder
    made later gets nothing), and its suite needs re-registering before bundles are checked against ground truth."""
    old = Store(tmp_path / "lb.db", migrate_to=2)
    assert old.schema_version == 2
    suite = register_suite(Store(tmp_path / "reference.db"), world.suite_dir, world.idm_weights)
    with sqlite3.connect(old.path) as conn:
        conn.execute(
            "INSERT INTO suites (name, version, sha256, domain, taxonomy, idm_name, idm_sha256, primary_metric, "
            "item_ids, suite_source, idm_source, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (suite.name, suite.version, suite.sha256, suite.domain, suite.taxonomy, suite.idm_name, suite.idm_sha256,
             suite.primary_metric, json.dumps(list(suite.item_ids)), suite.suite_source, suite.idm_source,
             "2026-01-01T00:00:00+00:00"),
        )  # fmt: skip
        token = "INSERT INTO tokens (name, salt, digest, created_at) VALUES (?, x'00', x'00', ?)"
        model = ("INSERT INTO models (name, version, checkpoint_sha256, parameters, description, kind, owner, added_at) "
                 "VALUES (?, '', NULL, NULL, '', 'model', ?, ?)")  # fmt: skip
        conn.execute(token, ("alice", "2026-01-01T00:00:00+00:00"))
        conn.execute(model, ("tiny", "alice", "2026-01-02T00:00:00+00:00"))
        conn.execute(model, ("crafter-x", "rlir", "2026-01-02T00:00:00+00:00"))
        conn.execute(token, ("rlir", "2026-01-03T00:00:00+00:00"))  # the attack: a token named like the seeder
    migrated = Store(tmp_path / "lb.db")
    assert migrated.schema_version == SCHEMA_VERSION
    with sqlite3.connect(migrated.path) as conn:
        owners = dict(conn.execute("SELECT name, owner_key FROM models"))
    assert owners == {"tiny": "token:1", "crafter-x": "local:rlir"}
    assert migrated.suite(suite.name).gt_labels is None
    with pytest.raises(SubmissionRejected, match="re-runs `rlir leaderboard suite add`"):
        validate_submission(world.bundles[0] / "bundle.json", migrated, submitter="bob")
    assert register_suite(migrated, world.suite_dir, world.idm_weights).gt_labels == suite.gt_labels
    with pytest.raises(SubmissionRejected, match="'tiny' belongs to submitter 'alice'"):
        submit_local(world.bundles[0] / "bundle.json", migrated, submitter="alice", owner="token:2")
    stored = submit_local(world.bundles[0] / "bundle.json", migrated, submitter="alice", owner="token:1")
    assert migrated.submission(stored.id).model_name == "tiny"
    with sqlite3.connect(old.path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ConfigError, match="newer than this rlir"):
        Store(tmp_path / "lb.db")


def test_entries_are_immutable(store, world):
    submit_local(world.bundles[0], store, submitter="alice")
    with sqlite3.connect(store.path) as conn:
        for statement in ("UPDATE submissions SET primary_value = 1.0", "DELETE FROM submissions",
                          "UPDATE items SET pred_labels = gt_labels", "DELETE FROM items",
                          "UPDATE suites SET idm_sha256 = 'x'", "DELETE FROM models",
                          "UPDATE artifacts SET path = 'x'", "DELETE FROM artifacts"):  # fmt: skip
            with pytest.raises(sqlite3.IntegrityError, match="immutable"):
                conn.execute(statement)


# -- accepted submissions -----------------------------------------------------------------------------------------


def test_self_reported_bundle_round_trips(store, world):
    file = world.bundles[0] / "bundle.json"
    record = submit_local(file, store, submitter="alice")
    original = load_bundle(file)
    assert record.tier == "self-reported" and record.submitter == "alice" and record.model_kind == "model"
    assert record.model_version == original.model.weights_sha256 is not None  # identity: the weights content hash
    # the canonical sha256 of the parsed bundle, computed independently of the code under test
    assert record.bundle_sha256 == sha256_json(json.loads(original.model_dump_json()))
    assert record.metrics == json.loads(original.metrics.model_dump_json())
    rebuilt = store.bundle(record.id)
    assert rebuilt == original and bundle_sha256(rebuilt) == record.bundle_sha256
    assert store.artifacts(record.id) == {}
    assert _count(store) == (1, 4, 1)


def test_videos_make_a_verified_submission_and_are_kept(store, world):
    record = submit_local(world.bundles[1], store, submitter="alice")
    assert record.tier == "verified"
    bundle = load_bundle(world.bundles[1])
    stored = store.artifacts(record.id)
    assert set(stored) == {item.id for item in bundle.items}
    for item in bundle.items:
        sha, path = stored[item.id]
        assert sha == item.video_sha256 and path.is_relative_to(store.artifacts_dir)
        assert sha256_array(load_video(path.parent, path.name)) == item.video_sha256


def test_reproduction_needs_the_recorded_seed_and_checkpoint(store, world, tmp_path):
    # (the accepted case runs through `rlir leaderboard add --reproduce` in test_cli_...)
    # the recorded run seed is what reproduces the videos: a bundle claiming another seed is refused
    other = variant(world.bundles[0], tmp_path / "seed", edit=lambda d: d["runtime"].update(seed=7))
    with pytest.raises(SubmissionRejected, match="re-generated video sha256"):
        validate_submission(other, store, reproduce=Reproduction(checkpoint=str(world.checkpoint)))
    wrong = tmp_path / "other.safetensors"
    wrong.write_bytes(world.checkpoint.read_bytes() + b" ")
    with pytest.raises(SubmissionRejected, match="the bundle pins"):
        validate_submission(world.bundles[0], store, reproduce=Reproduction(checkpoint=str(wrong)))


# -- rejections: each names the problem, nothing is stored --------------------------------------------------------


def _edit(path_key, value):
    def edit(data):
        target = data
        for key in path_key[:-1]:
            target = target[key]
        target[path_key[-1]] = value(target[path_key[-1]]) if callable(value) else value

    return edit


REJECTIONS = {
    "evaluator version": (_edit(["evaluator_version"], 99), 422, "evaluator_version 99 is not supported"),
    "schema": (_edit(["items", 0, "gt_labels"], "x"), 422, "items.0.gt_labels"),
    "unknown suite": (_edit(["suite", "name"], "no-such-suite"), 422, "'no-such-suite' v1 is not registered"),
    "suite hash": (_edit(["suite", "sha256"], "0" * 64), 422, "evaluate on the released suite"),
    "foreign IDM": (_edit(["idm", "sha256"], "1" * 64), 422, "the bundle was scored with IDM"),
    "missing item": (_edit(["items"], lambda items: items[:3]), 422, "1 item id(s) missing: 'clip_3'"),
    "duplicated item": (_edit(["items"], lambda items: items[:3] + items[:1]), 422, "duplicated: 'clip_0'"),
    "foreign item": (_edit(["items", 3, "id"], "clip_99"), 422, "not in the suite: 'clip_99'"),
    "reordered": (_edit(["items"], lambda items: items[::-1]), 422, "not in the suite's order"),
    "tampered aggregate": (_edit(["metrics", "primary", "value"], lambda v: v + 0.01), 422, "metrics.primary.value"),
    "tampered record": (
        _edit(["items", 0, "pred_labels"], lambda rows: [[0] * len(r) for r in rows]),
        422,
        "aggregate differs from the per-item records",
    ),
    "huge integer": (_edit(["items", 0, "seed"], 2**70), 422, "outside the 64-bit range"),
    "reserved name": (_edit(["model", "name"], CEILING_MODEL_NAME), 422, "reserved"),
}


@pytest.mark.parametrize("case", sorted(REJECTIONS))
def test_invalid_bundles_are_rejected_with_reasons(case, store, world, tmp_path):
    edit, status, reason = REJECTIONS[case]
    bundle = variant(world.bundles[0], tmp_path / "b", edit=edit)
    with pytest.raises(SubmissionRejected) as error:
        submit_local(bundle, store, submitter="alice")
    assert error.value.status == status and any(reason in r for r in error.value.reasons), error.value.reasons
    assert _count(store) == (0, 0, 0)


def test_malformed_replayed_and_hijacked_submissions(store, world, tmp_path):
    for raw, message in ((b"{not json", "not valid JSON"), (b"[1, 2]", "a JSON object"),
                         (b'{"a": NaN}', "NaN is not a JSON number"), (b"\xff\xfe", "not UTF-8")):  # fmt: skip
        with pytest.raises(SubmissionRejected, match=message) as error:
            submit_local(raw, store, submitter="alice")
        assert error.value.status == 400
    submit_local(world.bundles[0] / "bundle.json", store, submitter="alice")
    # the same bundle again, byte for byte or re-serialised with other whitespace: a replay
    for replay in ((world.bundles[0] / "bundle.json").read_bytes(), json.dumps(json.loads(
            (world.bundles[0] / "bundle.json").read_text())).encode()):  # fmt: skip
        with pytest.raises(SubmissionRejected, match="already submitted") as error:
            submit_local(replay, store, submitter="alice")
        assert error.value.status == 409
    # another submitter cannot publish under alice's model name, not even a new version
    with pytest.raises(SubmissionRejected, match="belongs to submitter 'alice'"):
        submit_local(variant(world.bundles[1], tmp_path / "v", checkpoint_sha256="c" * 64), store, submitter="mallory")
    assert _count(store) == (1, 4, 1)


def _rewrite_video(bundle_dir: Path, item: str, frames: np.ndarray) -> None:
    np.savez_compressed(bundle_dir / "videos" / f"{item}.npz", frames=frames)


def test_tampered_videos_are_rejected(store, world, tmp_path):
    bundle = load_bundle(world.bundles[1])
    copy = tmp_path / "copy"
    shutil.copytree(world.bundles[1], copy)
    frames = load_video(copy, "videos/clip_0.npz")
    # 1. the frames no longer match the record's hash
    _rewrite_video(copy, "clip_0", frames[::-1])
    with pytest.raises(SubmissionRejected, match="'clip_0': video sha256 .* differs from the record"):
        submit_local(copy, store, submitter="alice")
    # 2. another item's video with its hash copied into the record: the hash matches, re-scoring does not
    other = load_video(copy, "videos/clip_1.npz")
    assert bundle.items[0].pred_labels != bundle.items[1].pred_labels  # precondition: the IDM reads them apart
    _rewrite_video(copy, "clip_0", other)
    variant(copy, copy, edit=_edit(["items", 0, "video_sha256"], sha256_array(other)))
    with pytest.raises(SubmissionRejected, match="'clip_0': pred_labels.* differ from what this leaderboard computes"):
        submit_local(copy, store, submitter="alice")
    # 3. paths outside the bundle, wrong shapes, extra archive members
    _rewrite_video(copy, "clip_0", frames)
    variant(copy, copy, edit=_edit(["videos", "clip_2"], "../suite/data.npz"))
    with pytest.raises(SubmissionRejected, match="escapes the bundle directory"):
        submit_local(copy, store, submitter="alice")
    variant(world.bundles[1], copy)
    np.savez_compressed(copy / "videos" / "clip_3.npz", frames=np.zeros((1, 2, 3, 3), np.uint8), extra=np.zeros(3))
    with pytest.raises(SubmissionRejected, match="must hold only frames.npy"):
        submit_local(copy, store, submitter="alice")
    _rewrite_video(copy, "clip_3", np.zeros((4, 32, 48, 3), np.uint8))
    with pytest.raises(SubmissionRejected, match="expected uint8"):
        submit_local(copy, store, submitter="alice")
    assert _count(store) == (0, 0, 0) and not store.artifacts_dir.exists()


# -- ranking ---------------------------------------------------------------------------------------------------------


def test_band_rule():
    # sorted best first: (ci_low, ci_high). Row 2 overlaps the top model; row 3 overlaps row 2 but not the top
    # model, so it opens band 2; row 4 overlaps row 3 (band 2's top model); row 5 does not.
    intervals = [(0.50, 0.70), (0.45, 0.55), (0.30, 0.49), (0.20, 0.35), (0.10, 0.29)]
    assert assign_bands(intervals) == [1, 1, 2, 2, 3]
    assert assign_bands([]) == []
    assert assign_bands([(0.5, 0.6), (0.5, 0.6)]) == [1, 1]


def test_ranking_recomputes_from_items_and_keeps_latest_per_model_version(store, world, tmp_path):
    b0, b1 = load_bundle(world.bundles[0]), load_bundle(world.bundles[1])
    first = submit_local(world.bundles[0] / "bundle.json", store, submitter="alice")
    latest = submit_local(world.bundles[1] / "bundle.json", store, submitter="alice")  # same model and checkpoint
    other = submit_local(variant(world.bundles[0], tmp_path / "o", name="other", checkpoint_sha256="c" * 64), store,
                         submitter="bob")  # fmt: skip
    ceiling = submit_local(variant(world.bundles[1], tmp_path / "c", name=CEILING_MODEL_NAME, checkpoint_sha256=None),
                           store, submitter="rlir", allow_reference=True)  # fmt: skip
    # stored numbers are not trusted: a bundle written straight into the store with a forged value ranks with the
    # value its items give
    forged = b0.model_copy(update={"model": ModelInfo(name="forged"), "metrics": b0.metrics.model_copy(
        update={"primary": b0.metrics.primary.model_copy(update={"value": 0.99, "ci95": (0.98, 1.0)})})})  # fmt: skip
    store.add_submission(forged, tier="self-reported", submitter="eve")
    [board] = leaderboards(store)
    rows = {row.model: row for row in board.rows}
    assert set(rows) == {"tiny", "other", CEILING_MODEL_NAME, "forged"}  # "tiny" once: only its latest submission
    assert rows["tiny"].submission_id == latest.id != first.id
    assert (rows["tiny"].value, (rows["tiny"].ci_low, rows["tiny"].ci_high)) == (b1.metrics.primary.value,
                                                                                 b1.metrics.primary.ci95)  # fmt: skip
    assert rows["forged"].value == b0.metrics.primary.value and rows["forged"].ci_high < 0.98
    assert rows["tiny"].tasks == {k: v["f1_macro"] for k, v in b1.metrics.tasks.items()}
    assert rows["tiny"].camera_l1 == b1.metrics.camera_l1 and rows["tiny"].psnr == b1.metrics.psnr["mean"]
    assert (
        rows["tiny"].fps == b1.metrics.throughput.frames_per_second and rows["tiny"].parameters == b1.model.parameters
    )
    # the ceiling row comes first and takes no band; the models are banded in value order
    assert (
        board.rows[0].submission_id == ceiling.id and board.rows[0].kind == "reference" and board.rows[0].band is None
    )
    models = board.rows[1:]
    assert [r.value for r in models] == sorted((r.value for r in models), reverse=True)
    assert [r.band for r in models] == assign_bands([(r.ci_low, r.ci_high) for r in models])
    assert other.id in {r.submission_id for r in models}


def test_evaluator_versions_are_never_ranked_together(store, world):
    submit_local(world.bundles[0], store, submitter="alice")
    future = load_bundle(world.bundles[1]).model_copy(update={"evaluator_version": 2, "model": ModelInfo(name="next")})
    store.add_submission(future, tier="self-reported", submitter="alice")
    boards = leaderboards(store)
    assert [(b.evaluator_version, [r.model for r in b.rows]) for b in boards] == [(2, ["next"]), (1, ["tiny"])]
    assert [r.model for b in leaderboards(store, evaluator_version=1) for r in b.rows] == ["tiny"]


# -- tokens --------------------------------------------------------------------------------------------------------


def test_tokens_are_stored_salted_and_checked(tmp_path):
    store = Store(tmp_path / "lb.db")
    token = store.create_token("alice")
    second = store.create_token("bob")
    assert token != second and token.startswith("rlir_")
    assert store.verify_token(token).name == "alice"
    secret = token.split("_", 2)[2]
    assert store.verify_token(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert store.verify_token(f"rlir_{second.split('_')[1]}_{secret}") is None  # a secret only opens its own row
    assert (
        store.verify_token("") is None and store.verify_token("rlir_x_y") is None and store.verify_token(secret) is None
    )
    with sqlite3.connect(store.path) as conn:
        rows = conn.execute("SELECT salt, digest FROM tokens").fetchall()
    assert len({r[0] for r in rows}) == 2 and all(secret.encode() not in r[0] + r[1] for r in rows)
    assert secret.encode() not in store.path.read_bytes()
    store.revoke_token(int(token.split("_")[1]))
    assert store.verify_token(token) is None and store.verify_token(second).name == "bob"
    with pytest.raises(ConfigError, match="token name"):
        store.create_token("   ")


# -- text views and the CLI ----------------------------------------------------------------------------------------

HOSTILE = ["<script>alert(1)</script>", '"; DROP TABLE submissions; --', "[bold red]x[/] | **y**",
           "evil\x1b]0;owned\x07\x1b[2J", "zero\u200bwidth"]  # fmt: skip


def test_hostile_names_are_refused_and_views_escape_what_is_stored_anyway(store, world, tmp_path):
    """Validation refuses every hostile name; rows stored before names were checked (written straight into the
    store here) are still printed escaped: no markup, no HTML, no terminal escape reaches the output raw."""
    from rich.console import Console

    from leaderboard.render import print_terminal, render_json, render_markdown

    for i, name in enumerate(HOSTILE):
        with pytest.raises(SubmissionRejected, match="may only use ASCII letters|control or format character"):
            submit_local(variant(world.bundles[i % 2], tmp_path / str(i), name=name), store, submitter=f"user{i}")
        bundle = load_bundle(world.bundles[i % 2]).model_copy(update={"model": ModelInfo(name=name)})
        store.add_submission(bundle.model_copy(update={"created_at": f"2026-01-0{i + 1}T00:00:00+00:00"}),
                             tier="self-reported", submitter=f"user{i}")  # fmt: skip
    boards = leaderboards(store)
    document = json.loads(render_json(boards))
    assert sorted(r["model"] for r in document["boards"][0]["rows"]) == sorted(HOSTILE)  # JSON keeps the data
    assert _count(store)[0] == len(HOSTILE)  # the SQL-looking name is data
    markdown = render_markdown(boards)
    assert "<script>" not in markdown and "&lt;script&gt;" in markdown
    header = next(line for line in markdown.splitlines() if line.startswith("| band"))
    columns = header.count(" | ") + 1
    for line in markdown.splitlines():
        if line.startswith("| ") and "x" in line:  # the name with pipes keeps its row's column count
            assert len([c for c in line.replace("\\|", "").split("|")[1:-1]]) == columns
    console = Console(record=True, width=250)
    print_terminal(boards, console)
    text = console.export_text()
    assert "[bold red]x[/] | **y**" in text and "<script>alert(1)</script>" in text
    for output in (text, markdown):
        assert "\x1b" not in output and "\x07" not in output and "\u200b" not in output
    assert "\\x1b]0;owned" in text and "zero\\u200bwidth" in text  # shown as escapes
    assert "x1b\\]0;owned" in markdown and "u200bwidth" in markdown


def test_cli_suite_add_add_show_export_token(world, tmp_path, capsys):
    from rlir.cli import main

    db = str(tmp_path / "cli.db")
    assert main(["leaderboard", "suite", "add", str(world.suite_dir), "--idm", str(world.idm_weights), "--db", db]) == 0
    assert (
        main(
            [
                "leaderboard",
                "add",
                str(world.bundles[0]),
                "--db",
                db,
                "--submitter",
                "alice",
                "--reproduce",
                "--checkpoint",
                str(world.checkpoint),
            ]
        )
        == 0
    )  # re-generated here: identical videos and records
    assert "tier reproduced" in capsys.readouterr().out
    assert (
        main(["leaderboard", "submit", str(world.bundles[1]), "--no-videos", "--db", db, "--submitter", "alice"]) == 0
    )
    assert "tier self-reported" in capsys.readouterr().out
    assert main(["leaderboard", "add", str(world.bundles[1]), "--db", db]) == 2  # a replay: error, exit 2
    assert "already submitted" in capsys.readouterr().err.replace("\n", "")
    assert main(["leaderboard", "show", "--db", db]) == 0
    assert "tiny-mc v1" in capsys.readouterr().out
    out = tmp_path / "board.json"
    assert main(["leaderboard", "export", "--format", "json", "--out", str(out), "--db", db]) == 0
    [board] = json.loads(out.read_text())["boards"]
    assert [(r["model"], r["tier"]) for r in board["rows"]] == [("tiny", "self-reported")]
    assert main(["leaderboard", "token", "create", "carol", "--db", db]) == 0
    assert Store(db).verify_token(capsys.readouterr().out.strip()).name == "carol"


def test_seed_store_registers_suite_and_ceiling_idempotently(world, tmp_path):
    from leaderboard.seed import seed_if_empty, seed_store

    bundles = tmp_path / "seed_bundles"
    variant(world.bundles[1], bundles / "ceiling", name=CEILING_MODEL_NAME, checkpoint_sha256=None)
    (bundles / "ceiling" / "bundle.json").rename(bundles / "ceiling.json")
    shutil.copy(world.bundles[0] / "bundle.json", bundles / "tiny.json")
    store = Store(tmp_path / "seed.db")
    report = seed_if_empty(store, bundles_dir=bundles, suite=str(world.suite_dir), idm=str(world.idm_weights))
    assert report.suite.name == "tiny-mc" and len(report.added) == 2 and not report.notes
    # seeded rows are dated by their bundles, not by the moment this database was seeded
    assert [store.submission(i).submitted_at for i in report.added] == [
        json.loads((bundles / name).read_text())["created_at"] for name in ("ceiling.json", "tiny.json")
    ]
    assert seed_if_empty(store, bundles_dir=bundles) is None  # not empty any more
    again = seed_store(store, bundles_dir=bundles, suite=str(world.suite_dir), idm=str(world.idm_weights))
    assert again.added == [] and again.already_present == ["ceiling.json", "tiny.json"]
    [board] = leaderboards(store)
    assert [(r.model, r.kind, r.band) for r in board.rows][0] == (CEILING_MODEL_NAME, "reference", None)
    # a suite that is not installed: seeding says so instead of failing
    missing = seed_store(Store(tmp_path / "none.db"), bundles_dir=tmp_path / "empty", suite=str(tmp_path / "no-suite"))
    assert len(missing.notes) == 1 and "not registered" in missing.notes[0] and "no-suite" in missing.notes[0]
