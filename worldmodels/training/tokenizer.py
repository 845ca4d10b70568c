"""Train MineWorld's VQ image tokenizer (a ``diffusers.VQModel``) on recorded frames (``rlir train tokenizer``).

Reading top to bottom, :func:`train_tokenizer`:

1. holds out ``val_fraction`` of the episodes (or uses ``eval_dirs``) and draws ``eval_frames`` evaluation frames
   from them; loads every training frame into memory (uint8);
2. every step draws ``batch_size`` frames uniformly (from ``(seed, step)`` alone, so a resumed run sees the same
   batches), maps them to ``[-1, 1]`` exactly as :class:`~worldmodels.mineworld.vq.VQTokenizer` does, and runs the
   VQ-VAE: ``encoder -> quant_conv -> quantize -> post_quant_conv -> decoder``;
3. minimises ``L1 + MSE`` of the reconstruction plus diffusers' VQ loss (``|sg(z_q) - z|^2 + 0.25 |z_q - sg(z)|^2``,
   the ``legacy`` form ``VQModel`` uses), with AdamW, warm-up + cosine decay and gradient clipping;
4. every ``restart_every`` steps re-seeds the codes no frame used since the last restart with encoder outputs of the
   current batch, drawn in proportion to their squared distance from the codebook (badly represented latents
   first), so the codebook stays in use; restarts stop after ``restart_until`` of the run so that the decoder
   settles on the final codes;
5. evaluates the real inference path (``VQTokenizer.tokenize`` / ``detokenize`` with uint8 truncation) on the
   held-out frames: PSNR, mean absolute error, the share of frames (and tokens) whose reconstruction re-tokenizes
   to the same tokens, and codebook usage (codes used, perplexity);
6. writes the weights with diffusers' key names as safetensors (config, frame size and summary in the metadata;
   :func:`load_tokenizer` reads it back) and the summary as JSON next to them.

Exact tiles matter here: the world model predicts these tokens, so a tokenizer whose decoded frames re-tokenize
differently, or whose codes mix two tiles, costs the world model accuracy it can never recover.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldmodels.data.shards import ShardDataset
from worldmodels.errors import CheckpointError, ConfigError, DataError, MissingFileError
from worldmodels.hashing import sha256_file
from worldmodels.mineworld.vq import VQTokenizer
from worldmodels.runtime.files import atomic_output, write_json
from worldmodels.runtime.progress import Progress
from worldmodels.training.common import (
    CHECKPOINT_NAME,
    JsonlLogger,
    MetricWindow,
    Stopwatch,
    as_dirs,
    cosine_with_warmup,
    dataset_identity,
    load_checkpoint,
    machine_info,
    make_adamw,
    require_positive_ints,
    run_dir_for,
    save_checkpoint,
    seed_everything,
    split_episodes,
    step_generator,
    step_rng,
    summary_path,
)

__all__ = [
    "CRAFTER_VQ_CONFIG",
    "TOKENIZER_KIND",
    "evaluate_tokenizer",
    "frames_to_input",
    "gather_frames",
    "load_tokenizer",
    "restart_dead_codes",
    "save_tokenizer",
    "score_tokenizer_frames",
    "summarize_tokenizer_scores",
    "train_tokenizer",
    "vq_forward",
]

TOKENIZER_KIND = "rlir.vq-tokenizer"

CRAFTER_VQ_CONFIG: dict[str, Any] = {
    "_class_name": "VQModel",
    "act_fn": "silu",
    "block_out_channels": [8, 16, 32, 64],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 32,
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "norm_type": "group",
    "num_vq_embeddings": 512,
    "vq_embed_dim": None,
    "mid_block_add_attention": False,
    "lookup_from_codebook": True,
    "force_upcast": True,
    "scaling_factor": 0.18215,
    "sample_size": 72,
}
"""The Crafter tokenizer: 72x72 frames -> 9x9 tokens (downsampling 8: one token per 8x8 Crafter tile), 512 codes of
dimension 32; 0.70M parameters (2.8 MB fp32). Channels stay narrow at full resolution, where a CPU spends its time:
training, tokenizing the recordings and decoding every generated frame all scale with them. 512 codes reconstruct as
well as 1024 after the same steps but re-tokenize more stably (fewer near-duplicate codes for the world model to
choose between)."""

_SAMPLE_STREAM, _EVAL_STREAM, _RESTART_STREAM, _SPLIT_STREAM = 1, 2, 3, 4


# -- file format ------------------------------------------------------------------------------------------------------


def save_tokenizer(tokenizer: VQTokenizer, path: str | os.PathLike, *, summary: dict[str, Any] | None = None) -> Path:
    """Write ``tokenizer``'s ``VQModel`` weights (diffusers key names, e.g. ``encoder.conv_in.weight``) as safetensors,
    with its config, frame size and an optional training summary as JSON metadata."""
    from worldmodels.weights import save_safetensors_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ConfigError(f"tokenizer weights are written as .safetensors, got {path.name!r}")
    tensors = {k: v.detach().cpu().contiguous() for k, v in tokenizer.model.state_dict().items()}
    meta = {
        "format": "pt",
        "kind": TOKENIZER_KIND,
        "vq_config": json.dumps(tokenizer.config, sort_keys=True),
        "frame_size": json.dumps(list(tokenizer.frame_size)),
        "summary": json.dumps(summary or {}, sort_keys=True),
    }
    with atomic_output(path) as tmp:
        save_safetensors_file(tensors, tmp, meta)
    return path


def read_tokenizer_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any], tuple[int, int]]:
    """``(state_dict, vq_config, frame_size)`` of a file written by :func:`save_tokenizer`."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"tokenizer {str(path)!r} does not exist; train one with `rlir train tokenizer`")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"cannot read tokenizer file {str(path)!r}: {err}") from None
    if meta.get("kind") != TOKENIZER_KIND:
        raise CheckpointError(
            f"{path} is not a tokenizer written by save_tokenizer (metadata kind {meta.get('kind')!r}); train one with "
            "`rlir train tokenizer`"
        )
    return state, json.loads(meta["vq_config"]), tuple(json.loads(meta["frame_size"]))


def load_tokenizer(path: str | os.PathLike, *, chunk: int = 16) -> VQTokenizer:
    """A :class:`VQTokenizer` from a file written by :func:`save_tokenizer` (fp32, CPU, eval mode)."""
    state, vq_config, frame_size = read_tokenizer_file(path)
    tokenizer = VQTokenizer(vq_config, frame_size, chunk=chunk)
    try:
        tokenizer.model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit its VQ config: {err}") from None
    return tokenizer.eval()


# -- data -------------------------------------------------------------------------------------------------------------


def gather_frames(dataset: ShardDataset, episodes: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
    """Frames of ``episodes`` laid end to end (``uint8[N, H, W, 3]``), or only the rows ``index`` of that sequence.

    Shards are read once each, in order, so memory holds the output plus one decompressed shard.
    """
    episodes = np.asarray(episodes, dtype=np.int64)
    lengths = dataset.episode_lengths[episodes]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    rows = np.arange(offsets[-1]) if index is None else np.asarray(index, dtype=np.int64)
    out = np.empty((len(rows), *dataset.frame_shape), dtype=np.uint8)
    owner = np.searchsorted(offsets, rows, side="right") - 1  # position in `episodes` of every wanted row
    for k in np.unique(owner):
        where = np.flatnonzero(owner == k)
        frames = dataset.episode(int(episodes[k])).frames
        out[where] = frames[rows[where] - offsets[k]]
    return out


def load_frames(
    data_dirs: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    frame_size: tuple[int, int],
    seed: int,
    val_fraction: float,
    eval_dirs: Sequence[str | os.PathLike] | None,
    eval_frames: int,
) -> tuple[list[ShardDataset], np.ndarray, list[tuple[ShardDataset, np.ndarray]], np.ndarray]:
    """``(datasets, training frames, evaluation parts, evaluation frames)``: every training frame in memory (uint8),
    and ``eval_frames`` frames drawn without replacement from the held-out episodes of ``data_dirs`` (the split
    ``val_fraction``/``seed``) or, when given, from every episode of ``eval_dirs``."""
    datasets = [ShardDataset(d, max_cached_shards=1) for d in as_dirs(data_dirs)]
    for dataset in datasets:
        if tuple(dataset.frame_shape[:2]) != frame_size:
            raise DataError(
                f"{dataset.root} holds {tuple(dataset.frame_shape[:2])} frames but frame_size is {frame_size}; "
                f"record at {frame_size[0]}x{frame_size[1]} or pass frame_size={tuple(dataset.frame_shape[:2])}"
            )
    if eval_dirs:
        train_parts = [(d, np.arange(d.n_episodes)) for d in datasets]
        eval_sets = [ShardDataset(e, max_cached_shards=1) for e in as_dirs(eval_dirs, "eval_dirs")]
        eval_parts = [(d, np.arange(d.n_episodes)) for d in eval_sets]
    else:
        splits = [split_episodes(d.n_episodes, val_fraction, seed, _SPLIT_STREAM + i) for i, d in
                  enumerate(datasets)]  # fmt: skip
        train_parts = [(d, train) for d, (train, _) in zip(datasets, splits)]
        eval_parts = [(d, val) for d, (_, val) in zip(datasets, splits)]
    pool = np.concatenate([gather_frames(d, ids) for d, ids in train_parts])
    eval_sizes = np.array([int(d.episode_lengths[ids].sum()) for d, ids in eval_parts])
    if eval_sizes.sum() == 0:
        raise DataError("no evaluation frames: pass eval_dirs or a val_fraction > 0")
    chosen = np.sort(step_rng(seed, _EVAL_STREAM).choice(eval_sizes.sum(), min(eval_frames, eval_sizes.sum()),
                                                          replace=False))  # fmt: skip
    bounds = np.concatenate([[0], np.cumsum(eval_sizes)])
    held_out = np.concatenate([
        gather_frames(d, ids, chosen[(chosen >= lo) & (chosen < hi)] - lo)
        for (d, ids), lo, hi in zip(eval_parts, bounds[:-1], bounds[1:])
    ])  # fmt: skip
    if len(pool) == 0:
        raise DataError("no training frames; check data_dirs")
    return datasets, pool, eval_parts, held_out


def frames_to_input(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, H, W, 3]`` -> float ``[B, 3, H, W]`` in [-1, 1], exactly as ``VQTokenizer.tokenize``."""
    x = torch.as_tensor(frames).permute(0, 3, 1, 2).float() / 255.0
    return (x - 0.5) / 0.5


# -- model ------------------------------------------------------------------------------------------------------------


def vq_forward(vq: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``diffusers.VQModel`` forward that also returns what training needs.

    Returns ``(reconstruction [B, 3, H, W], vq_loss (scalar, diffusers' commitment + codebook loss), codes int64[B*h*w],
    latents [B*h*w, D] (encoder outputs before quantisation))``.
    """
    latents = vq.encode(x).latents
    quant, vq_loss, (_, _, codes) = vq.quantize(latents)
    spatial = quant if vq.config.norm_type == "spatial" else None
    reconstruction = vq.decoder(vq.post_quant_conv(quant), spatial)
    flat = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    return reconstruction, vq_loss, codes.reshape(-1), flat


@torch.no_grad()
def restart_dead_codes(
    codebook: torch.Tensor, usage: torch.Tensor, latents: torch.Tensor, generator: torch.Generator
) -> int:
    """Re-seed the codes with ``usage == 0`` from ``latents [N, D]`` (in place); returns how many were re-seeded.

    Latents are drawn without replacement (where there are enough) in proportion to their squared distance from the
    nearest code, so the new codes go where the codebook fits the data worst.
    """
    dead = torch.nonzero(usage == 0).flatten()
    if len(dead) == 0 or len(latents) == 0:
        return 0
    distance = torch.cdist(latents, codebook).min(dim=1).values.pow(2)
    weights = distance + 1e-12  # every latent stays eligible, even one sitting on a code
    replacement = len(dead) > len(latents)
    choice = torch.multinomial(weights, len(dead), replacement=replacement, generator=generator)
    codebook[dead] = latents[choice]
    return int(len(dead))


@torch.no_grad()
def update_codebook_ema(
    codebook: torch.Tensor,
    ema_count: torch.Tensor,
    ema_sum: torch.Tensor,
    counts: torch.Tensor,
    codes: torch.Tensor,
    latents: torch.Tensor,
    decay: float,
) -> None:
    """One EMA step: ``count <- d*count + (1-d)*n``, ``sum <- d*sum + (1-d)*sum(latents)``, code = sum / count
    (counts Laplace-smoothed so rarely used codes do not divide by ~0). Updates all three tensors in place."""
    ema_count.mul_(decay).add_(counts.to(ema_count.dtype), alpha=1 - decay)
    sums = torch.zeros_like(ema_sum).index_add_(0, codes, latents.to(ema_sum.dtype))
    ema_sum.mul_(decay).add_(sums, alpha=1 - decay)
    total, k, eps = ema_count.sum(), len(ema_count), 1e-5
    smoothed = (ema_count + eps) / (total + k * eps) * total
    codebook.copy_(ema_sum / smoothed[:, None])


def _perplexity(counts: torch.Tensor) -> float:
    p = counts.double() / counts.sum().clamp_min(1)
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def score_tokenizer_frames(tokenizer: VQTokenizer, frames: np.ndarray, *, batch_size: int = 64) -> dict[str, Any]:
    """Per-frame scores of the inference path on ``frames uint8[N, H, W, 3]`` (the tokenizer's mode is kept).

    Returns ``float32[N]`` tensors ``psnr`` (``10 log10(255^2 / MSE)``, MSE floored at 1e-10), ``mae`` (mean absolute
    pixel error, 0..255), ``cells_exact`` (share of the token grid's cells whose every pixel is within 2 levels),
    ``stable_tokens`` / ``stable_frames`` (share of tokens / whether all tokens satisfy
    ``tokenize(detokenize(tokenize(x))) == tokenize(x)``); ``ids`` ``int64[N, h*w]`` (the first tokenization) and
    ``counts`` (the code histogram).
    """
    if len(frames) == 0:
        raise DataError("scoring a tokenizer needs at least one frame")
    h, w = tokenizer.grid
    scores: dict[str, list[torch.Tensor]] = {
        k: [] for k in ("psnr", "mae", "cells_exact", "stable_tokens", "stable_frames", "ids")
    }
    counts = torch.zeros(tokenizer.codebook_size, dtype=torch.long)
    for start in range(0, len(frames), batch_size):
        x = torch.as_tensor(frames[start : start + batch_size])
        ids = tokenizer.tokenize(x)
        reconstruction = tokenizer.detokenize(ids)
        again = tokenizer.tokenize(reconstruction)
        error = reconstruction.float() - x.float()
        mse = error.pow(2).mean(dim=(1, 2, 3))
        scores["psnr"].append(10.0 * torch.log10(255.0**2 / mse.clamp_min(1e-10)))
        scores["mae"].append(error.abs().mean(dim=(1, 2, 3)))
        cell_error = error.abs().amax(dim=-1).reshape(len(x), h, x.shape[1] // h, w, x.shape[2] // w).amax(dim=(2, 4))
        scores["cells_exact"].append((cell_error <= 2).float().flatten(1).mean(dim=1))
        same = (again == ids).flatten(1)
        scores["stable_tokens"].append(same.float().mean(dim=1))
        scores["stable_frames"].append(same.all(dim=1).float())
        scores["ids"].append(ids.flatten(1))
        counts += torch.bincount(ids.flatten(), minlength=tokenizer.codebook_size)
    return {**{k: torch.cat(v) for k, v in scores.items()}, "counts": counts}


def summarize_tokenizer_scores(scores: dict[str, Any]) -> dict[str, Any]:
    """The means of :func:`score_tokenizer_frames`' scores: ``psnr``, ``mae``, ``stable_frames``, ``stable_tokens``,
    with ``frames``, ``used_codes`` and ``perplexity`` (of the code histogram)."""
    return {
        "frames": int(len(scores["psnr"])),
        **{k: float(scores[k].mean()) for k in ("psnr", "mae", "stable_frames", "stable_tokens")},
        "used_codes": int((scores["counts"] > 0).sum()),
        "perplexity": _perplexity(scores["counts"]),
    }


def evaluate_tokenizer(tokenizer: VQTokenizer, frames: np.ndarray, *, batch_size: int = 64) -> dict[str, Any]:
    """Score the inference path on ``frames uint8[N, H, W, 3]`` in eval mode (the tokenizer's mode is restored).

    Returns ``psnr`` (mean over frames of ``10 log10(255^2 / MSE)``, MSE floored at 1e-10), ``mae`` (mean absolute
    pixel error, 0..255), ``stable_frames`` / ``stable_tokens`` (share of frames / tokens for which
    ``tokenize(detokenize(tokenize(x))) == tokenize(x)``), ``used_codes`` and ``perplexity`` (of the code histogram).
    """
    was_training = tokenizer.training
    tokenizer.eval()
    scores = score_tokenizer_frames(tokenizer, frames, batch_size=batch_size)
    tokenizer.train(was_training)
    return summarize_tokenizer_scores(scores)


# -- training ---------------------------------------------------------------------------------------------------------


def train_tokenizer(
    data_dirs: str | os.PathLike | Sequence[str | os.PathLike],
    out_path: str | os.PathLike,
    *,
    vq_config: dict[str, Any] | None = None,
    frame_size: tuple[int, int] = (72, 72),
    steps: int = 2000,
    batch_size: int = 16,
    lr: float = 1e-3,
    warmup: int = 100,
    weight_decay: float = 0.0,
    seed: int = 0,
    val_fraction: float = 0.05,
    eval_dirs: Sequence[str | os.PathLike] | None = None,
    eval_frames: int = 1024,
    eval_every: int = 500,
    restart_every: int = 50,
    restart_until: float = 0.8,
    codebook_update: str = "ema",
    ema_decay: float = 0.99,
    log_every: int = 25,
    checkpoint_every: int = 250,
    log_path: str | os.PathLike | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
    report_to: str = "none",
) -> dict[str, Any]:
    """Train a VQ tokenizer and write ``out_path`` (safetensors) and its summary (same name, ``.json``).

    Args:
        data_dirs: trajectory-shard directories (``rlir record crafter``) whose frames it learns.
        out_path: the weights file (``.safetensors``); the run directory ``<stem>.run/`` next to it holds the
            checkpoint and (by default) the log.
        vq_config: a diffusers ``VQModel`` config (official ``config.json`` format); default
            :data:`CRAFTER_VQ_CONFIG`.
        frame_size: ``(H, W)`` of the frames (must be the recording's).
        steps: optimiser steps.
        batch_size: frames per step.
        lr: peak AdamW learning rate (linear warm-up over ``warmup`` steps, cosine decay to ``lr / 10``).
        weight_decay: AdamW weight decay of the conv weights (never of the codebook).
        seed: seeds the weights, the split, the evaluation frames, the batches and the code restarts.
        val_fraction: share of episodes held out for evaluation (when ``eval_dirs`` is not given).
        eval_dirs: separate recordings to evaluate on instead (then every episode of ``data_dirs`` trains).
        eval_frames: evaluation frames, drawn without replacement from the held-out episodes.
        eval_every: evaluate (and log) every this many steps; 0: only at the end.
        restart_every: re-seed unused codes every this many steps; 0: never.
        restart_until: last restart at this fraction of ``steps``.
        codebook_update: ``"ema"`` (default): each code moves to the running mean of the latents assigned to it
            (van den Oord et al. 2017, appendix; no gradient reaches the codebook, the encoder keeps the commitment
            loss); ``"gradient"``: the codebook term of diffusers' VQ loss trains it with AdamW.
        ema_decay: decay of the EMA statistics.
        log_every: log training losses every this many steps.
        checkpoint_every: write the resumable checkpoint every this many steps (and when stopping).
        log_path: JSON Lines log; default ``<run dir>/log.jsonl``.
        resume: continue from the run directory's checkpoint (the same settings and data are required); without a
            checkpoint, start from scratch.
        stop_after: stop (after checkpointing) once this many steps are done, as an interruption would; the
            schedule still spans ``steps``. Outputs are written only when all ``steps`` are done.
        progress: show a progress bar.

    Returns:
        The summary (also written as JSON): data, settings, losses, evaluation, codebook usage, wall time, machine.
        ``finished`` is False when ``stop_after`` ended the run early.
    """
    watch = Stopwatch()
    vq_config = dict(CRAFTER_VQ_CONFIG if vq_config is None else vq_config)
    frame_size = (int(frame_size[0]), int(frame_size[1]))
    require_positive_ints(steps=steps, batch_size=batch_size, eval_frames=eval_frames)
    if not 0.0 <= restart_until <= 1.0:
        raise ConfigError(f"restart_until must lie in [0, 1], got {restart_until!r}")
    if codebook_update not in ("ema", "gradient"):
        raise ConfigError(f"codebook_update must be 'ema' or 'gradient', got {codebook_update!r}")
    if not 0.0 < ema_decay < 1.0:
        raise ConfigError(f"ema_decay must lie in (0, 1), got {ema_decay!r}")
    out_path = Path(out_path)
    if out_path.suffix != ".safetensors":
        raise ConfigError(f"out_path must end in .safetensors, got {out_path.name!r}")
    run_dir = run_dir_for(out_path)
    checkpoint_path = run_dir / CHECKPOINT_NAME
    log_path = run_dir / "log.jsonl" if log_path is None else Path(log_path)
    seed_everything(seed)

    # 1. data: training frames in memory, evaluation frames from held-out episodes (or other recordings)
    with watch("data"):
        datasets, pool, eval_parts, held_out = load_frames(data_dirs, frame_size=frame_size, seed=seed,
                                                           val_fraction=val_fraction, eval_dirs=eval_dirs,
                                                           eval_frames=eval_frames)  # fmt: skip

    # 2. model, optimiser, schedule (and the checkpoint, when resuming)
    tokenizer = VQTokenizer(vq_config, frame_size)
    vq = tokenizer.model.train()
    optimizer = make_adamw(vq.named_parameters(), lr=lr, weight_decay=weight_decay,
                           no_decay=lambda name, _: name.startswith("quantize."))  # fmt: skip
    scheduler = cosine_with_warmup(optimizer, warmup=warmup, total=steps)
    codebook = vq.quantize.embedding.weight
    usage = torch.zeros(tokenizer.codebook_size, dtype=torch.long)
    ema = codebook_update == "ema"
    codebook.requires_grad_(not ema)
    ema_count = torch.ones(tokenizer.codebook_size)  # EMA of assignments per code, and of their latent sums
    ema_sum = codebook.detach().clone()
    run_config = {
        "task": "tokenizer", "vq_config": vq_config, "frame_size": list(frame_size), "steps": steps,
        "batch_size": batch_size, "lr": lr, "warmup": warmup, "weight_decay": weight_decay, "seed": seed,
        "val_fraction": val_fraction, "eval_frames": eval_frames, "restart_every": restart_every,
        "restart_until": restart_until, "codebook_update": codebook_update, "ema_decay": ema_decay,
        "data": [dataset_identity(d) for d in datasets],
        "eval_data": [dataset_identity(d) for d, _ in eval_parts] if eval_dirs else None,
    }  # fmt: skip
    start_step, resumed_from = 0, None
    evaluations: list[dict[str, Any]] = []
    restarted_total = 0
    if resume and checkpoint_path.is_file():
        start_step, extra, extra_meta = load_checkpoint(checkpoint_path, model=vq, optimizer=optimizer,
                                                        scheduler=scheduler, run_config=run_config)  # fmt: skip
        usage = extra["usage"].clone()
        ema_count, ema_sum = extra["ema_count"].clone(), extra["ema_sum"].clone()
        evaluations, restarted_total = extra_meta["evaluations"], extra_meta["restarted_total"]
        resumed_from = start_step
    logger = JsonlLogger(log_path, resume_step=resumed_from, report_to=report_to)
    stop = steps if stop_after is None else min(int(stop_after), steps)
    last_restart = int(restart_until * steps)

    def checkpoint(step: int) -> None:
        save_checkpoint(checkpoint_path, model=vq, optimizer=optimizer, scheduler=scheduler, step=step,
                        run_config=run_config,
                        extra_tensors={"usage": usage, "ema_count": ema_count, "ema_sum": ema_sum},
                        extra_meta={"evaluations": evaluations, "restarted_total": restarted_total})  # fmt: skip

    # 3. training loop
    window = MetricWindow(("loss", "l1", "mse", "vq"))
    last_window: dict[str, float] | None = None
    step_time = 0.0
    with Progress(steps, "tokenizer", enabled=progress, completed=start_step) as bar:
        for step in range(start_step, stop):
            began = time.perf_counter()
            rng = step_rng(seed, _SAMPLE_STREAM, step)
            x = frames_to_input(pool[rng.integers(0, len(pool), batch_size)])
            reconstruction, vq_loss, codes, latents = vq_forward(vq, x)
            l1 = (reconstruction - x).abs().mean()
            mse = (reconstruction - x).pow(2).mean()
            loss = l1 + mse + vq_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vq.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            counts = torch.bincount(codes, minlength=tokenizer.codebook_size)
            usage += counts
            if ema:
                update_codebook_ema(codebook.data, ema_count, ema_sum, counts, codes, latents.detach(), ema_decay)
            done = step + 1
            in_use, restarted = int((usage > 0).sum()), 0
            if restart_every and done % restart_every == 0 and done <= last_restart:
                restarted = restart_dead_codes(codebook.data, usage, latents.detach(),
                                               step_generator(seed, _RESTART_STREAM, step))  # fmt: skip
                if ema:  # restarted codes start their statistics afresh at their new position
                    reset = usage == 0
                    ema_count[reset], ema_sum[reset] = 1.0, codebook.data[reset]
                restarted_total += restarted
                usage.zero_()
            step_time += time.perf_counter() - began
            window.add({"loss": loss, "l1": l1, "mse": mse, "vq": vq_loss})
            bar.advance(1, f"loss {window.latest('loss'):.4f}")
            if done % log_every == 0 or done == stop or restarted:
                last_window = window.close()
                logger.log(step=done, **last_window, lr=scheduler.get_last_lr()[0], codes_in_use=in_use,
                           restarted=restarted, s_per_step=step_time / (done - start_step))  # fmt: skip
            if (eval_every and done % eval_every == 0) or done == steps:
                with watch("eval"):
                    result = evaluate_tokenizer(tokenizer, held_out)
                vq.train()
                evaluations.append({"step": done, **result})
                logger.log(step=done, eval=result)
            if done % checkpoint_every == 0 or done == stop:
                checkpoint(done)

    finished = stop == steps
    summary: dict[str, Any] = {
        "kind": TOKENIZER_KIND,
        "finished": finished,
        "steps_done": stop,
        "resumed_from": resumed_from,
        "settings": {k: v for k, v in run_config.items() if k not in ("data", "eval_data")},
        "data": run_config["data"],
        "eval_data": run_config["eval_data"] or "held-out episodes of data",
        "train_frames": int(len(pool)),
        "eval_frames": int(len(held_out)),
        "parameters": int(sum(p.numel() for p in vq.parameters())),
        "grid": list(tokenizer.grid),
        "train": last_window,
        "restarted_codes": restarted_total,
        "s_per_step": step_time / max(1, stop - start_step),
        "evaluations": evaluations,
        "final": evaluations[-1] if finished and evaluations else None,
        "wall_time": watch.report(),
        "machine": machine_info(),
    }
    if finished:
        tokenizer.eval()
        save_tokenizer(tokenizer, out_path, summary=summary)
        summary["sha256"] = sha256_file(out_path)
        summary["bytes"] = out_path.stat().st_size
        write_json(summary_path(out_path), summary)
    return summary
