"""Launching real ``torchrun`` process groups from tests.

``--standalone`` lets torchrun's own TCP store bind a free port and share it with the workers. Picking a free port in
the test and passing ``--master_port`` is a race: between the test releasing the port and torchrun binding it, another
process (under ``pytest -n 2`` often the other worker's gloo group) can take it, and the launch fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def torchrun(*args: str, nproc: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``torchrun --standalone --nproc_per_node=nproc ARGS`` from the repository root, one thread per process.

    Fails the test with the tail of the workers' stderr when the launch does not exit 0."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)
    assert result.returncode == 0, f"torchrun exited {result.returncode}:\n{result.stderr[-4000:]}"
    return result
