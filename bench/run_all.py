"""Run every CPU benchmark one after another (``make bench``) and print their markdown rows.

Benchmarks share the machine badly (each times itself against a baseline in the same process, but two benchmarks at
once halve each other's cores), so they run sequentially. The tables in docs/benchmarks.md were made from this
output; each script's docstring says what its rows mean.

    .venv/bin/python -m bench.run_all            # all
    .venv/bin/python -m bench.run_all env idm    # only those whose name contains one of the words
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RUNS = [
    ("env", ["bench_env.py"]),
    ("speed", ["bench_speed.py"]),
    ("vq-decode", ["bench_vq_decode.py"]),
    ("training", ["bench_training.py"]),
    ("env-tiny", ["bench_env.py", "--model", "tiny"]),
    ("decoding", ["bench_decoding.py", "--checkpoint", "worldmodels/bundled/crafter-mineworld.safetensors"]),
    ("rollout", ["bench_rollout.py", "--model", "small", "--prompts", "2", "--group", "8", "--frames", "15"]),
    ("idm-vpt", ["bench_idm.py"]),
    ("idm-crafter", ["bench_idm_crafter.py"]),
    ("nfd", ["bench_nfd.py", "--threads", "1"]),
]


def main(argv: list[str]) -> int:
    chosen = [(name, cmd) for name, cmd in RUNS if not argv or any(word in name for word in argv)]
    failed = []
    for name, cmd in chosen:
        print(f"\n## {name}: {' '.join(cmd)}\n", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, str(BENCH / cmd[0]), *cmd[1:]], cwd=BENCH.parent)
        print(f"\n({name}: exit {code}, {time.perf_counter() - start:.0f} s)", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
