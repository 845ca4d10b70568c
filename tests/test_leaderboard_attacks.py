"""Attacks on the leaderboard made real (real bundles of the tiny world, real files, real SQLite, the real server on
loopback), one per defect found by attacking it: each test fails on the code before the fix."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from evaluation.bundle import load_bundle, save_bundle, save_video
from evaluation.scoring import compute_metrics
from leaderboard.ranking import leaderboards
from leaderboard.store import Store
from leaderboard.validate import (
    CEILING_MODEL_NAME,
    SubmissionRejected,
    register_suite,
    submit_local,
    validate_submission,
)
from tests.test_leaderboard_server import post, start_server, stop
from tests.test_leaderboard_store import shared_world, variant
from worldmodels.errors import ConfigError


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return shared_world(tmp_path_factory)


@pytest.fixture
def store(tmp_path, world) -> Store:
    store = Store(tmp_path / "lb.db")
    register_suite(store, world.suite_dir, world.idm_weights)
    return store


def _rewritten(source: Path, out: Path, name: str, items) -> Path:
    """``source``'s bundle under model ``name`` with other item records and aggregates recomputed from them, so that
    only what the records claim can give it away."""
    bundle = load_bundle(source)
    model = bundle.model.model_copy(update={"name": name, "checkpoint_sha256": None, "weights_sha256": None})
    metrics = compute_metrics(items, bundle.taxonomy, throughput=bundle.metrics.throughput)
    save_bundle(bundle.model_copy(update={"model": model, "items": items, "metrics": metrics, "videos": None}), out)
    return out


# -- 1. ground truth comes from the suite; self-reported rows rank apart; above-ceiling rows are flagged --------------


def test_forged_ground_truth_and_frame_counts_are_refused(store, world, tmp_path):
    """1 frame per item and all-zero labels scored F1 1.000 before: every number in it was self-consistent."""
    items = [item.model_copy(update={"gt_labels": [[0] * len(item.gt_labels[0])],
                                     "pred_labels": [[0] * len(item.gt_labels[0])], "psnr": None, "ssim": None})
             for item in load_bundle(world.bundles[0]).items]  # fmt: skip
    forged = _rewritten(world.bundles[0], tmp_path / "forged", "one-frame", items)
    assert load_bundle(forged).metrics.primary.value == 1.0  # precondition: the forgery is consistent
    with pytest.raises(SubmissionRejected, match=r"item 'clip_0': gt_labels \(1 frames x \d+\) differ from the suite's "
                                                 r"ground truth \(5 frames x \d+ tasks"):  # fmt: skip
        submit_local(forged, store, submitter="mallory")
    shuffled = [item.model_copy(update={"gt_labels": item.gt_labels[::-1]}) for item in load_bundle(world.bundles[0]).items]
    with pytest.raises(SubmissionRejected, match="differ from the suite's ground truth"):
        submit_local(_rewritten(world.bundles[0], tmp_path / "shuffled", "shuffled", shuffled), store, submitter="m")


def test_copied_predictions_rank_apart_and_are_flagged_above_the_ceiling(store, world, tmp_path):
    """Predictions copied from the ground truth cannot be told from an honest self-report by the numbers alone: the
    row is ranked below every checked row and flagged, since it beats what the IDM reads from the real game."""
    from evaluation.evaluator import evaluate_ground_truth
    from evaluation.idm.vpt import VPTInverseDynamicsModel
    from evaluation.suites import load_suite
    from leaderboard.render import print_terminal, render_markdown

    idm = VPTInverseDynamicsModel.from_files(world.root / "tiny_idm.model", world.idm_weights)
    ceiling = evaluate_ground_truth(load_suite(world.suite_dir), idm, tmp_path / "ceiling")
    submit_local(tmp_path / "ceiling", store, submitter="rlir", allow_reference=True)
    verified = submit_local(world.bundles[0], store, submitter="alice")  # its videos/ are re-scored here
    oracle = [item.model_copy(update={"pred_labels": item.gt_labels}) for item in load_bundle(world.bundles[1]).items]
    forged = submit_local(_rewritten(world.bundles[1], tmp_path / "oracle", "oracle", oracle), store, submitter="m")
    assert (verified.tier, forged.tier) == ("verified", "self-reported")
    [board] = leaderboards(store)
    rows = {row.model: row for row in board.rows}
    assert rows["oracle"].value == 1.0 > ceiling.metrics.primary.value
    assert [row.model for row in board.rows] == [CEILING_MODEL_NAME, "tiny", "oracle"]  # checked first, then the rest
    assert (rows["tiny"].band, rows["oracle"].band) == (1, 1)  # two rankings
    assert rows["oracle"].above_ceiling
    assert rows["tiny"].above_ceiling == (rows["tiny"].value > ceiling.metrics.primary.value)
    from rich.console import Console

    console = Console(record=True, width=200)
    print_terminal([board], console)
    line = next(line for line in console.export_text().splitlines() if "oracle" in line)
    assert " s1 " in line and "self-reported above ceiling!" in line
    assert re.search(r"\| s1 \| oracle .*above ceiling\!", render_markdown([board]).replace("\\", ""))


# -- 2. the verified tier refuses the suite's own ground-truth frames ----------------------------------------------


def _videos_bundle(world, out: Path, name: str, make_video) -> Path:
    """A bundle of the videos ``make_video(ground_truth)`` for every item, scored by the suite's IDM like a verifier
    does, with the videos saved next to it: everything consistent, only the frames' origin is wrong."""
    from evaluation.evaluator import bundle_from_videos
    from evaluation.idm.vpt import VPTInverseDynamicsModel
    from evaluation.bundle import ModelInfo
    from evaluation.suites import load_suite

    suite = load_suite(world.suite_dir)
    idm = VPTInverseDynamicsModel.from_files(world.root / "tiny_idm.model", world.idm_weights)
    videos = [(item.id, make_video(item.ground_truth)) for item in suite]
    bundle = bundle_from_videos(videos, suite, idm, out, model_info=ModelInfo(name=name))
    paths = {item_id: save_video(frames, out, item_id) for item_id, frames in videos}
    save_bundle(bundle.model_copy(update={"videos": paths}), out)
    return out


def test_verified_tier_refuses_ground_truth_videos(store, world, tmp_path):
    exact = _videos_bundle(world, tmp_path / "exact", "copycat", lambda truth: truth.copy())
    with pytest.raises(SubmissionRejected, match="item 'clip_0': the video is the suite's ground truth"):
        submit_local(exact, store, submitter="mallory")
    rng = np.random.default_rng(0)  # ±1 grey level: what a lossy re-encoding of the real frames leaves (~50 dB)

    def nudged(truth):
        return np.clip(truth.astype(np.int16) + rng.integers(-1, 2, truth.shape), 0, 255).astype(np.uint8)

    near = _videos_bundle(world, tmp_path / "near", "copycat2", nudged)
    with pytest.raises(SubmissionRejected, match=r"20 of 20 frames are within 40 dB PSNR of the suite's ground truth"):
        submit_local(near, store, submitter="mallory")
    assert store.submissions() == []
    # the model's own videos (tens of dB away from the truth) are verified as before
    assert submit_local(world.bundles[0], store, submitter="alice").tier == "verified"


# -- 3. lengths are checked before anything is materialised --------------------------------------------------------


def _status_kib(pid: int, key: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{key}:\s+(\d+) kB", text, re.M).group(1))


@pytest.mark.slow
def test_a_huge_label_list_costs_the_server_little_memory(world, tmp_path):
    """A 30 MB bundle whose one label list has 7.5M entries (under the 32 MB default body limit) peaked at 3.8 GB
    RSS and 30 s of CPU; now the server refuses it from a count of its raw bytes, under 300 MB above its idle RSS."""
    db = tmp_path / "memory.db"
    register_suite(Store(db), world.suite_dir, world.idm_weights)
    token = Store(db).create_token("mallory")
    data = json.loads((world.bundles[0] / "bundle.json").read_text())
    data["items"][0]["gt_labels"] = "HUGE"
    entries = 7_500_000
    body = json.dumps(data).encode().replace(b'"HUGE"', b"[" + b"[0]," * (entries - 1) + b"[0]]")
    assert 28 * 2**20 < len(body) < 32 * 2**20
    process, url = start_server(db)
    try:
        idle = _status_kib(process.pid, "VmRSS")
        response = post(url, body, token)
        peak = _status_kib(process.pid, "VmHWM")
    finally:
        stop(process)
    assert response.status_code in (413, 422), response.text
    assert any("more than a bundle of the registered suites can need" in r for r in response.json()["reasons"])
    assert (peak - idle) / 1024 < 300, f"peak {peak / 1024:.0f} MiB, idle {idle / 1024:.0f} MiB"
    print(f"server RSS: idle {idle / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB")


def test_a_bundle_file_over_the_limit_is_not_read(store, tmp_path):
    big = tmp_path / "big" / "bundle.json"
    big.parent.mkdir()
    with open(big, "wb") as f:
        f.truncate(33 * 2**20)  # sparse: the size alone must refuse it
    with pytest.raises(SubmissionRejected, match="holds at most 33554432"):
        validate_submission(big.parent, store, submitter="x")


# -- 4. tokens: unique names, ownership by id, list / revoke, expiry ---------------------------------------------


def test_token_names_are_unique_and_ownership_follows_the_token_id(world, tmp_path, capsys):
    from rlir.cli import main

    db = tmp_path / "tokens.db"
    register_suite(Store(db), world.suite_dir, world.idm_weights)
    store = Store(db)
    with pytest.raises(ConfigError, match="reserved for the leaderboard's own rows"):
        store.create_token("rlir")
    alice = store.create_token("alice")
    for lookalike in ("alice", "Alice", "al1ce"):
        with pytest.raises(ConfigError, match="is taken"):
            store.create_token(lookalike)
    mallory = store.create_token("mallory")
    with pytest.raises(ConfigError, match="in the past"):
        store.create_token("late", expires_at="2020-01-01")
    expiring = store.create_token("soon", expires_at="2099-01-01")
    process, url = start_server(db)
    try:
        body = (world.bundles[0] / "bundle.json").read_bytes()
        assert post(url, body, alice).status_code == 201
        taken = post(url, (variant(world.bundles[1], tmp_path / "m", name="tiny") / "bundle.json").read_bytes(), mallory)
        assert taken.status_code == 422 and "'tiny' belongs to submitter 'alice'" in taken.text
        # the seeded rows belong to local:rlir; no token can be named so, and a local submitter named alice is not
        # the token alice
        with pytest.raises(SubmissionRejected, match="belongs to submitter 'alice'"):
            submit_local(variant(world.bundles[1], tmp_path / "l", name="tiny", checkpoint_sha256=None), store,
                         submitter="alice")  # fmt: skip
        assert main(["leaderboard", "token", "list", "--db", str(db)]) == 0
        listing = capsys.readouterr().out
        assert all(name in listing for name in ("alice", "mallory", "soon", "2099-01-01")) and "rlir_" not in listing
        assert main(["leaderboard", "token", "revoke", mallory.split("_")[1], "--db", str(db)]) == 0
        assert post(url, body, mallory).status_code == 401
        with sqlite3.connect(db) as conn:  # the clock moves on: the token's expiry passes
            conn.execute("UPDATE tokens SET expires_at = '2001-01-01T00:00:00+00:00' WHERE name = 'soon'")
        assert post(url, body, expiring).status_code == 401
    finally:
        stop(process)
    capsys.readouterr()
    assert main(["leaderboard", "token", "revoke", "99", "--db", str(db)]) == 2
    assert "no token with id 99" in capsys.readouterr().err


# -- 5. names cannot impersonate -----------------------------------------------------------------------------------


def test_impersonating_names_and_claimed_checkpoints_are_refused(store, world, tmp_path):
    submit_local(world.bundles[0], store, submitter="alice")
    cases = {
        "Tiny": "looks like 'tiny', which belongs to submitter 'alice'",
        "t1ny": "looks like 'tiny'",
        "tiny\u200b": "control or format character",
        "tiny @0123abcd": "may only use ASCII letters",
        "crafter\u2010nfd": "may only use ASCII letters",
        "\uff54\uff49\uff4e\uff59x": "is not NFKC-normalised; use 'tinyx'",
        "Ground_Truth (mine)": "reserved for the leaderboard's reference rows",
        "x" * 65: "at most 64",
    }
    for i, (name, reason) in enumerate(cases.items()):
        bundle = variant(world.bundles[1], tmp_path / str(i), name=name)
        with pytest.raises(SubmissionRejected, match=re.escape(reason)):
            submit_local(bundle, store, submitter="mallory")
    claimed = variant(world.bundles[1], tmp_path / "claimed", name="my-model",
                      checkpoint_sha256=load_bundle(world.bundles[0]).model.checkpoint_sha256)  # fmt: skip
    with pytest.raises(SubmissionRejected, match="is already on the leaderboard as 'tiny' of submitter 'alice'"):
        submit_local(claimed, store, submitter="mallory")
    assert submit_local(claimed, store, submitter="alice").model_name == "my-model"  # the owner may rename


# -- 7. plausible values ----------------------------------------------------------------------------------------------


def test_implausible_fields_are_refused_and_plot_ticks_are_round(store, world, tmp_path):
    from leaderboard.render import render_html

    def fps(value):
        return lambda d: d["metrics"]["throughput"].update(frames_per_second=value)

    cases = [
        (fps(1e-300), "metrics.throughput.frames_per_second: Input should be greater than or equal to 0.001"),
        (fps(1e12), "frames_per_second: Input should be less than or equal to 10000000"),
        (lambda d: d["runtime"].update(device="x" * 2000), "runtime.device: String should have at most 32"),
        (lambda d: d["runtime"].update(top_p=7.0), "runtime.top_p: Input should be less than or equal to 1"),
        (lambda d: d["model"].update(parameters=-5), "model.parameters: Input should be greater than or equal to 0"),
    ]
    for i, (edit, reason) in enumerate(cases):
        with pytest.raises(SubmissionRejected, match=re.escape(reason)):
            submit_local(variant(world.bundles[0], tmp_path / str(i), edit=edit), store, submitter="m")
    for i, value in enumerate((0.001, 3.7, 123456.0)):
        bundle = variant(world.bundles[i % 2], tmp_path / f"ok{i}", name=f"speed-{i}", edit=fps(value))
        submit_local(bundle / "bundle.json", store, submitter="m")
    svg = render_html(leaderboards(store)).split("<svg", 1)[1]
    y_labels = re.findall(r'text-anchor="end">([^<]+)<', svg)
    x_labels = re.findall(r'text-anchor="middle">([0-9.e+-]+)<', svg)
    assert len(y_labels) >= 2 and all(round(float(v) * 20) == float(v) * 20 for v in y_labels), y_labels
    assert x_labels and all(re.fullmatch(r"1(0*|e\+?\d+)|0\.0*1|1e-\d+", v) for v in x_labels), x_labels


# -- 10. the database file, the 80-column view, the seed dates -------------------------------------------------------


def test_database_file_is_private_even_under_a_permissive_umask(tmp_path, world):
    old = os.umask(0o002)
    try:
        store = Store(tmp_path / "private" / "lb.db")
        register_suite(store, world.suite_dir, world.idm_weights)
    finally:
        os.umask(old)
    for path in (store.path, store.path.with_name("lb.db-wal")):
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_show_at_80_columns_keeps_every_name_and_score_readable(store, world, tmp_path):
    from rich.console import Console

    from leaderboard.render import print_terminal

    submit_local(world.bundles[0], store, submitter="alice")
    submit_local(variant(world.bundles[1], tmp_path / "b", name="a-rather-long-model-name-v2"), store, submitter="bob")
    console = Console(record=True, width=80)
    print_terminal(leaderboards(store), console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text  # nothing truncated
    lines = text.splitlines()
    header = next(line for line in lines if " model " in line and " tier " in line)
    start, stop = header.index(" model "), header.index(" tier ")
    body = lines[lines.index(header) + 2 : next(i for i, line in enumerate(lines) if "suite sha256" in line)]
    model_column = "".join(line[start:stop].strip() for line in body)  # a wrapped name reads on, line by line
    for row in leaderboards(store)[0].rows:
        assert row.model in model_column and f"{row.value:.3f}" in text and row.submitted_at[:10] in text
        assert f"[{row.ci_low:.3f}, {row.ci_high:.3f}]" in text


# -- 9. connection cap and header deadline ----------------------------------------------------------------------------


@pytest.mark.slow
def test_half_open_connections_cannot_hold_the_server(world, tmp_path):
    """300 silent connections used to be held for as long as their clients liked; now connections beyond the cap
    are closed at once, and every connection that sends no (or half a) request is closed after the header timeout."""
    import socket

    db = tmp_path / "limits.db"
    register_suite(Store(db), world.suite_dir, world.idm_weights)
    process, url = start_server(db, "--max-connections", "8", "--header-timeout", "6")
    port = int(url.rsplit(":", 1)[1])
    try:
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]
        held[0].sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")  # headers never finished (slowloris)
        time.sleep(0.5)  # let the server accept them before the next ones
        over = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        for sock in over:  # closed by the cap, well before the header deadline
            sock.settimeout(5)
            assert sock.recv(1) == b""
        for sock in held:  # closed by the header deadline
            sock.settimeout(60)
            assert sock.recv(1) == b""
        assert httpx.get(url + "/api/health", timeout=10).status_code == 200  # still serving
    finally:
        for sock in [*held, *over]:
            sock.close()
        stop(process)
