"""The VQ decoder's cost per frame by call size and activation layout, in one process (rounds alternated).

Compile mode (``MineWorld(compile=True)``) decodes a step's frames in calls of up to ``FAST_VQ_FRAMES`` with
channels-last activations; eager mode calls the decoder one frame at a time in the reference layout. This times
both layouts at each call size on the bundled model's tokenizer (random token ids: the decoder's cost does not
depend on them) and reports the largest pixel difference between the layouts. Prints markdown for docs/benchmarks.md.

    .venv/bin/python bench/bench_vq_decode.py                 # crafter-mineworld, calls of 1, 16, 64 frames, 1 thread
    .venv/bin/python bench/bench_vq_decode.py --threads 2 --call 16
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from worldmodels.registry import load_world_model


def time_calls(tokenizer, ids: torch.Tensor, *, channels_last: bool, repeats: int) -> float:
    """Milliseconds per frame of ``repeats`` decoder calls of ``len(ids)`` frames."""
    began = time.perf_counter()
    for _ in range(repeats):
        tokenizer.detokenize(ids, chunk=len(ids), channels_last=channels_last)
    return (time.perf_counter() - began) / (repeats * len(ids)) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="crafter-mineworld", help="registry name or checkpoint path")
    parser.add_argument("--call", type=int, action="append", help="frames per call (default 1, 16, 64)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5, help="alternated rounds per arm (default: 5)")
    parser.add_argument("--frames", type=int, default=128, help="frames decoded per timed run (default: 128)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = load_world_model(args.model).tokenizer
    generator = torch.Generator().manual_seed(0)
    print(f"{platform.processor() or platform.machine()}, {args.threads} thread(s), torch {torch.__version__}, "
          f"{args.model}'s tokenizer ({tokenizer.grid[0]}x{tokenizer.grid[1]} tokens -> {tokenizer.frame_size})\n")
    print("| frames per call | NCHW ms/frame | channels-last ms/frame | ratio | max pixel difference | pixels off |")
    print("|---:|---:|---:|---:|---:|---:|")
    for call in args.call or [1, 16, 64]:
        ids = torch.randint(0, tokenizer.codebook_size, (call, *tokenizer.grid), generator=generator)
        with torch.no_grad():
            reference = tokenizer.detokenize(ids, chunk=call).int()
            nhwc = tokenizer.detokenize(ids, chunk=call, channels_last=True).int()
        repeats = max(1, args.frames // call)
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.rounds):
            for channels_last in (False, True):
                times[channels_last].append(time_calls(tokenizer, ids, channels_last=channels_last, repeats=repeats))
        nchw_ms, nhwc_ms = statistics.median(times[False]), statistics.median(times[True])
        off = (nhwc - reference).abs()
        print(f"| {call} | {nchw_ms:.2f} | {nhwc_ms:.2f} | {nchw_ms / nhwc_ms:.2f}x | {int(off.max())} | "
              f"{float((off > 0).float().mean()):.1e} |")


if __name__ == "__main__":
    main()
