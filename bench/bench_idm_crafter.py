"""Throughput of the Crafter IDM on CPU: batched inference vs one video at a time, and training steps.

Random weights (speed does not depend on their values), 72x72 frames, fp32. Prints markdown table rows for
docs/benchmarks.md; "frames/s" counts labelled transitions (one per input frame after the first).

    .venv/bin/python bench/bench_idm_crafter.py                   # both bundled configs, batch 32, 1 and 2 threads
    .venv/bin/python bench/bench_idm_crafter.py --width 64 --threads 1
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from evaluation.idm.crafter import CrafterIDM, CrafterIDMConfig


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up (allocator, oneDNN primitive cache)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, action="append", help="IDM width(s) (default: 48 and 64)")
    parser.add_argument("--batch", type=int, default=32, help="videos per batched forward / windows per train step")
    parser.add_argument("--window", type=int, default=16, help="transitions per video")
    parser.add_argument("--threads", type=int, action="append", help="torch threads (default: 1 and 2)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    frames = np.random.default_rng(0).integers(0, 256, (args.batch, args.window + 1, 72, 72, 3), dtype=np.uint8)
    targets = torch.from_numpy(np.random.default_rng(1).integers(0, 17, args.batch * args.window))
    n = args.batch * args.window
    print(f"Crafter IDM, 72x72 fp32, {args.window} transitions/video, CPU: {_cpu()}")
    print("| width | params | threads | mode | batch | frames/s | ratio |")
    print("|---|---|---|---|---|---|---|")
    for width in args.width or [48, 64]:
        torch.manual_seed(0)
        model = CrafterIDM(CrafterIDMConfig(width=width))
        params = model.n_parameters()
        for threads in args.threads or [1, 2]:
            torch.set_num_threads(threads)
            single = _median_seconds(lambda: [model.logits(frames[b : b + 1]) for b in range(args.batch)], args.repeats)
            batched = _median_seconds(lambda: model.logits(frames), args.repeats)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

            def train_step() -> None:
                loss = F.cross_entropy(model(torch.from_numpy(frames)).flatten(0, 1), targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

            train = _median_seconds(train_step, args.repeats)
            rows = (("inference, one video at a time", 1, n / single), ("inference, batched", args.batch, n / batched),
                    ("training step", args.batch, n / train))  # fmt: skip
            for mode, batch, fps in rows:
                print(f"| {width} | {params / 1e3:.0f}K | {threads} | {mode} | {batch} | {fps:.0f} | "
                      f"{fps * single / n:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
