"""Frame decoding speed of a Crafter-sized MineWorld model: naive vs diagonal vs speculative (copy draft).

Speculative decoding only pays off when drafts are kept, and random weights keep none (the worst case, also
measured). A realistic stream needs a model that mostly copies the previous frame: a weight-constructed copy model
(tests/test_mineworld_speculative.py: one head attends one frame back; ``--strength`` sets how sure it is) and, when
a trained Crafter checkpoint exists (``runs/worldmodel/*.safetensors`` or ``--checkpoint``), that model rolled out
from real frames and actions of ``runs/data/crafter-train``. The "data oracle" rows give the forwards per frame a
model certain of the true next frame would need on real Crafter footage (8x8 patches stand in for VQ tokens).

Naive and diagonal costs do not depend on the weights, so they are timed once per (threads, batch); every ratio
is to naive decoding timed in the same process, rounds alternated so load from other processes hits all alike.
"CPU ms" is this process's CPU time (less sensitive to a shared machine; with 2 threads it counts both).
Prints markdown rows for docs/benchmarks.md.

    .venv/bin/python bench/bench_decoding.py                      # 1 and 2 threads, batch 1 and 16
    .venv/bin/python bench/bench_decoding.py --threads 1 --batch 1 --draft-len 4 --draft-len 8 --draft-len 16
"""

from __future__ import annotations

import argparse
import glob
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from worldmodels.mineworld import TINY_VQ_CONFIG, MineWorld, SamplingConfig
from worldmodels.mineworld.decoding import DecodeStats, FrameDecoder
from worldmodels.mineworld.sampling import DEFAULT_DRAFT_LEN
from worldmodels.training.worldmodel import AR_SIZES, crafter_ar_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_mineworld_speculative import make_copy_biased  # noqa: E402


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class Workload:
    """``batch`` slots started from token contexts, stepped with fixed actions; reports ms/frame and stats."""

    def __init__(self, model: MineWorld, context: torch.Tensor, context_actions, actions: np.ndarray):
        self.model, self.context, self.context_actions, self.actions = model, context, context_actions, actions

    def run(self, sampling: SamplingConfig, frames: int, adaptive: bool = True) -> tuple[float, float, float, float]:
        """``(wall ms, process CPU ms, forwards, acceptance)`` per frame over ``frames`` timed frames."""
        model, b = self.model, self.context.shape[0]
        model._decoder(sampling).adaptive_width = adaptive
        generators = [torch.Generator().manual_seed(i) for i in range(b)]
        state = model._start_from_ids(self.context, self.context_actions, generators, sampling, None)
        tokens = [model.action_tokens(self.actions[:, k], (b,)) for k in range(frames + 1)]
        model._step_ids(state, tokens[0], False)  # warm-up frame, not counted
        state.decode_stats = DecodeStats()
        start, cpu_start = time.perf_counter(), time.process_time()
        for k in range(1, frames + 1):
            model._step_ids(state, tokens[k], False)
        ms = (time.perf_counter() - start) / frames * 1e3
        cpu_ms = (time.process_time() - cpu_start) / frames * 1e3
        return ms, cpu_ms, state.decode_stats.forwards_per_frame, state.decode_stats.acceptance_rate


def random_workload(model: MineWorld, batch: int, steps: int, seed: int = 0) -> Workload:
    """Random one-frame contexts and random actions (``steps`` of them)."""
    g = torch.Generator().manual_seed(seed)
    context = torch.randint(0, model.config.image_vocab_size, (batch, 1, model.config.tokens_per_frame), generator=g)
    actions = np.random.default_rng(seed).integers(0, 17, (batch, steps))
    return Workload(model, context, None, actions)


def real_workload(model: MineWorld, data: Path, batch: int, steps: int, seed: int = 0) -> Workload:
    """Contexts of two real consecutive frames (and the action between), then the ``steps`` recorded actions."""
    from worldmodels.data.shards import ShardDataset

    frames, actions = ShardDataset(data).sample_windows(batch, steps + 1, np.random.default_rng(seed))
    pixels = torch.as_tensor(frames[:, :2]).flatten(0, 1)
    ids = model.tokenize(pixels).reshape(batch, 2, -1)
    return Workload(model, ids, actions[:, :1], actions[:, 1:])


def timed(workloads: dict[tuple, tuple], frames: int, rounds: int) -> dict[tuple, tuple]:
    """Median wall and CPU ms/frame over ``rounds`` alternated rounds; forwards/frame and acceptance of the last."""
    times: dict[tuple, list[tuple[float, float]]] = {k: [] for k in workloads}
    last = {}
    for _ in range(rounds):
        for key, (work, sampling, adaptive) in workloads.items():
            ms, cpu_ms, forwards, acceptance = work.run(sampling, frames, adaptive)
            times[key].append((ms, cpu_ms))
            last[key] = (forwards, acceptance)
    return {k: (statistics.median(t[0] for t in times[k]), statistics.median(t[1] for t in times[k]), *last[k])
            for k in workloads}  # fmt: skip


def data_oracle(data: Path, tolerance: float, episodes: int = 12) -> np.ndarray:
    """``bool[transitions, 81]``: whether each 8x8 patch of real Crafter frames stayed put (mean absolute difference
    to the previous frame <= ``tolerance``): where a model certain of the true next frame keeps its draft."""
    from worldmodels.data.shards import ShardDataset

    dataset = ShardDataset(data)
    same = []
    for i in range(min(dataset.n_episodes, episodes)):
        f = dataset.episode(i).frames.astype(np.int16)
        patches = f.reshape(len(f), 9, 8, 9, 8, 3).transpose(0, 1, 3, 2, 4, 5).reshape(len(f), 81, -1)
        same.append(np.abs(patches[1:] - patches[:-1]).mean(-1) <= tolerance)
    return np.concatenate(same)


def oracle_forwards(decoder: FrameDecoder, keep: np.ndarray, batch: int, adaptive: bool) -> tuple[float, float, float]:
    """The speculative decoder's schedule (``FrameDecoder._decode_speculative``, with ``decoder``'s width policy)
    when the drafts kept are exactly ``keep [frames, 81]`` and ``batch`` frames are decoded together.

    Returns forwards per frame, the mean forward width, and the estimated speed-up over naive decoding under the
    decoder's cost model (a forward of width ``k`` costs ``1 + width_cost * (k - 1)`` naive forwards).
    """
    n, k_max = keep.shape[1], decoder.config.draft_len
    cost = decoder.width_cost(batch)
    forwards, widths, costs = [], [], []
    for first in range(0, len(keep) - batch + 1, batch):
        frames = keep[first : first + batch]
        done = np.zeros(batch, dtype=np.int64)
        acceptance = np.full(batch, 0.5)
        k, steps, spent = k_max, 0, 0.0
        while True:
            steps += 1
            spent += 1 + cost * (k - 1)
            widths.append(k)
            tested, ones = np.zeros(batch, dtype=np.int64), np.zeros(batch, dtype=np.int64)
            for b in np.nonzero(done < n)[0]:
                valid = min(k, n - done[b])
                kept = 0
                while kept < valid and frames[b, done[b] + kept]:
                    kept += 1
                tested[b], ones[b] = min(kept + 1, valid), kept
                done[b] += tested[b]
            remaining = n - done
            if remaining.max() <= 0:
                break
            k = int(min(k_max, remaining.max()))
            if adaptive and batch > 1:  # as the decoder: one slot always feeds draft_len
                r = decoder.acceptance_memory
                acceptance = r**tested * acceptance + r ** (tested - ones) * (1 - r**ones)
                k = min(k, decoder._choose_width(acceptance, remaining, k_max))
        forwards.append(steps)
        costs.append(spent)
    return float(np.mean(forwards)), float(np.mean(widths)), n / float(np.mean(costs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(AR_SIZES), default="small", help="Crafter transformer size")
    parser.add_argument("--codes", type=int, default=None, help="VQ codebook size (default: crafter_ar_config's)")
    parser.add_argument("--context", type=int, default=8, help="frame-action pairs of context")
    parser.add_argument("--batch", type=int, action="append", help="environment slots (default: 1 and 16)")
    parser.add_argument("--threads", type=int, action="append", help="torch threads (default: 1 and 2)")
    parser.add_argument("--draft-len", type=int, action="append", help=f"default: {DEFAULT_DRAFT_LEN}")
    parser.add_argument("--strength", type=float, action="append", help="copy model logit margin (default 12, 8)")
    parser.add_argument("--window", type=int, default=2, help="diagonal decoding window")
    parser.add_argument("--fixed-width", action="store_true", help="also time speculative without adaptive width")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling (default: plain sampling)")
    parser.add_argument("--frames", type=int, default=None, help="timed frames per run (default: 8 / batch 16: 3)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=ROOT / "runs/data/crafter-train")
    parser.add_argument("--checkpoint", type=Path, default=None, help="a trained Crafter MineWorld .safetensors")
    args = parser.parse_args()

    torch.manual_seed(0)
    codebook = {} if args.codes is None else {"codebook": args.codes}
    config = crafter_ar_config(**AR_SIZES[args.size], **codebook, context_frames=args.context)
    vq = TINY_VQ_CONFIG | {"num_vq_embeddings": config.image_vocab_size}
    models = {"random weights": MineWorld.from_config(config, vq).eval()}
    for strength in args.strength or [12.0, 8.0]:
        model = MineWorld.from_config(config, vq).eval()
        make_copy_biased(model, strength)
        models[f"copy model, margin {strength:g}"] = model
    checkpoint = args.checkpoint
    if checkpoint is None:
        found = sorted(glob.glob(str(ROOT / "runs/worldmodel/*.safetensors")))
        checkpoint = Path(found[-1]) if found else None
    trained = MineWorld.from_checkpoint(checkpoint).eval() if checkpoint is not None else None
    draft_lens = args.draft_len or [DEFAULT_DRAFT_LEN]
    sampling = dict(top_p=args.top_p)

    print(f"MineWorld frame decoding, Crafter {args.size} (hidden {config.hidden_size}, {config.num_hidden_layers} "
          f"layers, 9x9 grid, {config.image_vocab_size} codes, 3 action tokens, {args.context} frames of context), "
          f"fp32, CPU: {_cpu()}; sampling: "
          f"{'top-p ' + str(args.top_p) if args.top_p else 'temperature 1'}")  # fmt: skip
    if trained is None:
        print("(no trained Crafter checkpoint found under runs/worldmodel/: real-frame rows skipped)")
    print()
    print("| threads | batch | model | decoding | ms/step | CPU ms/step | frames/s per env | frames/s | forwards/frame "
          "| drafts kept | ratio to naive | CPU ratio |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for threads in args.threads or [1, 2]:
        torch.set_num_threads(threads)
        for batch in args.batch or [1, 16]:
            frames = args.frames or (3 if batch > 4 else 8)
            base = random_workload(models["random weights"], batch, frames + 1)  # + the warm-up frame
            spec = [(f"speculative k{k}", SamplingConfig(decoding="speculative", draft_len=k, **sampling), True)
                    for k in draft_lens]  # fmt: skip
            if args.fixed_width:
                spec += [(f"speculative k{k} fixed", SamplingConfig(decoding="speculative", draft_len=k, **sampling),
                          False) for k in draft_lens]  # fmt: skip
            runs = {
                ("random weights", "naive"): (base, SamplingConfig(**sampling), True),
                ("random weights", f"diagonal w{args.window}"): (
                    base, SamplingConfig(decoding="diagonal", window=args.window, **sampling), True),
            }  # fmt: skip
            for name, model in models.items():
                work = random_workload(model, batch, frames + 1)
                for label, config, adaptive in spec:
                    runs[(name, label)] = (work, config, adaptive)
            if trained is not None and args.data.exists():
                name = f"trained ({checkpoint.name}), real frames"
                work = real_workload(trained, args.data, batch, frames + 1)
                runs[(name, "naive")] = (work, SamplingConfig(**sampling), True)
                for label, config, adaptive in spec:
                    runs[(name, label)] = (work, config, adaptive)
            results = timed(runs, frames, args.rounds)
            naive_ms, naive_cpu = results[("random weights", "naive")][:2]
            for (name, decoding), (ms, cpu_ms, forwards, acceptance) in results.items():
                if name.startswith("trained") and decoding == "naive":
                    naive_ms, naive_cpu = ms, cpu_ms  # the trained model's own baseline (another architecture)
                kept = f"{acceptance:.2f}" if decoding.startswith("speculative") else "-"
                print(f"| {threads} | {batch} | {name} | {decoding} | {ms:.1f} | {cpu_ms:.1f} | {1e3 / ms:.1f} | "
                      f"{1e3 * batch / ms:.1f} | {forwards:.1f} | {kept} | {naive_ms / ms:.2f} | "
                      f"{naive_cpu / cpu_ms:.2f} |")  # fmt: skip
            sys.stdout.flush()

    if args.data.exists():
        print()
        print("Data oracle: the decoder's forwards/frame (81 naive) if the model were certain of the true next frame, "
              f"on real Crafter frames ({args.data.name}): a draft is kept iff its 8x8 patch did not change (mean "
              "abs difference <= tolerance; a VQ tokenizer ignores small changes, so tolerance 0 is a lower bound). "
              "The ratio is estimated from the decoder's width cost model, without its per-forward overhead.")
        print("| tolerance | patches unchanged | batch | draft_len | width | forwards/frame | mean forward width "
              "| est. ratio to naive |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|")
        for tolerance in (0.0, 4.0):
            keep = data_oracle(args.data, tolerance)
            for batch in args.batch or [1, 16]:
                for k in sorted({8, 16, *draft_lens}):
                    decoder = FrameDecoder(models["random weights"].transformer, (9, 9), config.image_vocab_size,
                                           SamplingConfig(decoding="speculative", draft_len=k))  # fmt: skip
                    for adaptive in (False, True):
                        forwards, width, ratio = oracle_forwards(decoder, keep, batch, adaptive)
                        print(f"| {tolerance:g} | {keep.mean():.2f} | {batch} | {k} | "
                              f"{'adaptive' if adaptive else 'fixed'} | {forwards:.1f} | {width:.1f} | {ratio:.2f} |")

if __name__ == "__main__":
    main()
