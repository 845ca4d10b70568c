"""Throughput of the VPT IDM: one batched forward over B clips vs one clip at a time (same process, same weights).

Uses a small config with the released structure (random weights; speed does not depend on their values) so it runs
on a laptop CPU. Prints markdown table rows for docs/benchmarks.md.

    .venv/bin/python bench/bench_idm.py                       # CPU, fp32, small config
    .venv/bin/python bench/bench_idm.py --device cuda --dtype bfloat16 --config 4x --batch 4 --frames 128
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time

import numpy as np
import torch

from evaluation.idm.vpt import OFFICIAL_4X_NET_KWARGS, VPTIDMConfig, VPTIDMPolicy, VPTInverseDynamicsModel

SMALL_NET_KWARGS = {
    **copy.deepcopy(OFFICIAL_4X_NET_KWARGS),
    "attention_heads": 4,
    "conv3d_params": {"inchan": 3, "outchan": 8, "kernel_size": [5, 1, 1], "padding": [2, 0, 0]},
    "hidsize": 64,
    "img_shape": [128, 128, 8],
    "impala_width": 1,
}


def _machine(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed_pair(first, second, repeats: int) -> tuple[float, float]:
    """Median seconds of two callables, alternated so load from other processes hits both alike."""
    first(), second()  # warm-up (allocator, oneDNN/cuDNN algorithm selection)
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, out in ((first, times[0]), (second, times[1])):
            _sync()
            start = time.perf_counter()
            fn()
            _sync()
            out.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=["small", "4x"], default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    parser.add_argument("--batch", type=int, default=4, help="clips per batched forward")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip (<= 128: one window)")
    parser.add_argument("--height", type=int, default=128, help="input frame height (resized to 128)")
    parser.add_argument("--width", type=int, default=128, help="input frame width (resized to 128)")
    parser.add_argument("--frame-chunk", type=int, default=None, help="frames per ImpalaCNN call (default: model's)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.device == "cpu" and args.dtype == "bfloat16":
        parser.error("bf16 on CPU is ~25x slower than fp32; benchmark it on a GPU only")

    torch.manual_seed(0)
    net_kwargs = OFFICIAL_4X_NET_KWARGS if args.config == "4x" else SMALL_NET_KWARGS
    config = VPTIDMConfig.from_net_kwargs(net_kwargs, 4)
    with torch.device(args.device):
        state = VPTIDMPolicy(config).state_dict()
    dtype = getattr(torch, args.dtype)
    chunk = {} if args.frame_chunk is None else {"frame_chunk": args.frame_chunk}
    model = VPTInverseDynamicsModel.from_state_dict(config, state, device=args.device, dtype=dtype,
                                                    max_windows=args.batch, **chunk)  # fmt: skip
    baseline = VPTInverseDynamicsModel.from_state_dict(config, state, device=args.device, dtype=torch.float32)
    frames = np.random.default_rng(0).integers(0, 256, (args.batch, args.frames, args.height, args.width, 3),
                                               dtype=np.uint8)  # fmt: skip
    n_frames = args.batch * args.frames

    batched_s, single_s = _timed_pair(
        lambda: model.log_probs(frames),
        lambda: [baseline.log_probs(frames[b : b + 1]) for b in range(args.batch)],
        args.repeats,
    )
    batched_fps, single_fps = n_frames / batched_s, n_frames / single_s

    machine = _machine(args.device)
    print(f"VPT IDM ({args.config} config, {args.frames} frames/clip, {args.height}x{args.width} input)")
    print("| machine | dtype | batch | frames/s | ratio |")
    print("|---|---|---|---|---|")
    print(f"| {machine} | float32, one clip at a time | 1 | {single_fps:.1f} | 1.00 |")
    print(f"| {machine} | {args.dtype}, batched | {args.batch} | {batched_fps:.1f} | {batched_fps / single_fps:.2f} |")


if __name__ == "__main__":
    main()
