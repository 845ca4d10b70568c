"""Eager vs compiled decoding of a world-model env in one process, with this machine's roofline.

For each batch size the natively batched env (``RLIR-Crafter-v0``'s model, random actions, real start scenes) is
stepped once with the eager decode step and once with the compiled static step (``compile=True``), rounds
alternated so that load from other processes hits both alike; each round starts from other scenes and actions
(seed = round), the same for every arm, since how many drafts a compiled step of few envs keeps depends on the
content; frames/s are totals over the rounds (the harmonic mean); the first steps of each arm (compilation,
first-call allocations) are not timed. Next to it: RLIR-CrafterDream-v0 (learned reward and termination on top), the real game, this machine's measured fp32 GEMM peak and streaming
bandwidth, and what share of them the compiled step reaches (FLOPs of the transformer's projections per frame and
bytes of KV cache each decode step must read). Prints markdown for docs/benchmarks.md.

    .venv/bin/python bench/bench_speed.py                        # bundled model, 1/4/16/64/256 envs, 2 threads
    .venv/bin/python bench/bench_speed.py --threads 1 --batch 1 --batch 64
    .venv/bin/python bench/bench_speed.py --batch 1 --batch 4 --speculative   # + compiled speculative decoding

``--speculative`` adds compiled speculative decoding (the copy draft, refreshed; the same tokens as naive) as a
third arm, with its forwards per frame and acceptance rate. Compiled naive decoding of up to
``COMPILED_NAIVE_DRAFT_BATCH`` envs verifies drafts itself (``FrameDecoder.verifies_drafts``); the table gives each
compiled row's forwards per frame.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

import rlir_env  # noqa: F401  (registers the ids)
from bench_env import scenes_for, time_real_crafter, time_vector_env, time_world_model  # run as a script: bench/ is on sys.path
from rlir_env.vector import WorldModelVectorEnv
from worldmodels.mineworld.decoding import COMPILED_NAIVE_DRAFT_BATCH
from worldmodels.registry import load_world_model


def gemm_peak(size: int = 1024, repeats: int = 10) -> float:
    """fp32 GFLOP/s of a square matmul at the current thread count (the best of three runs)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = max(best, 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9)
    return best


def stream_bandwidth(floats: int = 50_000_000) -> float:
    """GB/s of a full read (``sum``) of a 200 MB tensor (the best of three runs)."""
    x = torch.randn(floats)
    x.sum()
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        x.sum()
        best = max(best, floats * 4 / (time.perf_counter() - start) / 1e9)
    return best


def frame_costs(model) -> tuple[float, float]:
    """(projection FLOPs per generated frame, KV-cache bytes read per frame at the mean context) of one env."""
    c = model.config
    hd = c.head_dim
    per_layer = c.hidden_size * ((c.num_attention_heads + 2 * c.num_key_value_heads) * hd + c.hidden_size
                                 + 3 * c.intermediate_size)  # fmt: skip
    flops_per_token = 2 * (c.num_hidden_layers * per_layer + c.hidden_size * c.image_vocab_size)
    tokens = c.tokens_per_frame + c.tokens_per_action
    # the context slides between `reference_frames` and the full window: on average 3/4 of the positions are valid
    mean_context = 0.75 * c.max_position_embeddings
    kv_bytes_per_token = c.num_hidden_layers * 2 * c.num_key_value_heads * hd * mean_context * 4
    return flops_per_token * tokens, kv_bytes_per_token * tokens


def decode_stats(model, num_envs: int, decoding: str, steps: int = 8):
    """Forwards per frame and draft acceptance over ``steps`` random steps of ``num_envs`` envs."""
    env = WorldModelVectorEnv(num_envs, model=model, scenes=scenes_for(model), decoding=decoding)
    env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(steps):
        env.step(env.action_space.sample())
    stats = env.decode_stats
    env.close()
    return stats


def time_dream(model, num_envs: int, steps: int) -> float:
    """Env steps/s of ``RLIR-CrafterDream-v0``'s vector env (world model + learned reward and termination heads)."""
    from rlir_env.dream.env import make_dream_vector_env

    return time_vector_env(make_dream_vector_env(num_envs, model=model), steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="crafter-mineworld", help="registry name or checkpoint path")
    parser.add_argument("--batch", type=int, action="append", help="env counts (default 1, 4, 16, 64, 256)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2, both cores)")
    parser.add_argument("--rounds", type=int, default=2, help="alternated rounds per arm (default: 2)")
    parser.add_argument("--frames", type=int, default=64, help="frames generated per timed run (default: 64)")
    parser.add_argument("--speculative", action="store_true", help="also time compiled speculative decoding")
    parser.add_argument("--dream-envs", type=int, default=16,
                        help="RLIR-CrafterDream-v0 row with this many envs (0: skip; default 16, as in docs §5)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batches = args.batch or [1, 4, 16, 64, 256]
    compiled_model = load_world_model(args.model, compile=True)
    arms = {"eager": (load_world_model(args.model), "naive"), "compiled": (compiled_model, "naive")}
    if args.speculative:
        arms["speculative"] = (compiled_model, "speculative")

    fps: dict[tuple[str, int | str], list[float]] = {}
    compile_seconds: dict[int, float] = {}
    for b in batches:  # compile once per batch size before anything is timed
        start = time.perf_counter()
        # steps that verify drafts have widths on both sides of the fused-loop threshold: a graph each
        time_world_model(compiled_model, b, 8 if b <= COMPILED_NAIVE_DRAFT_BATCH else 1, "naive")
        compile_seconds[b] = time.perf_counter() - start
        if args.speculative:  # a dynamic width compiles one graph on each side of the fused-loop threshold
            time_world_model(compiled_model, b, 3, "speculative")
    real = []
    for round_index in range(args.rounds):  # each round other start scenes and actions, the same for every arm
        for b in batches:
            steps = max(2, args.frames // b)
            for name, (model, decoding) in arms.items():
                fps.setdefault((name, b), []).append(time_world_model(model, b, steps, decoding, seed=round_index))
        real.append(time_real_crafter(300))
        if args.dream_envs:
            for name in ("eager", "compiled"):
                fps.setdefault((name, "dream"), []).append(time_dream(arms[name][0], args.dream_envs, 2))

    peak, bandwidth = gemm_peak(), stream_bandwidth()
    flops, kv_bytes = frame_costs(compiled_model)
    real_fps = statistics.median(real)
    print(f"\n{args.model}: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, fp32, "
          f"torch {torch.__version__}; GEMM peak {peak:.1f} GFLOP/s (1024^3), read bandwidth {bandwidth:.1f} GB/s; "
          f"real Crafter {real_fps:.0f} steps/s\n")  # fmt: skip
    print("| envs | eager frames/s | compiled frames/s | ratio | compile s | compiled / real game | compiled forwards "
          "per frame | projection GFLOP/s (share of peak) | KV read GB/s (share of bandwidth) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for b in batches:
        eager, compiled = statistics.harmonic_mean(fps[("eager", b)]), statistics.harmonic_mean(fps[("compiled", b)])
        # FLOPs and bytes of one-token-per-forward decoding: a step that verifies drafts does fewer forwards
        gflops, gbytes = compiled * flops / 1e9, compiled * kv_bytes / 1e9
        forwards = decode_stats(compiled_model, b, "naive", steps=max(2, 32 // b)).forwards_per_frame
        print(f"| {b} | {eager:.1f} | {compiled:.1f} | {compiled / eager:.2f}x | {compile_seconds[b]:.0f} | "
              f"{compiled / real_fps:.3f} | {forwards:.1f} | {gflops:.1f} ({gflops / peak:.0%}) | "
              f"{gbytes:.1f} ({gbytes / bandwidth:.0%}) |")
    if args.dream_envs:
        eager, compiled = statistics.harmonic_mean(fps[("eager", "dream")]), statistics.harmonic_mean(fps[("compiled", "dream")])
        print(f"| RLIR-CrafterDream-v0, {args.dream_envs} envs (env steps/s) | {eager:.1f} | {compiled:.1f} | "
              f"{compiled / eager:.2f}x | | {compiled / real_fps:.3f} | | |")
    if args.speculative:
        print("\n| envs | eager naive frames/s | compiled speculative frames/s | ratio to eager naive | ratio to compiled "
              "naive | forwards per frame | draft acceptance | compiled speculative / real game |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for b in batches:
            eager, naive = statistics.harmonic_mean(fps[("eager", b)]), statistics.harmonic_mean(fps[("compiled", b)])
            speculative = statistics.harmonic_mean(fps[("speculative", b)])
            stats = decode_stats(compiled_model, b, "speculative")
            print(f"| {b} | {eager:.1f} | {speculative:.1f} | {speculative / eager:.2f}x | {speculative / naive:.2f}x | "
                  f"{stats.forwards_per_frame:.1f} | {stats.acceptance_rate:.2f} | {speculative / real_fps:.3f} |")


if __name__ == "__main__":
    main()
