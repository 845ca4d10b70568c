"""World-model training throughput: eager vs ``torch.compile`` (forward + backward) in one process, with the share
of this machine's GEMM peak the step reaches.

Each arm trains a fresh copy of the bundled model's architecture (same seed) on the same random token windows of
the training run's shape (``--batch`` windows of ``max_position_embeddings`` tokens, AdamW, gradient clipping: the
step of ``worldmodels/training/worldmodel.py``), rounds alternated; compilation and the first steps are not timed.
FLOPs per step: 6 x parameters x tokens for the projections plus the causal attention's ``QK^T`` and ``PV``
(x 3 for forward and backward). Prints a markdown row for docs/benchmarks.md.

    .venv/bin/python bench/bench_training.py --threads 2
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time

import torch

from bench_speed import gemm_peak  # run as a script: bench/ is on sys.path
from worldmodels.mineworld.transformer import Transformer
from worldmodels.training.common import make_adamw
from worldmodels.training.worldmodel import CRAFTER_AR_CONFIG, image_token_loss


def step_flops(transformer: Transformer, batch: int, seq: int) -> float:
    c = transformer.config
    params = sum(p.numel() for n, p in transformer.named_parameters() if "embed_tokens" not in n)
    attention = 2 * 2 * c.num_hidden_layers * c.hidden_size * seq * seq / 2  # causal: half of the square
    return 3 * batch * (2 * params * seq + attention)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8, help="windows per step (default: the bundled run's 8)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = CRAFTER_AR_CONFIG
    torch.manual_seed(0)
    base = Transformer(config).train()
    seq = config.max_position_embeddings
    ids = torch.randint(0, config.vocab_size, (args.batch, seq), generator=torch.Generator().manual_seed(1))
    arms = {}
    for name, loss_fn in (("eager", image_token_loss), ("compiled", torch.compile(image_token_loss))):
        transformer = copy.deepcopy(base)
        arms[name] = (transformer, make_adamw(transformer.named_parameters(), lr=1e-3, weight_decay=0.1), loss_fn)

    def train(name: str, steps: int) -> float:
        transformer, optimizer, loss_fn = arms[name]
        start = time.perf_counter()
        for _ in range(steps):
            loss = loss_fn(transformer, ids, config.image_vocab_size)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
            optimizer.step()
            loss.item()
        return args.batch * seq * steps / (time.perf_counter() - start)

    start = time.perf_counter()
    train("compiled", 2)
    compile_seconds = time.perf_counter() - start
    train("eager", 1)
    results: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(args.rounds):
        for name in results:
            results[name].append(train(name, args.steps))
    peak = gemm_peak()
    flops_per_token = step_flops(base, args.batch, seq) / (args.batch * seq)
    eager, compiled = statistics.median(results["eager"]), statistics.median(results["compiled"])
    print(f"\n{config.name} architecture, batch {args.batch} x {seq} tokens; {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, fp32, torch {torch.__version__}; GEMM peak {peak:.1f} GFLOP/s\n")  # fmt: skip
    print("| arm | tokens/s | ratio | GFLOP/s (share of peak) | compile s |")
    print("|---|---:|---:|---:|---:|")
    for name, value in (("eager", eager), ("compiled", compiled)):
        gflops = value * flops_per_token / 1e9
        seconds = f"{compile_seconds:.0f}" if name == "compiled" else ""
        print(f"| {name} | {value:,.0f} | {value / eager:.2f}x | {gflops:.1f} ({gflops / peak:.0%}) | {seconds} |")


if __name__ == "__main__":
    main()
