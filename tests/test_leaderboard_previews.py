"""The leaderboard keeps a local submission's previews and links them; it shows how each row sampled its frames."""

from __future__ import annotations

import json

import numpy as np

from leaderboard.ranking import describe_sampling
from leaderboard.store import Store
from rlir.cli import main
from tests.test_leaderboard_store import crafter_suite_record, synthetic_bundle
from worldmodels.data.video import write_video


def test_sampling_is_described_per_model_family():
    assert describe_sampling({"sampler": "dpm-solver++", "sampling_steps": 18, "decoding": None}) == "dpm-solver++, 18 steps"
    assert describe_sampling({"decoding": "naive", "window": 2, "temperature": 1.0}) == "naive decoding"
    assert describe_sampling({"decoding": "diagonal", "window": 4, "top_p": 0.9, "temperature": 0.7}) == (
        "diagonal decoding, window 4, top-p 0.9, temperature 0.7")
    assert describe_sampling({}) == ""


def test_submitted_previews_are_linked_from_the_html_page(tmp_path):
    db = tmp_path / "lb.db"
    suite = Store(db).add_suite(crafter_suite_record())
    bundle = synthetic_bundle(suite, "with-previews", accuracy=0.8, seed=1, fps=10.0)
    bundle["metrics"]["lpips"] = {"mean": 0.25, "per_step": [0.25]}  # reported by `rlir eval --lpips-weights`
    bundle_dir = tmp_path / "bundle"
    bundle_dir.mkdir()
    (bundle_dir / "bundle.json").write_text(json.dumps(bundle))
    write_video(bundle_dir / "previews" / "seed-000.mp4", np.zeros((2, 16, 16, 3), np.uint8), fps=5)
    other = synthetic_bundle(suite, "without", accuracy=0.5, seed=2, fps=10.0)
    (tmp_path / "other.json").write_text(json.dumps(other))

    assert main(["leaderboard", "submit", str(bundle_dir), "--db", str(db), "--submitter", "me"]) == 0
    assert main(["leaderboard", "submit", str(tmp_path / "other.json"), "--db", str(db), "--submitter", "me"]) == 0
    stored = sorted((tmp_path / "leaderboard-artifacts" / "previews").rglob("*.mp4"))
    assert [p.name for p in stored] == ["seed-000.mp4"]
    page = tmp_path / "page.html"
    assert main(["leaderboard", "export", "--format", "html", "--out", str(page), "--db", str(db)]) == 0
    text = page.read_text()
    assert text.count(f'href="{stored[0].resolve().as_uri()}"') == 1  # one row has previews, the other none
    assert "<th>sampling</th><td>naive decoding</td>" in text
    assert text.count("<th>LPIPS (reported)</th><td>0.25</td>") == 1 and "FVD (reported)" not in text
