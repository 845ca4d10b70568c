"""The exact-cell-pattern table that supervises the pattern tokenizer (``rlir train tokenizer --supervision patterns``).

Crafter draws its view from 8x8 textures on a fixed grid, so most cells of a daylight frame are one of a few thousand
exact pixel patterns, and most of those are the same texture under slightly different daylight tints. This module
turns training frames into a labelling of every cell with a codebook index, analytically:

1. cut the frames into ``cell x cell`` cells and count the exact patterns (bytes); patterns seen at least
   ``min_count`` times are the candidates, most frequent first;
2. merge near-duplicates greedily, in that order: a candidate within ``merge_levels`` (RMS, in 0..255 levels) of an
   existing centre joins the nearest such centre; otherwise it becomes a new centre (at most ``table_codes`` centres;
   candidates left over are treated like any other cell). Every exact pattern in the table maps to its centre;
3. a linear code space: the top ``embed_dim`` principal axes of a sample of training cells (in the tokenizer's
   ``[-1, 1]`` pixel scale); code ``k < n_table`` is the projection of centre ``k``;
4. the other codes (``n_codes - n_table``) are k-means centres of the projections of training cells outside the table
   (the night's noise, creatures over unusual ground, rare patterns);
5. labels: a cell whose exact pattern is in the table gets its centre's code; any other cell the code nearest to its
   projection.

The table is built from the frames it is given and nothing else: pass training frames only, never evaluation frames.
It is deterministic for given frames, seed and BLAS thread count; the projections (numpy matmuls) can differ in their
last bits between thread counts, which moves the k-means codes slightly (one BLAS thread in ``scripts/build_embedded.sh``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from worldmodels.errors import ConfigError, DataError, FrameError

__all__ = ["CellTable", "build_cell_table", "cell_keys", "cells_of", "label_cells"]


def _check_frames(frames: np.ndarray, cell: int) -> None:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        shape = getattr(frames, "shape", None)
        raise FrameError(f"frames must be a uint8 array [N, H, W, 3], got {type(frames).__name__} of shape {shape}")
    if isinstance(cell, bool) or not isinstance(cell, (int, np.integer)) or cell < 1:
        raise ConfigError(f"cell must be a positive integer (pixels), got {cell!r}")
    h, w = frames.shape[1:3]
    if h % cell or w % cell:
        raise ConfigError(f"frames of {h}x{w} do not split into {cell}x{cell} cells; pass a cell size dividing both")


def cells_of(frames: np.ndarray, cell: int) -> np.ndarray:
    """``uint8[N, H, W, 3]`` -> ``uint8[N, H/cell * W/cell, cell*cell*3]`` (row-major grid, each cell's pixels
    row-major, channels last)."""
    _check_frames(frames, cell)
    n, h, w, c = frames.shape
    cells = frames.reshape(n, h // cell, cell, w // cell, cell, c).transpose(0, 1, 3, 2, 4, 5)
    return np.ascontiguousarray(cells.reshape(n, (h // cell) * (w // cell), cell * cell * c))


def cell_keys(frames: np.ndarray, cell: int) -> np.ndarray:
    """``uint8[N, H, W, 3]`` -> ``void[N, cells]``: each cell's exact bytes as one comparable value."""
    cells = cells_of(frames, cell)
    return cells.view(np.dtype((np.void, cells.shape[-1])))[..., 0]


@dataclass
class CellTable:
    """What :func:`build_cell_table` found; everything :func:`label_cells` needs.

    Attributes:
        cell: cell side in pixels.
        keys: ``void[P]`` every exact pattern in the table, sorted.
        key_code: ``int64[P]`` the code (centre) of each of ``keys``.
        centres: ``uint8[n_table, cell*cell*3]`` the centre patterns (codes ``0 .. n_table-1``).
        centre_counts: ``int64[n_table]`` training cells labelled with each centre.
        mean, basis: the code space: ``code(x) = basis @ (x / 127.5 - 1 - mean)``; ``basis`` is
            ``float32[embed_dim, cell*cell*3]``.
        codes: ``float32[n_codes, embed_dim]`` the codebook (table centres first, then the k-means codes).
        stats: counts for the summary (patterns, table coverage of the training cells, ...).
    """

    cell: int
    keys: np.ndarray
    key_code: np.ndarray
    centres: np.ndarray
    centre_counts: np.ndarray
    mean: np.ndarray
    basis: np.ndarray
    codes: np.ndarray
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def n_table(self) -> int:
        return int(len(self.centres))

    @property
    def n_codes(self) -> int:
        return int(len(self.codes))

    def project(self, cells: np.ndarray) -> np.ndarray:
        """``uint8[..., cell*cell*3]`` -> ``float32[..., embed_dim]`` code-space coordinates."""
        x = cells.astype(np.float32) / 127.5 - 1.0 - self.mean
        return x @ self.basis.T


def _nearest(points: np.ndarray, codes: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Index of the nearest row of ``codes`` for every row of ``points`` (squared L2; ties to the lower index)."""
    c = torch.from_numpy(np.ascontiguousarray(codes, dtype=np.float32))
    c2 = c.pow(2).sum(1)
    out = np.empty(len(points), dtype=np.int64)
    for start in range(0, len(points), chunk):
        p = torch.from_numpy(np.ascontiguousarray(points[start : start + chunk], dtype=np.float32))
        d = c2[None, :] - 2.0 * p @ c.T  # |p|^2 is the same for every code
        out[start : start + chunk] = d.argmin(dim=1).numpy()
    return out


def _kmeans(points: np.ndarray, k: int, rng: np.random.Generator, iterations: int) -> np.ndarray:
    """Lloyd's k-means, initialised by k-means++ on a subsample; empty clusters keep their centre."""
    if len(points) == 0:
        return np.zeros((k, points.shape[1]), np.float32)
    sample = points[rng.choice(len(points), min(len(points), 20 * k), replace=False)]
    centres = np.empty((k, points.shape[1]), np.float32)
    centres[0] = sample[rng.integers(len(sample))]
    best = ((sample - centres[0]) ** 2).sum(1)
    for i in range(1, k):
        total = best.sum()
        j = rng.choice(len(sample), p=best / total) if total > 0 else rng.integers(len(sample))
        centres[i] = sample[j]
        best = np.minimum(best, ((sample - centres[i]) ** 2).sum(1))
    for _ in range(iterations):
        owner = _nearest(points, centres)
        counts = np.bincount(owner, minlength=k)
        sums = np.zeros_like(centres, dtype=np.float64)
        np.add.at(sums, owner, points)
        filled = counts > 0
        centres[filled] = (sums[filled] / counts[filled, None]).astype(np.float32)
    return centres


def build_cell_table(
    frames: np.ndarray,
    *,
    cell: int,
    n_codes: int,
    embed_dim: int,
    table_codes: int | None = None,
    min_count: int = 2,
    merge_levels: float = 1.0,
    seed: int = 0,
    sample_cells: int = 200_000,
    kmeans_iterations: int = 8,
) -> CellTable:
    """Build the table from ``frames`` (``uint8[N, H, W, 3]``, training frames only) and return it.

    Args:
        cell: cell side in pixels (the tokenizer's downsampling factor: one token per cell).
        n_codes: codebook size (table centres plus k-means codes).
        embed_dim: code dimension (the VQ model's latent dimension).
        table_codes: at most this many table centres (default: ``n_codes * 3 // 4``); the rest are k-means codes.
        min_count: an exact pattern must occur at least this often in ``frames`` to enter the table.
        merge_levels: near-duplicate patterns within this RMS distance (0..255 levels) share a centre; 0 merges none.
        seed: seeds the cell sample (principal axes, k-means).
        sample_cells: cells sampled for the principal axes and k-means.
        kmeans_iterations: Lloyd iterations for the codes outside the table.
    """
    _check_frames(frames, cell)
    for name, value, low in (("n_codes", n_codes, 2), ("embed_dim", embed_dim, 1), ("min_count", min_count, 1),
                             ("sample_cells", sample_cells, 1)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    table_codes = n_codes * 3 // 4 if table_codes is None else table_codes
    if isinstance(table_codes, bool) or not isinstance(table_codes, (int, np.integer)) or not 1 <= table_codes < n_codes:
        raise ConfigError(
            f"table_codes must be an integer in [1, n_codes={n_codes}) (codes are left for cells outside the table), "
            f"got {table_codes!r}"
        )
    if not np.isfinite(merge_levels) or merge_levels < 0:
        raise ConfigError(f"merge_levels must be a finite RMS distance >= 0 (0..255 levels), got {merge_levels!r}")
    if len(frames) == 0:
        raise DataError("build_cell_table needs at least one frame; pass the training frames")
    dims = cell * cell * 3
    if embed_dim > dims:
        raise ConfigError(f"embed_dim {embed_dim} exceeds the {dims} values of a {cell}x{cell} RGB cell; lower it")
    rng = np.random.default_rng(seed)

    # 1. exact patterns by frequency (ties: byte order, so the table does not depend on the frames' order)
    keys = cell_keys(frames, cell).ravel()
    uniq, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    candidates = order[counts[order] >= min_count]

    # 2. greedy merge of near-duplicates into at most table_codes centres
    patterns = np.frombuffer(uniq[candidates].tobytes(), np.uint8).reshape(len(candidates), dims)
    centre_px = np.zeros((min(table_codes, len(candidates)), dims), np.float32)
    member_of = np.full(len(candidates), -1, np.int64)
    n_centres = 0
    limit = (merge_levels**2) * dims  # squared L2 in levels
    for i, pattern in enumerate(patterns.astype(np.float32)):
        if n_centres:
            d = ((centre_px[:n_centres] - pattern) ** 2).sum(1)
            j = int(d.argmin())
            if d[j] <= limit:
                member_of[i] = j
                continue
        if n_centres < len(centre_px):
            centre_px[n_centres] = pattern
            member_of[i] = n_centres
            n_centres += 1
    in_table = member_of >= 0
    table_keys, table_code = uniq[candidates[in_table]], member_of[in_table]
    sort = np.argsort(table_keys, kind="stable")
    table_keys, table_code = table_keys[sort], table_code[sort]
    centres = centre_px[:n_centres].astype(np.uint8)
    pattern_code = np.full(len(uniq), -1, np.int64)
    pattern_code[candidates[in_table]] = member_of[in_table]
    cell_code = pattern_code[inverse.reshape(-1)]
    centre_counts = np.bincount(cell_code[cell_code >= 0], minlength=n_centres)

    # 3. code space: principal axes of a sample of the training cells
    flat = cells_of(frames, cell).reshape(-1, dims)
    pick = np.sort(rng.choice(len(flat), min(len(flat), sample_cells), replace=False))
    x = flat[pick].astype(np.float32) / 127.5 - 1.0
    mean = x.mean(0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    basis = np.ascontiguousarray(vt[:embed_dim], dtype=np.float32)

    # 4. codes: table centres, then k-means of the cells outside the table
    table = CellTable(cell=cell, keys=table_keys, key_code=table_code, centres=centres, centre_counts=centre_counts,
                      mean=mean, basis=basis, codes=np.zeros((0, embed_dim), np.float32))  # fmt: skip
    centre_codes = table.project(centres)
    outside = np.flatnonzero(cell_code < 0)
    rest = outside[np.sort(rng.choice(len(outside), min(len(outside), sample_cells), replace=False))]
    kmeans = _kmeans(table.project(flat[rest]), n_codes - n_centres, rng, kmeans_iterations)
    table.codes = np.ascontiguousarray(np.concatenate([centre_codes, kmeans]), dtype=np.float32)
    table.stats = {
        "cells": int(len(keys)),
        "distinct_patterns": int(len(uniq)),
        "candidate_patterns": int(len(candidates)),
        "table_patterns": int(in_table.sum()),
        "table_codes": int(n_centres),
        "kmeans_codes": int(n_codes - n_centres),
        "table_cell_share": round(float((cell_code >= 0).mean()), 6),
        "min_count": int(min_count),
        "merge_levels": float(merge_levels),
    }
    return table


def label_cells(frames: np.ndarray, table: CellTable, *, chunk: int = 4096) -> np.ndarray:
    """``uint8[N, H, W, 3]`` -> ``int64[N, H/cell, W/cell]``: the table code of each cell's exact pattern, or the
    code nearest to its projection when the pattern is not in the table."""
    _check_frames(frames, table.cell)
    n, h, w = len(frames), frames.shape[1] // table.cell, frames.shape[2] // table.cell
    out = np.empty((n, h * w), np.int64)
    for start in range(0, n, chunk):
        part = frames[start : start + chunk]
        keys = cell_keys(part, table.cell).ravel()
        where = np.clip(np.searchsorted(table.keys, keys), 0, max(len(table.keys) - 1, 0))
        hit = table.keys[where] == keys if len(table.keys) else np.zeros(len(keys), bool)
        codes = np.where(hit, table.key_code[where] if len(table.keys) else 0, -1)
        miss = np.flatnonzero(~hit)
        if len(miss):
            cells = cells_of(part, table.cell).reshape(-1, table.cell * table.cell * 3)[miss]
            codes[miss] = _nearest(table.project(cells), table.codes)
        out[start : start + chunk] = codes.reshape(len(part), h * w)
    return out.reshape(n, h, w)
