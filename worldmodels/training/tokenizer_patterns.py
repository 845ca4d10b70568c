"""Train the VQ tokenizer under the supervision of an exact-cell-pattern table (``rlir train tokenizer --supervision
patterns``): the same ``diffusers.VQModel`` and file format as :mod:`worldmodels.training.tokenizer`, trained as a
classifier and a renderer instead of an autoencoder.

Plain VQ training has to discover Crafter's few thousand exact 8x8 cell patterns by gradient descent; on a CPU it
does not get there (22 dB after 700 steps). Here the tokenization is fixed before training, analytically, from the
training frames alone (:mod:`worldmodels.training.cell_table`): every exact pattern seen often enough has a code
(near-duplicate daylight tints share one), every other cell the code nearest to its projection on the principal
axes of the training cells, and the codebook starts at those projections. Reading :func:`train_pattern_tokenizer`
top to bottom:

1. load the training frames (and the evaluation frames, from other episodes or recordings), build the table from
   the training frames only and label every training cell with its code;
2. every step draws ``batch_size`` frames (from ``(seed, step)`` alone, so a resumed run sees the same batches);
3. the encoder (``encoder -> quant_conv``) is a classifier: ``tau * cross-entropy`` of ``-|z - e_k|^2 / tau`` over
   all codes ``k`` against the cell's label, plus ``commit * |z - sg(e_label)|^2``;
4. the decoder (``post_quant_conv -> decoder``) renders the frame from the labels' codes (teacher forcing: the
   encoder's mistakes never reach it), ``L1 + MSE``;
5. after ``consistency_from`` of the run, its reconstruction is encoded again and classified against the same
   labels (weight ``consistency``): decode -> encode must return the tokens, which trains the decoder to draw what
   the encoder recognises and the encoder to recognise what the decoder draws;
6. the codebook learns from both (no weight decay); gradients are clipped per part (encoder, decoder, codebook);
7. evaluation, checkpoints and the output file are those of :func:`~worldmodels.training.tokenizer.train_tokenizer`
   (the runtime loads the result like any tokenizer), plus the share of held-out tokens equal to their label.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from worldmodels.errors import ConfigError
from worldmodels.hashing import sha256_file
from worldmodels.mineworld.vq import VQTokenizer
from worldmodels.training.cell_table import CellTable, build_cell_table, label_cells
from worldmodels.runtime.files import write_json
from worldmodels.runtime.progress import Progress
from worldmodels.training.common import (
    CHECKPOINT_NAME,
    JsonlLogger,
    MetricWindow,
    Stopwatch,
    cosine_with_warmup,
    dataset_identity,
    load_checkpoint,
    machine_info,
    make_adamw,
    require_positive_ints,
    run_dir_for,
    save_checkpoint,
    seed_everything,
    step_rng,
    summary_path,
)
from worldmodels.training.tokenizer import (
    CRAFTER_VQ_CONFIG,
    TOKENIZER_KIND,
    frames_to_input,
    load_frames,
    save_tokenizer,
    score_tokenizer_frames,
    summarize_tokenizer_scores,
)

__all__ = ["pattern_losses", "squared_code_distances", "train_pattern_tokenizer"]

_SAMPLE_STREAM = 11


def squared_code_distances(latents: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """``[B, D, h, w]`` latents, ``[K, D]`` codes -> ``[B*h*w, K]`` squared L2 distances (row-major cells)."""
    flat = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    return flat.pow(2).sum(1, keepdim=True) - 2.0 * flat @ codebook.T + codebook.pow(2).sum(1)[None, :]


def pattern_losses(
    vq: Any, x: torch.Tensor, labels: torch.Tensor, *, tau: float, commit: float, consistency: float
) -> dict[str, torch.Tensor]:
    """The training losses of one batch: ``x`` float ``[B, 3, H, W]`` in [-1, 1], ``labels`` int64 ``[B, h, w]``.

    Returns ``loss`` (to minimise) and its parts: ``rec`` (L1 + MSE of the teacher-forced reconstruction),
    ``ce`` (tau * cross-entropy of the encoder), ``commit``, ``cons`` (tau * cross-entropy of the re-encoded
    reconstruction; 0 when ``consistency`` is 0), and the accuracies ``acc`` / ``cons_acc`` (nearest code == label).
    """
    codebook = vq.quantize.embedding.weight
    target = labels.reshape(-1)
    z = vq.quant_conv(vq.encoder(x))
    d2 = squared_code_distances(z, codebook)
    ce = tau * F.cross_entropy(-d2 / tau, target)
    z_flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    commitment = (z_flat - codebook[target].detach()).pow(2).sum(1).mean()
    b, h, w = labels.shape
    quant = codebook[target].reshape(b, h, w, -1).permute(0, 3, 1, 2)
    spatial = quant if vq.config.norm_type == "spatial" else None
    reconstruction = vq.decoder(vq.post_quant_conv(quant), spatial)
    rec = (reconstruction - x).abs().mean() + (reconstruction - x).pow(2).mean()
    loss = rec + ce + commit * commitment
    out = {"acc": (d2.argmin(1) == target).float().mean().detach()}
    if consistency > 0:
        again = vq.quant_conv(vq.encoder(reconstruction.clamp(-1.0, 1.0)))
        d2_again = squared_code_distances(again, codebook)
        cons = tau * F.cross_entropy(-d2_again / tau, target)
        loss = loss + consistency * cons
        out["cons_acc"] = (d2_again.argmin(1) == target).float().mean().detach()
    else:
        cons = torch.zeros(())
    out.update(loss=loss, rec=rec, ce=ce, commit=commitment, cons=cons)
    return out


def train_pattern_tokenizer(
    data_dirs: str | os.PathLike | Sequence[str | os.PathLike],
    out_path: str | os.PathLike,
    *,
    vq_config: dict[str, Any] | None = None,
    frame_size: tuple[int, int] = (72, 72),
    steps: int = 2000,
    batch_size: int = 16,
    lr: float = 2e-3,
    warmup: int = 100,
    weight_decay: float = 0.0,
    seed: int = 0,
    val_fraction: float = 0.05,
    eval_dirs: Sequence[str | os.PathLike] | None = None,
    eval_frames: int = 1024,
    eval_every: int = 500,
    table_codes: int | None = None,
    min_count: int = 2,
    merge_levels: float = 1.0,
    tau: float = 0.01,
    commit: float = 0.1,
    consistency: float = 0.3,
    consistency_from: float = 0.5,
    log_every: int = 25,
    checkpoint_every: int = 250,
    log_path: str | os.PathLike | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
    report_to: str = "none",
) -> dict[str, Any]:
    """Train a pattern-supervised VQ tokenizer; write ``out_path`` (safetensors) and its summary (``.json``).

    Arguments shared with :func:`~worldmodels.training.tokenizer.train_tokenizer` mean the same. Further:

    Args:
        table_codes: at most this many codes for exact patterns (default three quarters of the codebook); the rest
            are k-means codes for the other cells (:func:`~worldmodels.training.cell_table.build_cell_table`).
        min_count: an exact pattern must occur this often in the training frames to get a code.
        merge_levels: exact patterns within this RMS distance (0..255 levels) share a code.
        tau: temperature of the classifier over squared code distances (the margin it asks for, in squared latent
            units); its loss is scaled by ``tau`` so it stays comparable to the squared distances.
        commit: weight of ``|z - sg(e_label)|^2``.
        consistency: weight of the decode -> encode classification loss; 0 turns it off.
        consistency_from: it starts after this fraction of ``steps``.
    """
    watch = Stopwatch()
    vq_config = dict(CRAFTER_VQ_CONFIG if vq_config is None else vq_config)
    frame_size = (int(frame_size[0]), int(frame_size[1]))
    require_positive_ints(steps=steps, batch_size=batch_size, eval_frames=eval_frames)
    if isinstance(tau, bool) or not isinstance(tau, (int, float, np.integer, np.floating)) or not tau > 0 \
            or not np.isfinite(tau):
        raise ConfigError(f"tau must be a positive number, got {tau!r}")
    for name, value in (("commit", commit), ("consistency", consistency), ("merge_levels", merge_levels)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
            raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
    if not 0.0 <= consistency_from <= 1.0:
        raise ConfigError(f"consistency_from must lie in [0, 1] (a fraction of steps), got {consistency_from!r}")
    out_path = os.fspath(out_path)
    if not out_path.endswith(".safetensors"):
        raise ConfigError(f"out_path must end in .safetensors, got {os.path.basename(out_path)!r}")
    run_dir = run_dir_for(out_path)
    checkpoint_path = run_dir / CHECKPOINT_NAME
    log_path = run_dir / "log.jsonl" if log_path is None else log_path
    seed_everything(seed)

    # 1. data, the table (training frames only) and the labels of every training cell
    with watch("data"):
        datasets, pool, eval_parts, held_out = load_frames(data_dirs, frame_size=frame_size, seed=seed,
                                                           val_fraction=val_fraction, eval_dirs=eval_dirs,
                                                           eval_frames=eval_frames)  # fmt: skip
    tokenizer = VQTokenizer(vq_config, frame_size)
    cell = frame_size[0] // tokenizer.grid[0]
    with watch("table"):
        table: CellTable = build_cell_table(pool, cell=cell, n_codes=tokenizer.codebook_size,
                                            embed_dim=tokenizer.embed_dim, table_codes=table_codes,
                                            min_count=min_count, merge_levels=merge_levels, seed=seed)  # fmt: skip
        labels = label_cells(pool, table).astype(np.int16 if table.n_codes < 2**15 else np.int64)
        held_out_labels = torch.from_numpy(label_cells(held_out, table))

    # 2. model (codebook from the table), optimiser, schedule (and the checkpoint, when resuming)
    vq = tokenizer.model.train()
    with torch.no_grad():
        vq.quantize.embedding.weight.copy_(torch.from_numpy(table.codes))
    optimizer = make_adamw(vq.named_parameters(), lr=lr, weight_decay=weight_decay,
                           no_decay=lambda name, _: name.startswith("quantize."))  # fmt: skip
    scheduler = cosine_with_warmup(optimizer, warmup=warmup, total=steps)
    parts = {
        "encoder": [p for n, p in vq.named_parameters() if n.startswith(("encoder.", "quant_conv."))],
        "decoder": [p for n, p in vq.named_parameters() if n.startswith(("decoder.", "post_quant_conv."))],
        "codebook": [vq.quantize.embedding.weight],
    }
    run_config = {
        "task": "tokenizer", "supervision": "patterns", "vq_config": vq_config, "frame_size": list(frame_size),
        "steps": steps, "batch_size": batch_size, "lr": lr, "warmup": warmup, "weight_decay": weight_decay,
        "seed": seed, "val_fraction": val_fraction, "eval_frames": eval_frames, "table_codes": table_codes,
        "min_count": min_count, "merge_levels": merge_levels, "tau": tau, "commit": commit,
        "consistency": consistency, "consistency_from": consistency_from,
        "data": [dataset_identity(d) for d in datasets],
        "eval_data": [dataset_identity(d) for d, _ in eval_parts] if eval_dirs else None,
    }  # fmt: skip
    start_step, resumed_from = 0, None
    evaluations: list[dict[str, Any]] = []
    if resume and checkpoint_path.is_file():
        start_step, _, extra_meta = load_checkpoint(checkpoint_path, model=vq, optimizer=optimizer,
                                                    scheduler=scheduler, run_config=run_config)  # fmt: skip
        evaluations, resumed_from = extra_meta["evaluations"], start_step
    logger = JsonlLogger(log_path, resume_step=resumed_from, report_to=report_to)
    if resumed_from is None:
        logger.log(step=0, table=table.stats)
    stop = steps if stop_after is None else min(int(stop_after), steps)
    consistency_step = int(consistency_from * steps)

    def checkpoint(step: int) -> None:
        save_checkpoint(checkpoint_path, model=vq, optimizer=optimizer, scheduler=scheduler, step=step,
                        run_config=run_config, extra_meta={"evaluations": evaluations})  # fmt: skip

    def evaluate() -> dict[str, Any]:
        tokenizer.eval()
        scores = score_tokenizer_frames(tokenizer, held_out)  # its ids are also what the labels are compared with
        vq.train()
        result = summarize_tokenizer_scores(scores)
        result["label_agreement"] = float((scores["ids"] == held_out_labels.reshape(len(held_out), -1)).float().mean())
        return result

    # 3. training loop
    window = MetricWindow(("loss", "rec", "ce", "commit", "cons", "acc", "cons_acc"))
    last_window: dict[str, float] | None = None
    step_time = 0.0
    with Progress(steps, "tokenizer", enabled=progress, completed=start_step) as bar:
        for step in range(start_step, stop):
            began = time.perf_counter()
            rows = step_rng(seed, _SAMPLE_STREAM, step).integers(0, len(pool), batch_size)
            x = frames_to_input(pool[rows])
            y = torch.from_numpy(labels[rows].astype(np.int64))
            out = pattern_losses(vq, x, y, tau=tau, commit=commit,
                                 consistency=consistency if step >= consistency_step else 0.0)  # fmt: skip
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            for params in parts.values():
                torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            done = step + 1
            step_time += time.perf_counter() - began
            window.add(out)
            bar.advance(1, f"loss {window.latest('loss'):.4f}")
            if done % log_every == 0 or done == stop:
                last_window = window.close()
                logger.log(step=done, **last_window, lr=scheduler.get_last_lr()[0],
                           s_per_step=step_time / (done - start_step))  # fmt: skip
            if (eval_every and done % eval_every == 0) or done == steps:
                with watch("eval"):
                    result = evaluate()
                evaluations.append({"step": done, **result})
                logger.log(step=done, eval=result)
            if done % checkpoint_every == 0 or done == stop:
                checkpoint(done)

    finished = stop == steps
    summary: dict[str, Any] = {
        "kind": TOKENIZER_KIND,
        "supervision": "patterns",
        "finished": finished,
        "steps_done": stop,
        "resumed_from": resumed_from,
        "settings": {k: v for k, v in run_config.items() if k not in ("data", "eval_data")},
        "data": run_config["data"],
        "eval_data": run_config["eval_data"] or "held-out episodes of data",
        "train_frames": int(len(pool)),
        "eval_frames": int(len(held_out)),
        "table": table.stats,
        "parameters": int(sum(p.numel() for p in vq.parameters())),
        "grid": list(tokenizer.grid),
        "train": last_window,
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
        summary["bytes"] = os.path.getsize(out_path)
        write_json(summary_path(out_path), summary)
    return summary
