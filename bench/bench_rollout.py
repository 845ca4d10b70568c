"""GRPO rollout benchmark for MineWorld-architecture models, and one post-training iteration by phase.

Rollouts of ``P`` prompts x ``G`` members, ``F`` frames each (one context frame, Crafter's 8-frame context so long
rollouts slide), four ways in the same process on the same model and seeds:

* **shared prefix** (ours): prefill each context once, copy its KV cache to the group's ``G`` slots, feed each
  action as a small chunk of forced tokens into the existing cache;
* **prefill per slot**: the same, but every slot prefills its own copy of the context;
* **re-prefill per frame** (public RLVR code: RLVR-World's interactive rollout calls ``generate`` again over the
  whole prefix for every frame, without prefix caching): before every frame, every slot's cache is rebuilt from
  its whole sequence so far, then the frame is decoded;
* **shared prefix, compiled**: the first way with ``MineWorld(compile=True)`` (the compiled static decode step;
  compiled before timing).

All four, and speculative decoding (timed too), draw the same tokens up to float rounding (the share of equal tokens
is printed). Then ``--iterations`` post-training iterations on a synthetic Crafter
suite with an (untrained) Crafter IDM reward report the time of each phase.

    .venv/bin/python bench/bench_rollout.py --model medium --prompts 4 --group 8 --frames 15 --threads 2

Prints markdown rows (for docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from posttrain.data import prompts_from_suite
from posttrain.grpo.rollout import rollout
from worldmodels.mineworld import SamplingConfig


def build_model(name: str, seed: int = 0, *, compile: bool = False):
    from worldmodels.mineworld import TINY_VQ_CONFIG, MineWorld, get_preset
    from worldmodels.training.tokenizer import CRAFTER_VQ_CONFIG
    from worldmodels.training.worldmodel import AR_CANDIDATES

    torch.manual_seed(seed)
    if name == "tiny":
        return MineWorld.from_config(get_preset("tiny"), TINY_VQ_CONFIG, compile=compile).eval()
    return MineWorld.from_config(AR_CANDIDATES[name], CRAFTER_VQ_CONFIG, compile=compile).eval()


def synthetic_suite(model, n_items: int, n_frames: int, seed: int = 0):
    """Random frames and actions at the model's size (timing only; the content does not matter)."""
    from evaluation.suites import SuiteItem, make_suite

    rng = np.random.default_rng(seed)
    h, w = model.spec.frame_size
    domain = model.config.domain
    items = []
    for i in range(n_items):
        if domain.name == "crafter":
            actions = rng.integers(0, 17, n_frames)
            context_actions = np.zeros((0,), dtype=np.int64)
        else:
            actions = np.stack([domain.noop() for _ in range(n_frames)])
            context_actions = np.zeros((0, *domain.compact_shape), dtype=np.int64)
        items.append(SuiteItem(
            id=f"b{i}", context_frames=rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8),
            context_actions=context_actions, actions=actions,
            ground_truth=rng.integers(0, 256, (n_frames, h, w, 3), dtype=np.uint8),
        ))  # fmt: skip
    return make_suite("bench", 1, domain.name, items)


def reprefill_rollout(model, prompts, group: int, sampling: SamplingConfig, seed: int):
    """RLVR-style: rebuild every slot's cache from its whole sequence before each frame."""
    from posttrain.data import member_generator

    n, rows = len(prompts), len(prompts) * group
    gens = [member_generator(seed, 0, int(k), g) for k in prompts.keys for g in range(group)]
    frame_ids = model.frame_tokens(torch.as_tensor(prompts.context_frames))
    state = model.start_group_tokens(frame_ids, prompts.context_actions, gens, group_size=group, sampling=sampling,
                                     share_prefix=False)  # fmt: skip
    tokens = []
    with torch.no_grad():
        for k in range(prompts.n_frames):
            model._prefill(state, list(range(rows)))  # the whole prefix again, for every slot
            ids, _ = model.step_tokens(state, np.repeat(prompts.actions[:, k], group, axis=0), return_logprobs=True)
            tokens.append(ids.reshape(rows, -1))
    return torch.stack(tokens, 1).reshape(n, group, prompts.n_frames, -1)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="medium", choices=("tiny", "small", "medium", "wide"))
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--frames", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=2, help="post-training iterations to time (0: skip)")
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2, help="interleaved repetitions of each rollout method")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from worldmodels.training.common import machine_info

    model = build_model(args.model)
    params = sum(p.numel() for p in model.transformer.parameters())
    suite = synthetic_suite(model, max(args.prompts, 4), args.frames)
    prompts = prompts_from_suite(suite, range(args.prompts))
    sampling = SamplingConfig(temperature=1.0)
    info = machine_info()
    print(f"\n{info['cpu']}, {args.threads} torch threads, torch {info['torch']}, fp32; {args.model} "
          f"({params / 1e6:.2f}M transformer parameters, {model.config.tokens_per_frame} tokens/frame, context "
          f"{model.config.context_frames} frames); {args.prompts} prompts x {args.group} rollouts x {args.frames} "
          "frames\n")  # fmt: skip

    rollout(model, prompts_from_suite(suite, [0], 2), group_size=2, sampling=sampling, seed=0, iteration=0)  # warm-up
    compiled = build_model(args.model, compile=True)  # the same weights (same seed), compiled decode steps
    rollout(compiled, prompts, group_size=args.group, sampling=sampling, seed=0, iteration=0)  # compiles
    speculative = SamplingConfig(temperature=1.0, decoding="speculative")
    methods = {
        "shared prefix (prefill once, copy KV to G slots)":
            lambda: rollout(model, prompts, group_size=args.group, sampling=sampling, seed=0, iteration=0).tokens,
        "prefill per slot":
            lambda: rollout(model, prompts, group_size=args.group, sampling=sampling, seed=0, iteration=0,
                            share_prefix=False).tokens,
        "re-prefill whole prefix per frame (RLVR-style)":
            lambda: reprefill_rollout(model, prompts, args.group, sampling, 0),
        "shared prefix, compiled decode step (MineWorld(compile=True))":
            lambda: rollout(compiled, prompts, group_size=args.group, sampling=sampling, seed=0, iteration=0).tokens,
        "shared prefix + speculative decoding (same tokens)":
            lambda: rollout(model, prompts, group_size=args.group, sampling=speculative, seed=0, iteration=0).tokens,
    }  # fmt: skip
    best = {name: float("inf") for name in methods}
    tokens = {}
    for _ in range(args.repeat):  # interleaved, best of `repeat`: the machine's load drifts between runs
        for name, run in methods.items():
            tokens[name], seconds = timed(run)
            best[name] = min(best[name], seconds)
    reference = tokens["shared prefix (prefill once, copy KV to G slots)"]
    frames = args.prompts * args.group * args.frames
    baseline = best["re-prefill whole prefix per frame (RLVR-style)"]
    print(f"| rollout (best of {args.repeat}) | seconds | frames/s | speed-up vs re-prefill per frame | tokens equal "
          "to the first way |")  # fmt: skip
    print("|---|---|---|---|---|")
    for name, t in best.items():
        # other kernels round the logits differently; with random weights the distributions are flat, so a uniform
        # can land within that rounding of a CDF step and the rollout continues from another token
        equal = (tokens[name] == reference).float().mean().item()
        print(f"| {name} | {t:.2f} | {frames / t:.1f} | {baseline / t:.2f}x | {equal:.1%} |")

    if args.iterations < 1:
        return
    from posttrain.config import load_config
    from posttrain.rewards import PixelReward
    from posttrain.loop import train

    # the pixel reward varies between rollouts even for random weights (an untrained IDM reads the same action from
    # every video, so every group would be flat and skipped); the IDM's own cost is timed below
    reward = PixelReward()
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(None, [
            f"out={tmp}/run", f"iterations={args.iterations}", f"rollout.group_size={args.group}",
            f"rollout.prompts_per_iter={args.prompts}", f"algo.micro_batch={args.micro_batch}",
            "logging.progress=false", "logging.report_to=none", f"checkpoint.every={args.iterations}",
        ], validate=False)  # fmt: skip
        train(config, model=model, suite=suite, reward_fn=reward)
        import json

        rows = [json.loads(line) for line in (Path(tmp) / "run" / "log.jsonl").read_text().splitlines()]
    last = rows[-1]
    total = last["time_iteration_s"]
    shape = f"{args.prompts}x{args.group} rollouts of {args.frames} frames"
    print(f"\n| phase (iteration {last['step']}, {shape}) | seconds | share |")
    print("|---|---|---|")
    for key in ("rollout", "reward", "old_logp", "update"):
        t = last[f"time_{key}_s"]
        print(f"| {key} | {t:.2f} | {t / total:.0%} |")
    print(f"| iteration | {total:.2f} | 100% |")
    print(f"\nrollout {last['rollout_tokens_per_s']:.0f} tokens/s, replay {last['replay_tokens_per_s']:.0f} tokens/s, "
          f"peak memory {last['peak_memory_mib']:.0f} MiB, reward {last['reward']} ({last['samples_trained']} rollouts "
          "trained)")  # fmt: skip
    if model.config.domain.name == "crafter":
        from evaluation.idm.crafter import CrafterIDM
        from evaluation.metrics.taxonomy import get_taxonomy
        from posttrain.rewards import IDMReward, compute_rewards

        torch.manual_seed(0)
        idm_reward = IDMReward(CrafterIDM(), get_taxonomy("crafter"))
        n = args.prompts * args.group
        videos = np.repeat(suite.arrays["context_frames"][:1], args.frames + 1, axis=1).repeat(n, axis=0)
        actions = np.zeros((n, args.frames), dtype=np.int64)
        _, seconds = timed(lambda: compute_rewards(idm_reward, videos, actions))
        print(f"Crafter IDM reward ({sum(p.numel() for p in idm_reward.idm.parameters()) / 1e6:.2f}M parameters) on "
              f"the same {n} videos of {args.frames + 1} frames: {seconds:.2f} s")


if __name__ == "__main__":
    main()
