"""Reconstruction quality of a VQ tokenizer on held-out Crafter frames, by daylight: PSNR and token stability.

Frames are grouped by what Crafter drew them with (the ``daylight`` and ``sleeping`` arrays the recorder stores):

* ``day``: awake, daylight >= 0.5 (Crafter's frame is deterministic: no night noise is drawn above 0.5);
* ``night``: awake, daylight < 0.5 (Crafter adds random noise that no code can reproduce);
* ``asleep``: the sleeping player's grey, tinted view (any daylight).

For every group: mean PSNR (``10 log10(255^2 / MSE)`` per frame, MSE floored at 1e-10) with a 95% bootstrap interval
over episodes, mean absolute error, the share of 8x8 cells whose every pixel is within 2 levels (``cells_exact``),
and the share of tokens (and whole frames) that survive ``tokenize(detokenize(tokenize(x))) == tokenize(x)``,
through the real inference path (:class:`~worldmodels.mineworld.vq.VQTokenizer`, uint8 truncation). Also the codes
used and the perplexity of the code histogram over all evaluated frames, and per group the codes its frames use and
how many of them no other group's frames use (codes spent on night noise are lost to the day's textures).

The tokenizer is a file from ``rlir train tokenizer`` or a training checkpoint (``<out>.run/checkpoint.safetensors``,
scored as it stands). The frames come from ``--data`` (every episode: pass a recording the tokenizer never trained
on), or from the held-out episodes of a training recording (``--heldout-of-training``: the split
``train_tokenizer`` made with ``--val-fraction`` and ``--seed``).

    python bench/tokenizer_quality.py runs/tok/A.safetensors --data runs/pred/dec50 --frames 2000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation.metrics.stats import cluster_bootstrap_mean  # noqa: E402
from worldmodels.data.shards import ShardDataset  # noqa: E402
from worldmodels.errors import CheckpointError, DataError  # noqa: E402
from worldmodels.mineworld.vq import VQTokenizer  # noqa: E402
from worldmodels.training.common import split_episodes  # noqa: E402
from worldmodels.training.tokenizer import (  # noqa: E402
    load_tokenizer,
    score_tokenizer_frames,
    summarize_tokenizer_scores,
)

DAY_THRESHOLD = 0.5
GROUPS = ("day", "night", "asleep")
_SPLIT_STREAM = 4  # train_tokenizer's episode split stream (first data directory)


def load_any(path: str) -> tuple[VQTokenizer, dict]:
    """A tokenizer from a ``save_tokenizer`` file or a training checkpoint; returns it with a description."""
    from safetensors import safe_open

    with safe_open(path, framework="pt", device="cpu") as f:
        meta = dict(f.metadata() or {})
        if meta.get("kind") == "rlir.training-checkpoint":
            run_config = json.loads(meta["run_config"])
            if run_config.get("task") != "tokenizer":
                raise CheckpointError(f"{path} is a {run_config.get('task')!r} checkpoint, not a tokenizer's")
            tokenizer = VQTokenizer(run_config["vq_config"], tuple(run_config["frame_size"]), chunk=16)
            state = {k[len("model."):]: f.get_tensor(k) for k in f.keys() if k.startswith("model.")}
            tokenizer.model.load_state_dict(state, strict=True)
            return tokenizer.eval(), {"checkpoint": path, "step": json.loads(meta["step"])}
    return load_tokenizer(path, chunk=16), {"file": path}


def pick_frames(data: str, n_frames: int, seed: int, heldout_of_training: bool, val_fraction: float,
                split_seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """``(frames, group index, episode id)`` of ``n_frames`` frames drawn without replacement."""
    dataset = ShardDataset(data, max_cached_shards=1)
    episodes = np.arange(dataset.n_episodes)
    if heldout_of_training:
        _, episodes = split_episodes(dataset.n_episodes, val_fraction, split_seed, _SPLIT_STREAM)
    lengths = np.asarray(dataset.episode_lengths)[episodes]
    total = int(lengths.sum())
    chosen = np.sort(np.random.default_rng(seed).choice(total, min(n_frames, total), replace=False))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    owner = np.searchsorted(offsets, chosen, side="right") - 1
    frames, groups, owners = [], [], []
    for k in np.unique(owner):
        ep = dataset.episode(int(episodes[k]))
        if "daylight" not in ep.extras:
            raise DataError(
                f"{data} has no 'daylight' array (recorded before it was stored); re-record it with "
                "`rlir record crafter` to split day from night"
            )
        rows = chosen[owner == k] - offsets[k]
        daylight, sleeping = ep.extras["daylight"][rows], ep.extras["sleeping"][rows]
        frames.append(ep.frames[rows])
        groups.append(np.where(sleeping, 2, np.where(daylight >= DAY_THRESHOLD, 0, 1)))
        owners.append(np.full(len(rows), int(episodes[k])))
    return np.concatenate(frames), np.concatenate(groups), np.concatenate(owners), episodes


def score(tokenizer: VQTokenizer, frames: np.ndarray) -> dict[str, Any]:
    """Per-frame scores (``float64`` arrays, ``stable_frame`` per frame), ``ids`` and the codes' use."""
    scores = score_tokenizer_frames(tokenizer, frames)
    result = {k: scores[k].double().numpy() for k in ("psnr", "mae", "cells_exact", "stable_tokens")}
    result["stable_frame"] = scores["stable_frames"].double().numpy()
    result["ids"] = scores["ids"].numpy()
    summary = summarize_tokenizer_scores(scores)
    result["used_codes"], result["perplexity"] = summary["used_codes"], summary["perplexity"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tokenizer", help="tokenizer .safetensors or a training checkpoint")
    parser.add_argument("--data", required=True, help="recording (rlir record crafter, with daylight)")
    parser.add_argument("--heldout-of-training", action="store_true",
                        help="only the episodes train_tokenizer held out of --data (--val-fraction, --split-seed)")
    parser.add_argument("--val-fraction", type=float, default=0.05)
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=2000, help="frames drawn (without replacement)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="also write the result here (JSON)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    tokenizer, source = load_any(args.tokenizer)
    frames, groups, owners, episodes = pick_frames(args.data, args.frames, args.seed, args.heldout_of_training,
                                                   args.val_fraction, args.split_seed)  # fmt: skip
    scores = score(tokenizer, frames)
    result = {"tokenizer": source, "data": args.data, "episodes": int(len(episodes)), "frames": int(len(frames)),
              "day_threshold": DAY_THRESHOLD, "codebook_size": tokenizer.codebook_size,
              "used_codes": scores["used_codes"], "perplexity": scores["perplexity"], "groups": {}}  # fmt: skip
    for g, name in enumerate(("all", *GROUPS)):
        mask = np.ones(len(groups), bool) if name == "all" else groups == g - 1
        if not mask.any():
            continue
        codes = np.unique(scores["ids"][mask])
        others = np.unique(scores["ids"][~mask]) if name != "all" else np.array([], dtype=codes.dtype)
        result["groups"][name] = {"frames": int(mask.sum()), "used_codes": int(len(codes)),
                                  "codes_only_here": int(len(np.setdiff1d(codes, others))), **{
            k: list(cluster_bootstrap_mean(scores[k][mask], owners[mask], seed=args.seed)) for k in
            ("psnr", "mae", "cells_exact", "stable_tokens", "stable_frame")}}  # fmt: skip
    result["seconds"] = round(time.perf_counter() - began, 1)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
