"""The three scripts in examples/ run end to end in their short mode (as a user would start them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, out: Path) -> str:
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, str(ROOT / "examples" / script), "--short", "--out", str(out)],
                            capture_output=True, text=True, env=env, cwd=out.parent, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_ppo_in_the_dream(tmp_path):
    stdout = _run("ppo_in_the_dream.py", tmp_path / "ppo")
    assert (tmp_path / "ppo" / "policy.zip").is_file() and "real game: Crafter score" in stdout


@pytest.mark.slow
def test_evaluate_checkpoint(tmp_path):
    stdout = _run("evaluate_checkpoint.py", tmp_path / "eval")
    assert (tmp_path / "eval" / "bundle.json").is_file() and len(list((tmp_path / "eval" / "previews").iterdir())) == 2
    assert "crafter-af-v1-first2: mean macro-F1" in stdout


@pytest.mark.slow
def test_posttrain_bundled(tmp_path):
    stdout = _run("posttrain_bundled.py", tmp_path / "run")
    assert (tmp_path / "run" / "model.safetensors").is_file() and (tmp_path / "run" / "curves.png").is_file()
    assert list((tmp_path / "run" / "videos").glob("*.mp4")) and "1 iterations" in stdout
