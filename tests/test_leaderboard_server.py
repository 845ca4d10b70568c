"""The leaderboard HTTP server, run for real (uvicorn in a subprocess on a loopback port), with real bundles."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from evaluation.bundle import load_bundle
from leaderboard.store import Store
from leaderboard.validate import bundle_sha256, register_suite
from worldmodels.errors import ConfigError
from tests.test_leaderboard_store import shared_world, variant

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(db: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """``rlir leaderboard serve`` on a free loopback port; returns once it answers."""
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "rlir",
        "leaderboard",
        "serve",
        "--db",
        str(db),
        "--port",
        str(port),
        *args,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    log = db.with_name(f"server-{port}.log")  # a file, not a pipe nobody drains
    with open(log, "wb") as stderr:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the server did not answer within 90 s")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def post(url: str, body: bytes, token: str | None, content_type: str = "application/json", **headers) -> httpx.Response:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(url + "/api/submissions", content=body, headers={"Content-Type": content_type, **headers},
                      timeout=120)  # fmt: skip


def sha_of(bundle_dir: Path) -> str:
    return bundle_sha256(load_bundle(bundle_dir))


def stored_shas(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT bundle_sha256 FROM submissions")]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return shared_world(tmp_path_factory)  # read only: databases live in each test's own directory


def _prepared_db(world, path: Path) -> Path:
    register_suite(Store(path), world.suite_dir, world.idm_weights)
    return path


@pytest.fixture(scope="module")
def server(world, tmp_path_factory):
    db = _prepared_db(world, tmp_path_factory.mktemp("lb-server") / "server.db")
    process, url = start_server(db, "--max-body-mb", "1", "--rate-limit", "5")
    yield url, db
    stop(process)


def test_submit_bundle_and_videos_then_read_back(server, world, capsys):
    from rlir.cli import main

    url, db = server
    token = Store(db).create_token("alice")
    response = post(url, (world.bundles[0] / "bundle.json").read_bytes(), token)
    assert response.status_code == 201, response.text
    submission = response.json()["submission"]
    assert submission["tier"] == "self-reported" and submission["submitter"] == "alice"
    assert submission["bundle_sha256"] == sha_of(world.bundles[0]) in stored_shas(db)
    assert response.headers["location"] == f"/api/submissions/{submission['id']}"
    assert httpx.get(url + response.headers["location"]).json()["submission"] == submission
    # the CLI client sends the bundle directory with its videos as a zip: re-scored by the server, tier verified
    assert main(["leaderboard", "submit", str(world.bundles[1]), "--server", url, "--token", token]) == 0
    assert "tier verified" in capsys.readouterr().out
    board = httpx.get(url + "/api/leaderboard", params={"suite": "tiny-mc"}).json()["boards"][0]
    [row] = [r for r in board["rows"] if r["model"] == "tiny"]  # only the latest submission of model "tiny"
    assert row["tier"] == "verified" and row["submission_id"] != submission["id"]
    assert row["primary"]["value"] == load_bundle(world.bundles[1]).metrics.primary.value
    assert httpx.get(url + "/api/leaderboard", params={"suite": "nothing"}).json()["boards"] == []
    assert httpx.get(url + "/api/submissions/999").status_code == 404


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_bad_requests_get_clear_errors_and_store_nothing(server, world, tmp_path):
    url, db = server
    token = Store(db).create_token("bob")
    before = stored_shas(db)
    good = (variant(world.bundles[0], tmp_path / "good", name="bob-model") / "bundle.json").read_bytes()
    tampered = variant(world.bundles[0], tmp_path / "t", name="bob-2",
                       edit=lambda d: d["metrics"]["primary"].update(value=0.99))  # fmt: skip
    unknown = variant(world.bundles[0], tmp_path / "u", name="bob-3", edit=lambda d: d["suite"].update(name="other"))
    cases = [
        (post(url, good, None), 401, "Authorization: Bearer"),
        (post(url, good, "rlir_1_not-the-secret"), 401, "unknown or revoked token"),
        (post(url, b'{"kind": "rlir-result", ', token), 400, "not valid JSON"),
        (post(url, (tampered / "bundle.json").read_bytes(), token), 422, "metrics.primary.value: reported 0.99"),
        (
            post(url, _zip({"bundle.json": good, "../evil.npz": b"x"}), token, "application/zip"),
            400,
            "unexpected archive members '../evil.npz'",
        ),
    ]
    token2 = Store(db).create_token("bob2")  # rate limit 5 per token: spread the remaining cases
    cases += [
        (post(url, (unknown / "bundle.json").read_bytes(), token2), 422, "suite 'other' v1 is not registered"),
        (post(url, b"x" * (2 * 1024 * 1024), token2), 413, "exceeds 1048576 bytes"),
        (
            httpx.post(
                url + "/api/submissions",
                content=iter([b"x" * 65536] * 32),
                timeout=60,  # chunked, no length
                headers={"Authorization": f"Bearer {token2}", "Content-Type": "application/json"},
            ),
            413,
            "exceeds",
        ),
        (post(url, good, token2, "text/plain"), 415, "application/zip"),
    ]
    assert stored_shas(db) == before
    for response, status, reason in cases:
        assert response.status_code == status, (status, response.text)
        assert any(reason in r for r in response.json()["reasons"]), (reason, response.json())
    assert cases[0][0].headers["www-authenticate"] == "Bearer"
    assert post(url, good, token2).status_code == 201
    replay = post(url, good, token2)  # 6th attempt with token2: over the limit before it is even looked at
    assert replay.status_code == 429 and int(replay.headers["retry-after"]) >= 1
    token3 = Store(db).create_token("bob3")
    replay = post(url, good, token3)
    assert replay.status_code == 409 and "already submitted" in replay.json()["reasons"][0]
    assert len(stored_shas(db)) == len(before) + 1


def test_hostile_strings_are_refused_at_the_door(server, world, tmp_path):
    """Markup, SQL, terminal escapes, zero-width and confusable characters in names: refused with the reason, nothing
    stored; the page stays well-formed (views escape stored strings anyway: test_leaderboard_html)."""
    url, db = server
    with pytest.raises(ConfigError, match="token name '<b>evil</b>' may only use"):
        Store(db).create_token("<b>evil</b>")
    token = Store(db).create_token("evil")
    before = stored_shas(db)
    names = ["<script>alert(1)</script>", '"; DROP TABLE submissions; --', "x\x1b[2J\x1b]0;owned\x07", "tiny\u200b",
             "crafter\u2010nfd"]  # fmt: skip
    for i, name in enumerate(names):
        body = (variant(world.bundles[0], tmp_path / str(i), name=name) / "bundle.json").read_bytes()
        response = post(url, body, token)
        assert response.status_code == 422, response.text
        assert any("may only use ASCII" in r or "control or format character" in r for r in response.json()["reasons"])
    assert stored_shas(db) == before
    page = httpx.get(url + "/")
    assert page.status_code == 200 and page.headers["content-security-policy"].startswith("default-src 'none'")


WORKER = """
import json, sys
from leaderboard.client import SubmissionFailed, submit_remote
url, token, *dirs = sys.argv[1:]
for d in dirs:
    try:
        print(json.dumps([d, 201, submit_remote(d, url, token, include_videos=False)["bundle_sha256"]]), flush=True)
    except SubmissionFailed as error:
        print(json.dumps([d, error.status, error.reasons]), flush=True)
"""


@pytest.mark.slow
def test_concurrent_submitters_leave_a_consistent_store(server, world, tmp_path):
    url, db = server
    store = Store(db)
    shared = variant(world.bundles[1], tmp_path / "shared", name="shared")
    jobs = []
    for w in range(6):
        dirs = [variant(world.bundles[k % 2], tmp_path / f"w{w}-{k}", name=f"worker{w}-model{k}") for k in range(3)]
        jobs.append((store.create_token(f"worker{w}"), [shared, *dirs]))
    before = set(stored_shas(db))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url, token, *map(str, dirs)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for token, dirs in jobs
    ]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]
        results += [json.loads(line) for line in out.splitlines()]
    statuses = [(Path(d).name, status) for d, status, _ in results]
    assert len(statuses) == 24
    assert sorted(s for name, s in statuses if name == "shared") == [201] + [409] * 5  # exactly one wins the race
    assert all(s == 201 for name, s in statuses if name != "shared")
    expected = {sha_of(Path(d)) for token, dirs in jobs for d in dirs}
    stored = stored_shas(db)
    assert len(stored) == len(set(stored)) and set(stored) - before == expected  # none lost, none twice
    with sqlite3.connect(db) as conn:
        per_submission = conn.execute("SELECT COUNT(*) FROM items GROUP BY submission_id").fetchall()
    assert {n for (n,) in per_submission} == {4}
    assert store.integrity_check() == "ok"


@pytest.mark.slow
def test_acknowledged_submissions_survive_kill_9(world, tmp_path):
    db = _prepared_db(world, tmp_path / "crash.db")
    token = Store(db).create_token("stream")
    bodies = [(variant(world.bundles[k % 2], tmp_path / f"s{k}", name=f"stream-{k}") / "bundle.json").read_bytes()
              for k in range(30)]  # fmt: skip
    process, url = start_server(db, "--rate-limit", "1000")
    assert post(url, bodies[0], token).status_code == 201  # warm-up (first request imports the metric code)
    acknowledged, failed, unexpected = [bundle_sha256_of(bodies[0])], [], []

    def stream():
        for body in bodies[1:]:
            try:
                response = post(url, body, token)
            except httpx.HTTPError:
                failed.append(body)
                continue
            if response.status_code == 201:
                acknowledged.append(response.json()["submission"]["bundle_sha256"])
            else:
                unexpected.append(response.text)

    thread = threading.Thread(target=stream)
    thread.start()
    while len(acknowledged) < 6 and thread.is_alive():
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    thread.join(timeout=120)
    process.wait()
    assert not unexpected and failed and len(acknowledged) < len(bodies)  # the kill landed mid-stream
    restarted, url = start_server(db, "--rate-limit", "1000")  # answers again on the same file
    try:
        stored = set(stored_shas(db))
        assert set(acknowledged) <= stored and len(stored) <= len(acknowledged) + 1  # at most the one in flight
        assert Store(db).integrity_check() == "ok"
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 4 * len(stored)
    finally:
        stop(restarted)


def bundle_sha256_of(body: bytes) -> str:
    from evaluation.bundle import parse_bundle

    return bundle_sha256(parse_bundle(body))
