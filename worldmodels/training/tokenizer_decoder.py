"""Fine-tune a trained VQ tokenizer's decoder with its tokens frozen (``rlir train tokenizer --supervision decoder
--init FILE``): the encoder, ``quant_conv`` and the codebook keep their exact weights, so every frame tokenizes as
before and a world model trained on those tokens stays valid; only how the tokens are drawn improves.

Why: the pattern-supervised tokenizer of crafter-mineworld (:mod:`worldmodels.training.tokenizer_patterns`) ended
its schedule with its reconstruction loss still falling, and its held-out error sits in the decoder (decoding the
table's labels gives the same PSNR as decoding the encoder's tokens). Retraining the encoder would change the tokens
and with them the world model; training the decoder alone does not. Reading :func:`train_tokenizer_decoder`:

1. load the tokenizer to fine-tune and the frames; tokenize every training frame once with its frozen encoder (the
   tokens a world model sees and generates, so the decoder learns to draw exactly what it will be asked to draw);
2. every step draws ``batch_size`` frames (from ``(seed, step)`` alone, so a resumed run sees the same batches) and
   decodes their tokens: ``L1 + MSE`` to the frame, plus ``consistency`` x the frozen encoder's classification of the
   reconstruction against the same tokens (decode -> encode must keep returning them; the gradient reaches only the
   decoder);
3. evaluation, checkpoints and the output file are those of :func:`~worldmodels.training.tokenizer.train_tokenizer`;
   the output's encoder, ``quant_conv`` and codebook are checked bit for bit against the input's before it is written.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from worldmodels.errors import ConfigError
from worldmodels.hashing import sha256_file
from worldmodels.runtime.files import write_json
from worldmodels.runtime.progress import Progress
from worldmodels.training.common import (
    CHECKPOINT_NAME,
    JsonlLogger,
    MetricWindow,
    Stopwatch,
    checkpoint_run_config,
    cosine_with_warmup,
    dataset_identity,
    load_checkpoint,
    machine_info,
    make_adamw,
    require_positive_ints,
    run_dir_for,
    save_checkpoint,
    seed_everything,
    state_differences,
    step_rng,
    summary_path,
)
from worldmodels.training.tokenizer import (
    TOKENIZER_KIND,
    evaluate_tokenizer,
    frames_to_input,
    load_frames,
    load_tokenizer,
    save_tokenizer,
)
from worldmodels.training.tokenizer_patterns import squared_code_distances

__all__ = ["DECODER_PREFIXES", "decoder_losses", "tokenizing_differences", "train_tokenizer_decoder"]

#: the parameters that draw a frame from its codes; everything else (what decides the tokens) stays frozen
DECODER_PREFIXES = ("decoder.", "post_quant_conv.")
_SAMPLE_STREAM = 12


def tokenizing_differences(state: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> list[str]:
    """The keys outside the decoder where two tokenizer state dicts differ (missing on one side counts): empty when
    both turn every frame into the same tokens, whatever their decoders draw."""
    return state_differences(state, other, skip_prefixes=DECODER_PREFIXES)


def decoder_losses(
    vq: Any, x: torch.Tensor, ids: torch.Tensor, *, tau: float, consistency: float
) -> dict[str, torch.Tensor]:
    """The losses of one batch: ``x`` float ``[B, 3, H, W]`` in [-1, 1], ``ids`` int64 ``[B, h, w]`` its tokens.

    Returns ``loss`` (to minimise), ``rec`` (L1 + MSE of the reconstruction), ``cons`` (``tau`` x cross-entropy of the
    re-encoded reconstruction's code distances ``-|z - e_k|^2 / tau`` against ``ids``; 0 when ``consistency`` is 0)
    and ``cons_acc`` (the nearest re-encoded code equals the token).
    """
    codebook = vq.quantize.embedding.weight
    b, h, w = ids.shape
    quant = codebook[ids.reshape(-1)].reshape(b, h, w, -1).permute(0, 3, 1, 2)
    spatial = quant if vq.config.norm_type == "spatial" else None
    reconstruction = vq.decoder(vq.post_quant_conv(quant), spatial)
    rec = (reconstruction - x).abs().mean() + (reconstruction - x).pow(2).mean()
    out = {"rec": rec, "loss": rec}
    if consistency > 0:
        d2 = squared_code_distances(vq.quant_conv(vq.encoder(reconstruction.clamp(-1.0, 1.0))), codebook)
        target = ids.reshape(-1)
        cons = tau * F.cross_entropy(-d2 / tau, target)
        out.update(loss=rec + consistency * cons, cons=cons, cons_acc=(d2.argmin(1) == target).float().mean())
    return out


def _stored_summary(path: str) -> dict[str, Any]:
    """The training summary a tokenizer file stores in its metadata (empty when it stores none)."""
    from safetensors import safe_open

    with safe_open(path, framework="pt", device="cpu") as f:
        return json.loads((f.metadata() or {}).get("summary", "{}"))


def _frozen_state(vq: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in vq.state_dict().items() if not k.startswith(DECODER_PREFIXES)}


def train_tokenizer_decoder(
    init_path: str | os.PathLike,
    data_dirs: str | os.PathLike | Sequence[str | os.PathLike],
    out_path: str | os.PathLike,
    *,
    steps: int = 2000,
    batch_size: int = 16,
    lr: float = 1e-3,
    warmup: int = 100,
    seed: int = 0,
    val_fraction: float = 0.05,
    eval_dirs: Sequence[str | os.PathLike] | None = None,
    eval_frames: int = 1024,
    eval_every: int = 500,
    tau: float = 0.01,
    consistency: float = 0.3,
    log_every: int = 25,
    checkpoint_every: int = 250,
    log_path: str | os.PathLike | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
    report_to: str = "none",
) -> dict[str, Any]:
    """Fine-tune the decoder of the tokenizer ``init_path``; write ``out_path`` (safetensors) and its summary.

    With ``resume``, a ``steps`` larger than the checkpoint's extends a finished or interrupted run: its later steps
    follow the longer cosine schedule (a warm restart), as ``rlir train worldmodel`` extends a run.

    Arguments shared with :func:`~worldmodels.training.tokenizer.train_tokenizer` mean the same. Further:

    Args:
        init_path: a tokenizer file (:func:`~worldmodels.training.tokenizer.save_tokenizer`); its frame size is the
            one trained at.
        tau: temperature of the decode -> encode classification (squared latent units), as in pattern supervision.
        consistency: weight of that classification; 0 turns it off.

    Raises:
        ConfigError: bad settings, or ``out_path`` is ``init_path`` (the input is never overwritten).
    """
    watch = Stopwatch()
    require_positive_ints(steps=steps, batch_size=batch_size, eval_frames=eval_frames)
    for name, value in (("tau", tau), ("consistency", consistency)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
            raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
    if not tau > 0:
        raise ConfigError(f"tau must be positive, got {tau!r}")
    out_path, init_path = os.fspath(out_path), os.fspath(init_path)
    if not out_path.endswith(".safetensors"):
        raise ConfigError(f"out_path must end in .safetensors, got {os.path.basename(out_path)!r}")
    if os.path.exists(out_path) and os.path.samefile(out_path, init_path):
        raise ConfigError(f"--out {out_path!r} is the tokenizer being fine-tuned; write the result to another file")
    run_dir = run_dir_for(out_path)
    checkpoint_path = run_dir / CHECKPOINT_NAME
    log_path = run_dir / "log.jsonl" if log_path is None else log_path
    seed_everything(seed)

    # 1. the tokenizer (its token-deciding half frozen), the frames and their tokens
    tokenizer = load_tokenizer(init_path, chunk=64)
    vq = tokenizer.model
    frozen = _frozen_state(vq)
    for name, param in vq.named_parameters():
        param.requires_grad_(name.startswith(DECODER_PREFIXES))
    with watch("data"):
        datasets, pool, eval_parts, held_out = load_frames(data_dirs, frame_size=tokenizer.frame_size, seed=seed,
                                                           val_fraction=val_fraction, eval_dirs=eval_dirs,
                                                           eval_frames=eval_frames)  # fmt: skip
    with watch("tokenize"):
        tokens = torch.cat([tokenizer.tokenize(torch.from_numpy(pool[i : i + 1024]))
                            for i in range(0, len(pool), 1024)])  # fmt: skip
    tokenizer.train()

    # 2. optimiser over the decoder only, schedule (and the checkpoint, when resuming)
    optimizer = make_adamw(vq.named_parameters(), lr=lr, weight_decay=0.0)
    scheduler = cosine_with_warmup(optimizer, warmup=warmup, total=steps)
    decoder_params = [p for p in vq.parameters() if p.requires_grad]
    run_config = {
        "task": "tokenizer", "supervision": "decoder", "init": {"name": os.path.basename(init_path),
                                                                "sha256": sha256_file(init_path)},
        "vq_config": tokenizer.config, "frame_size": list(tokenizer.frame_size), "steps": steps,
        "batch_size": batch_size, "lr": lr, "warmup": warmup, "seed": seed, "val_fraction": val_fraction,
        "eval_frames": eval_frames, "tau": tau, "consistency": consistency,
        "data": [dataset_identity(d) for d in datasets],
        "eval_data": [dataset_identity(d) for d, _ in eval_parts] if eval_dirs else None,
    }  # fmt: skip
    start_step, resumed_from, schedules = 0, None, [{"from_step": 0, "steps": steps}]
    evaluations: list[dict[str, Any]] = []
    if resume and checkpoint_path.is_file():  # a larger `steps` extends the run on the longer cosine schedule
        saved_steps = checkpoint_run_config(checkpoint_path)["steps"]
        start_step, _, extra_meta = load_checkpoint(checkpoint_path, model=vq, optimizer=optimizer,
                                                    scheduler=scheduler, run_config=run_config,
                                                    extendable=True)  # fmt: skip
        evaluations, resumed_from = extra_meta["evaluations"], start_step
        schedules = extra_meta.get("schedules", [{"from_step": 0, "steps": saved_steps}])
        if saved_steps != steps:
            schedules = [*schedules, {"from_step": start_step, "steps": steps}]
    logger = JsonlLogger(log_path, resume_step=resumed_from, report_to=report_to)
    if resumed_from is None:
        with watch("eval"):
            evaluations.append({"step": 0, **evaluate_tokenizer(tokenizer, held_out)})
        logger.log(step=0, eval=evaluations[-1])
    stop = steps if stop_after is None else min(int(stop_after), steps)

    # 3. training loop
    window = MetricWindow(("loss", "rec", "cons", "cons_acc"))
    last_window: dict[str, float] | None = None
    step_time = 0.0
    with Progress(steps, "tokenizer decoder", enabled=progress, completed=start_step) as bar:
        for step in range(start_step, stop):
            began = time.perf_counter()
            rows = step_rng(seed, _SAMPLE_STREAM, step).integers(0, len(pool), batch_size)
            out = decoder_losses(vq, frames_to_input(pool[rows]), tokens[rows], tau=tau, consistency=consistency)
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            torch.nn.utils.clip_grad_norm_(decoder_params, 1.0)
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
                    evaluations.append({"step": done, **evaluate_tokenizer(tokenizer, held_out)})
                tokenizer.train()
                logger.log(step=done, eval=evaluations[-1])
            if done % checkpoint_every == 0 or done == stop:
                save_checkpoint(checkpoint_path, model=vq, optimizer=optimizer, scheduler=scheduler, step=done,
                                run_config=run_config,
                                extra_meta={"evaluations": evaluations, "schedules": schedules})  # fmt: skip

    finished = stop == steps
    summary: dict[str, Any] = {
        "kind": TOKENIZER_KIND,
        "supervision": "decoder",
        "finished": finished,
        "steps_done": stop,
        "resumed_from": resumed_from,
        "init": {**run_config["init"], "summary": _stored_summary(init_path)},  # how the tokens were made
        "settings": {k: v for k, v in run_config.items() if k not in ("data", "eval_data", "init")},
        "data": run_config["data"],
        "eval_data": run_config["eval_data"] or "held-out episodes of data",
        "train_frames": int(len(pool)),
        "eval_frames": int(len(held_out)),
        "trained_parameters": int(sum(p.numel() for p in decoder_params)),
        "parameters": int(sum(p.numel() for p in vq.parameters())),
        "grid": list(tokenizer.grid),
        "train": last_window,
        "s_per_step": step_time / max(1, stop - start_step),
        "schedules": schedules,
        "evaluations": evaluations,
        "final": evaluations[-1] if finished else None,
        "wall_time": watch.report(),
        "machine": machine_info(),
    }
    if finished:
        changed = [k for k, v in _frozen_state(vq).items() if not torch.equal(v, frozen[k])]
        if changed:  # the optimiser holds only decoder parameters: this would be a bug, never a user's error
            raise RuntimeError(f"decoder fine-tuning changed token-deciding weights: {changed[:5]}")
        tokenizer.eval()
        save_tokenizer(tokenizer, out_path, summary=summary)
        summary["sha256"] = sha256_file(out_path)
        summary["bytes"] = os.path.getsize(out_path)
        write_json(summary_path(out_path), summary)
    return summary
