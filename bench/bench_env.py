"""Env throughput: frames/s of the natively batched world-model env at 1, 4, 16 and 64 envs, next to the real game.

For each batch size the vector env is reset from real start scenes and stepped with random actions; "frames/s" is
generated frames (env steps summed over envs) per wall-clock second, and every ratio is to the single env timed in
the same process, rounds alternated so that load from other processes hits all batch sizes alike. The real game
(``RLIR-CrafterReal-v0``, opensimplex 0.3) is timed the same way for Crafter models. Prints markdown rows for
docs/benchmarks.md.

    .venv/bin/python bench/bench_env.py                                # the bundled Crafter world model
    .venv/bin/python bench/bench_env.py --model tiny --batch 1 --batch 4 --batch 16 --batch 64
    .venv/bin/python bench/bench_env.py --model PATH.safetensors --device cuda --dtype float16
    .venv/bin/python bench/bench_env.py --model random:300M_16f --device cuda --dtype float16 --decoding diagonal
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import gymnasium as gym
import numpy as np
import torch

import rlir_env  # noqa: F401  (registers the ids)
from rlir_env.vector import WorldModelVectorEnv, as_torch_dtype


def load_model(name: str, device: str, dtype: str):
    """``tiny``, ``random:<official config>`` (e.g. ``random:300M_16f``: the architecture with random weights, for
    GPU rows without the official files), or a registry name / checkpoint path."""
    if name == "tiny" or name.startswith("random:"):
        from worldmodels.mineworld import AMUSED_VQ_CONFIG, TINY_VQ_CONFIG, MineWorld, get_preset

        preset = name.removeprefix("random:")
        torch.manual_seed(0)
        vq_config = TINY_VQ_CONFIG if preset == "tiny" else AMUSED_VQ_CONFIG
        return MineWorld.from_config(get_preset(preset), vq_config).to(device=device, dtype=as_torch_dtype(dtype)).eval()
    from worldmodels.registry import load_world_model

    return load_world_model(name, device=device, dtype=as_torch_dtype(dtype))


def scenes_for(model):
    if model.spec.domain == "crafter":
        return "crafter"
    from rlir_env.scenes import Scene

    h, w = model.spec.frame_size
    rng = np.random.default_rng(0)
    empty = np.zeros((0, *model.config.domain.compact_shape), dtype=np.int64)
    return [Scene(frames=rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8), actions=empty)]


def time_world_model(
    model, num_envs: int, steps: int, decoding: str | None, top_p: float | None = None, seed: int = 0
) -> float:
    env = WorldModelVectorEnv(num_envs, model=model, scenes=scenes_for(model), decoding=decoding, top_p=top_p)
    return time_vector_env(env, steps, seed)


def time_vector_env(env, steps: int, seed: int = 0) -> float:
    """Env steps/s (summed over envs) of ``steps`` random steps (start scenes and actions from ``seed``) after one
    untimed warm-up step; closes ``env``."""
    env.reset(seed=seed)
    env.action_space.seed(seed)
    env.step(env.action_space.sample())  # warm-up: first-call allocations
    start = time.perf_counter()
    for _ in range(steps):
        env.step(env.action_space.sample())
    seconds = time.perf_counter() - start
    env.close()
    return env.num_envs * steps / seconds


def time_real_crafter(steps: int) -> float:
    env = gym.make("RLIR-CrafterReal-v0")
    env.reset(seed=0)
    env.action_space.seed(0)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="crafter-mineworld",
                        help="registry name, checkpoint path, 'tiny' or 'random:300M_16f' (official architecture, "
                        "random weights)")
    parser.add_argument("--batch", type=int, action="append", help="env counts (default 1, 4, 16, 64)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per run (default: 30 / batch-scaled)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--decoding", default=None, help="(default: the model's)")
    parser.add_argument("--top-p", type=float, action="append",
                        help="repeatable: each value timed in the same rounds, the first is the baseline of the "
                        "ratios (default: the model's own; 1: the whole distribution)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batches = args.batch or [1, 4, 16, 64]
    model = load_model(args.model, args.device, args.dtype)

    top_ps = args.top_p or [None]
    results: dict[tuple[float | None, int], list[float]] = {(p, b): [] for p in top_ps for b in batches}
    real: list[float] = []
    for _ in range(args.rounds):
        for b in batches:
            steps = args.steps or max(4, 30 // max(1, b // 4))
            for top_p in top_ps:  # alternated within a round, so load drifts hit every setting alike
                results[top_p, b].append(time_world_model(model, b, steps, args.decoding, top_p))
        if model.spec.domain == "crafter":
            real.append(time_real_crafter(300))

    machine = f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}"
    for top_p in top_ps:
        env = WorldModelVectorEnv(1, model=model, scenes=scenes_for(model), decoding=args.decoding, top_p=top_p)
        sampling = env.sampling  # what the timed envs ran with (the model's defaults filled in)
        env.close()
        print(f"\n{args.model} ({model.spec.name}), {args.device} {args.dtype}, {sampling}; {machine}\n")
        print("| envs | frames/s (median of rounds) | per env | ratio to 1 env | ratio to the first setting |")
        print("|---:|---:|---:|---:|---:|")
        base = statistics.median(results[top_p, batches[0]]) / batches[0]
        for b in batches:
            fps = statistics.median(results[top_p, b])
            print(f"| {b} | {fps:.1f} | {fps / b:.1f} | {fps / base:.1f}x | "
                  f"{fps / statistics.median(results[top_ps[0], b]):.2f}x |")
    if real:
        print(f"| real Crafter (1 env) | {statistics.median(real):.1f} | | |")


if __name__ == "__main__":
    main()
