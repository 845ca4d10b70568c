"""How many exact 8x8 cell patterns a Crafter recording holds, by daylight: the ceiling of a one-token-per-cell code.

Splits frames like ``bench/tokenizer_quality.py`` (day: awake and daylight >= 0.5; night; asleep), cuts every frame
into its cells (``cell`` pixels square; 8 at 72x72) and counts the distinct exact pixel patterns. For a codebook of
the ``K`` most common patterns it reports the share of cells it covers exactly and the share of frames whose every
cell it covers. Crafter's daylight depends only on the step within the episode (a 300-step cycle), so one texture
appears in as many exact variants as there are daylight values it was seen under; at night Crafter adds noise and
nearly every cell is unique. Prints JSON.

    python bench/cell_patterns.py runs/embedded/data-v2-tok
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worldmodels.data.shards import ShardDataset  # noqa: E402
from worldmodels.errors import DataError  # noqa: E402

SIZES = (31, 512, 1024, 2048, 4096)


def cell_ids(frames: np.ndarray, cell: int) -> np.ndarray:
    """``uint8[N, H, W, 3]`` -> ``void[N, cells]``: each cell's exact bytes as one comparable value."""
    n, h, w, c = frames.shape
    if h % cell or w % cell:
        raise DataError(f"frames of {h}x{w} do not split into {cell}x{cell} cells; pass --cell dividing both")
    cells = frames.reshape(n, h // cell, cell, w // cell, cell, c).transpose(0, 1, 3, 2, 4, 5)
    cells = np.ascontiguousarray(cells.reshape(n, -1, cell * cell * c))
    return cells.view(np.dtype((np.void, cell * cell * c)))[..., 0]


def coverage(ids: np.ndarray) -> dict:
    """Distinct patterns and the coverage of the most common ``K`` of them (cells, whole frames)."""
    _, inverse, counts = np.unique(ids.ravel(), return_inverse=True, return_counts=True)
    rank = np.empty(len(counts), dtype=np.int64)
    rank[np.argsort(-counts, kind="stable")] = np.arange(len(counts))
    ranks = rank[inverse.reshape(-1)].reshape(ids.shape)
    top_k = {}
    for k in SIZES:
        covered = ranks < k
        top_k[str(k)] = {"cells": round(float(covered.mean()), 4), "frames": round(float(covered.all(1).mean()), 4)}
    return {"frames": int(len(ids)), "distinct_patterns": int(len(counts)), "top_k": top_k}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="recording (rlir record crafter, with daylight)")
    parser.add_argument("--cell", type=int, default=8, help="cell side in pixels")
    parser.add_argument("--every", type=int, default=1, help="use every n-th frame of each episode")
    args = parser.parse_args(argv)
    dataset = ShardDataset(args.data, max_cached_shards=1)
    frames, daylight, sleeping = [], [], []
    for episode in dataset.episodes():
        if "daylight" not in episode.extras:
            raise DataError(f"{args.data} has no 'daylight' array; re-record it with `rlir record crafter`")
        frames.append(cell_ids(episode.frames[:: args.every], args.cell))
        daylight.append(episode.extras["daylight"][:: args.every])
        sleeping.append(episode.extras["sleeping"][:: args.every])
    ids, daylight, sleeping = np.concatenate(frames), np.concatenate(daylight), np.concatenate(sleeping)
    groups = {"day": ~sleeping & (daylight >= 0.5), "night": ~sleeping & (daylight < 0.5), "asleep": sleeping}
    result = {"data": args.data, "frames": int(len(ids)), "cell": args.cell,
              "groups": {name: coverage(ids[mask]) for name, mask in groups.items() if mask.any()}}  # fmt: skip
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
