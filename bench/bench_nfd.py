"""NFD environment throughput: frames per second of ``RLIR-NFD``-style envs (``WorldModelVectorEnv`` over an
``NFD``) at batch 1 / 4 / 16, random weights.

Per batch size, in the same process, on the same model, interleaved rounds (best of ``--repeat``; the machine's load
drifts between rounds):

* **env step**: ``WorldModelVectorEnv.step`` (denoising with the KV-cached transformer + decoding to uint8 RGB);
* **latents, KV cache**: ``NFD.step_latents`` alone (the transformer's share);
* **latents, no cache** (baseline): every denoising call runs the plain transformer over the slot's whole window
  (context frames recomputed at every step, as a model without a clean-context cache must); the ratio in the table is
  cached / uncached.

Every run starts from a 1-frame context and generates ``--frames`` frames, so windows fill and slide on the way
(``context_frames`` of the config). Sampling: ``--sampler`` / ``--steps`` (default Euler 10, RLIR's training rollouts;
RLIR evaluates with ``--sampler dpmpp2m --steps 18``).

    .venv/bin/python bench/bench_nfd.py                                  # nfd-tiny and nfd-crafter-small, CPU fp32
    .venv/bin/python bench/bench_nfd.py --preset nfd-crafter-small --batch 1 --batch 16 --threads 2
    python bench/bench_nfd.py --device cuda --preset nfd-310m --dtype bfloat16   # RLIR's 310M architecture, GPU

Prints markdown rows (for docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from worldmodels.nfd import (
    CRAFTER_AE_CONFIG,
    MINECRAFT_AE_CONFIG,
    NFD,
    TINY_AE_CONFIG,
    NFDSampling,
    get_preset,
    time_grid,
)

AE_CONFIGS = {"nfd-tiny": TINY_AE_CONFIG, "nfd-crafter-small": CRAFTER_AE_CONFIG, "nfd-310m": MINECRAFT_AE_CONFIG,
              "nfd-774m": MINECRAFT_AE_CONFIG}  # fmt: skip


def build_model(preset: str, device: str, dtype: torch.dtype, sampling: NFDSampling, seed: int = 0) -> NFD:
    """``preset`` with random weights (the adaLN-Zero maps and the output layer too, so no layer is an identity)."""
    torch.manual_seed(seed)
    model = NFD.from_config(get_preset(preset), AE_CONFIGS[preset], device=device, sampling=sampling)
    with torch.no_grad():
        for name, p in model.transformer.named_parameters():
            if "adaLN" in name or name.startswith("final_proj"):
                p.normal_(0.0, 0.02)
    return model.to(dtype=dtype).eval()


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def uncached_latents(model: NFD, context: torch.Tensor, actions: torch.Tensor, sampling: NFDSampling) -> None:
    """The no-cache baseline: Euler/DPM updates with the transformer run over each slot's whole window at every
    denoising call (the window slides like the model's)."""
    from worldmodels.nfd import FlowSolver

    config, tr = model.config, model.transformer
    tc, b = config.context_noise, context.shape[0]
    dtype = tr.patch_embed.weight.dtype
    window = [model.encode(context[:, 0]).to(dtype)]
    acts = [torch.zeros(b, *actions.shape[2:], dtype=torch.long, device=context.device)]
    present = [False]
    for k in range(actions.shape[1]):
        if len(window) + 1 > config.context_frames:
            keep = model.reference_frames
            window, acts, present = window[-keep:], acts[-keep:], [False] + present[-keep + 1 :]
        x = torch.randn(window[0].shape, device=context.device)
        solver = FlowSolver(sampling)
        for i, t in enumerate(time_grid(sampling.steps, sampling.shift)[:-1]):
            z = torch.stack([*window, x.to(dtype)], 1)
            times = torch.tensor([tc] * len(window) + [t], device=context.device).expand(b, -1)
            a = torch.stack([*acts, actions[:, k]], 1)
            p = torch.tensor([*present, True], device=context.device).expand(b, -1)
            x = solver.step(i, x, tr(z, times, a, p)[:, -1].float())
        window.append(((1 - tc) * x + tc * torch.randn_like(x)).to(dtype))
        acts.append(actions[:, k])
        present.append(True)


def run_env(env, actions: np.ndarray, seed: int) -> None:
    env.reset(seed=seed)
    for k in range(actions.shape[1]):
        env.step(actions[:, k])


def cached_latents(model: NFD, context: torch.Tensor, actions: torch.Tensor, seed: int) -> None:
    generators = [torch.Generator(device=context.device).manual_seed(seed + i) for i in range(context.shape[0])]
    state = model.start(context, None, generators)
    for k in range(actions.shape[1]):
        model.step_latents(state, actions[:, k])


def timed(fn, device: str) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def bench_preset(preset: str, args: argparse.Namespace, dtype: torch.dtype) -> None:
    from rlir_env.scenes import Scene
    from rlir_env.vector import WorldModelVectorEnv

    sampling = NFDSampling(args.sampler, args.steps)
    model = build_model(preset, args.device, dtype, sampling)
    config = model.config
    params = sum(p.numel() for p in model.transformer.parameters()) / 1e6
    ae_params = sum(p.numel() for p in model.autoencoder.parameters()) / 1e6
    h, w = config.frame_size
    print(f"\n**{preset}**: {params:.2f}M transformer + {ae_params:.2f}M autoencoder parameters, {h}x{w} frames, "
          f"{config.tokens_per_frame} tokens/frame, context {config.context_frames} frames; {args.sampler} "
          f"{args.steps} steps; {args.frames} frames per run from a 1-frame context; best of {args.repeat}\n")
    print("| batch | env step frames/s | latents (KV cache) frames/s | latents (no cache) frames/s | "
          "cache speed-up | env ms/frame-step |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    domain = config.domain
    nvec = np.atleast_1d(getattr(domain.compact_space, "nvec", getattr(domain.compact_space, "n", None)))
    for batch in args.batch:
        scenes = [Scene(frames=rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8),
                        actions=np.zeros((0, *domain.compact_shape), dtype=np.int64)) for _ in range(batch)]  # fmt: skip
        actions = (rng.random((batch, args.frames, *domain.compact_shape)) * nvec).astype(np.int64)
        env = WorldModelVectorEnv(batch, model=model, scenes=scenes, device=args.device)
        context = torch.as_tensor(np.stack([s.frames for s in scenes]), device=args.device)
        acts = torch.as_tensor(actions, device=args.device)
        run_env(env, actions[:, :1], 0)  # warm-up (kernels, allocator)
        best = {"env": float("inf"), "cached": float("inf"), "uncached": float("inf")}
        for _ in range(args.repeat):
            best["env"] = min(best["env"], timed(lambda: run_env(env, actions, 1), args.device))
            best["cached"] = min(best["cached"], timed(lambda: cached_latents(model, context, acts, 1), args.device))
            if not args.no_baseline:
                best["uncached"] = min(best["uncached"], timed(lambda: uncached_latents(model, context, acts,
                                                                                        sampling), args.device))
        env.close()
        frames = batch * args.frames
        uncached = "-" if args.no_baseline else f"{frames / best['uncached']:.1f}"
        ratio = "-" if args.no_baseline else f"{best['uncached'] / best['cached']:.2f}x"
        print(f"| {batch} | {frames / best['env']:.1f} | {frames / best['cached']:.1f} | {uncached} | {ratio} | "
              f"{1000 * best['env'] / args.frames:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", action="append", default=None,
                        help="nfd-tiny, nfd-crafter-small, nfd-310m, nfd-774m (repeatable; default: the first two "
                             "on CPU, nfd-310m on CUDA)")  # fmt: skip
    parser.add_argument("--batch", type=int, action="append", default=None, help="env batch sizes (default 1 4 16)")
    parser.add_argument("--frames", type=int, default=8, help="frames generated per run")
    parser.add_argument("--sampler", default="euler", choices=("euler", "dpmpp2m"))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--no-baseline", action="store_true", help="skip the (slow) uncached baseline")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available on this machine")
    if args.dtype != "float32" and args.device == "cpu":
        raise SystemExit("fp32 only on the CPU (bf16 is ~25x slower there)")
    torch.set_num_threads(args.threads)
    args.batch = args.batch or [1, 4, 16]
    presets = args.preset or (["nfd-310m"] if args.device.startswith("cuda") else ["nfd-tiny", "nfd-crafter-small"])
    dtype = getattr(torch, args.dtype)

    from worldmodels.training.common import machine_info

    info = machine_info()
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{info['cpu']}, {args.threads} threads"
    print(f"{where}, torch {info['torch']}, {args.dtype}")
    for preset in presets:
        bench_preset(preset, args, dtype)


if __name__ == "__main__":
    main()
