"""Train a MineWorld-architecture world model on recorded trajectories (``rlir train worldmodel``).

Reading top to bottom, :func:`train_worldmodel`:

1. tokenizes every frame once with the trained VQ tokenizer (batched, no gradients) and caches the token grids in
   ``<out>.tokens.npz``, keyed by the sha256 of every shard and of the tokenizer file (a changed recording or
   tokenizer is tokenized again);
2. splits the episodes into training and validation episodes (from ``seed``) and enumerates every window of
   ``window_frames`` consecutive frames inside an episode;
3. turns a window into the MineWorld sequence (:func:`build_sequences`)::

       [frame_0] [action_0] [frame_1] [action_1] ... [frame_{T-1}]

   where ``action_t`` is the 3 tokens ``[bos, a_t, eos]`` of the action taken at frame ``t``, whose result is
   ``frame_{t+1}`` (the official order ``img_0 | act | img_1``, the layout ``MineWorld`` decodes with);
4. minimises next-token cross-entropy on image tokens only (:func:`image_token_loss`): action tokens are inputs,
   never targets. The softmax runs over the image vocabulary, the distribution ``MineWorld`` samples frames from;
5. AdamW (weight decay on matrices), linear warm-up + cosine decay, gradient clipping at 1.0, fp32 on CPU; the data of
   step ``k`` depend only on ``(seed, k)``, so a resumed run (``resume=True``) ends with the same weights as an
   uninterrupted one. A warm start (``init_path``: a trained model's transformer, a fresh optimiser and schedule)
   draws its batches from a stream keyed by the init file too, so it does not replay the batches that trained it;
6. writes the transformer and the tokenizer together (:func:`worldmodels.mineworld.checkpoint.save_safetensors`,
   loadable by ``MineWorld.from_checkpoint``) and a JSON summary (data, settings, losses, validation, wall time,
   machine) next to it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from worldmodels.actions import crafter
from worldmodels.data.shards import ShardDataset
from worldmodels.errors import ConfigError, DataError
from worldmodels.hashing import sha256_file, sha256_json
from worldmodels.mineworld.checkpoint import save_safetensors
from worldmodels.mineworld.config import MineWorldConfig
from worldmodels.mineworld.model import MineWorld
from worldmodels.mineworld.transformer import Transformer
from worldmodels.mineworld.vq import VQTokenizer
from worldmodels.runtime.charts import Series, line_chart, log_records, save_panels
from worldmodels.runtime.files import atomic_output, write_json
from worldmodels.runtime.progress import Progress
from worldmodels.training.common import (
    CHECKPOINT_NAME,
    JsonlLogger,
    Stopwatch,
    as_dirs,
    checkpoint_run_config,
    cosine_with_warmup,
    dataset_identity,
    init_record,
    load_checkpoint,
    machine_info,
    make_adamw,
    require_init_architecture,
    require_positive_ints,
    run_dir_for,
    save_checkpoint,
    seed_everything,
    split_episodes,
    step_rng,
    summary_path,
)
from worldmodels.training.tokenizer import read_tokenizer_file
from worldmodels.training.tokenizer_decoder import tokenizing_differences

__all__ = [
    "AR_CANDIDATES",
    "AR_SIZES",
    "CRAFTER_AR_CONFIG",
    "TokenData",
    "build_sequences",
    "crafter_ar_config",
    "draw_learning_curves",
    "evaluate_windows",
    "image_token_loss",
    "image_token_nll",
    "token_cache_path",
    "tokenize_datasets",
    "train_worldmodel",
    "window_starts",
]


def crafter_ar_config(
    *, hidden: int, layers: int, heads: int = 4, kv_heads: int = 2, intermediate: int | None = None,
    codebook: int = 512, context_frames: int = 8, name: str = "crafter-mineworld",
) -> MineWorldConfig:  # fmt: skip
    """A MineWorld config for Crafter: 72x72 frames, a 9x9 token grid, Crafter's 3-token actions, 5 fps.

    ``vocab_size`` is the codebook plus Crafter's 19 action ids, padded to a multiple of 8; the context holds
    ``context_frames`` frame-action pairs; ``intermediate`` defaults to ``8/3 * hidden`` rounded up to 64.
    """
    if intermediate is None:
        intermediate = -(-(8 * hidden // 3) // 64) * 64
    pair = 81 + crafter.TOKENS_PER_ACTION
    return MineWorldConfig(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        num_hidden_layers=layers,
        max_position_embeddings=context_frames * pair,
        vocab_size=-(-(codebook + crafter.ACTION_VOCAB_SIZE) // 8) * 8,
        image_grid=(9, 9),
        image_vocab_size=codebook,
        frame_size=(72, 72),
        action_domain="crafter",
        fps=5.0,
        name=name,
    )


AR_SIZES: dict[str, dict[str, int]] = {
    "small": {"hidden": 192, "layers": 3, "heads": 4, "kv_heads": 2},
    "medium": {"hidden": 256, "layers": 4, "heads": 4, "kv_heads": 2},
    "wide": {"hidden": 256, "layers": 3, "heads": 4, "kv_heads": 4},
}
"""The Crafter transformer sizes compared for the CPU training budget (:func:`crafter_ar_config` arguments)."""

AR_CANDIDATES: dict[str, MineWorldConfig] = {name: crafter_ar_config(**size) for name, size in AR_SIZES.items()}
""":data:`AR_SIZES` as configs for the 512-code :data:`~worldmodels.training.tokenizer.CRAFTER_VQ_CONFIG`."""

CRAFTER_AR_CONFIG: MineWorldConfig = AR_CANDIDATES["small"]
"""The default Crafter world model: hidden 192, 3 layers, 4 heads, 2 KV heads, SwiGLU 512, 8 frames of context (672
positions), 1.4M parameters. On the 2-core CPU it reached the validation loss of ``medium`` (4 layers of 256) after
the same number of steps at half the time per step, and it decodes a frame's 81 tokens about twice as fast."""

_SAMPLE_STREAM, _VAL_STREAM, _SPLIT_STREAM = 11, 12, 13
_IGNORE = -100


# -- tokens -----------------------------------------------------------------------------------------------------------


@dataclass
class TokenData:
    """Every frame of one or more recordings as token grids, with the actions and episode boundaries.

    Frames of all datasets are laid end to end in manifest order; ``episode_lengths`` covers them all.
    """

    tokens: np.ndarray
    """``int16`` or ``int32`` ``[F, h*w]`` token ids (row-major grid)."""
    actions: np.ndarray
    """``int64[F]`` the action taken at each frame (-1 on an episode's last frame)."""
    episode_lengths: np.ndarray
    """``int64[E]``."""
    key: str
    """sha256 of the shards and the tokenizer the tokens came from."""
    reused: bool = False
    """Whether they were read from the cache."""

    @property
    def episode_starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.episode_lengths)[:-1]]).astype(np.int64)


def token_cache_path(out_path: str | os.PathLike) -> Path:
    """Where the token cache of a world model written to ``out_path`` lives: ``<stem>.tokens.npz`` next to it."""
    out_path = Path(out_path)
    return out_path.parent / f"{out_path.stem}.tokens.npz"


@torch.no_grad()
def tokenize_datasets(
    tokenizer: VQTokenizer,
    datasets: Sequence[ShardDataset],
    *,
    tokenizer_sha256: str,
    cache_path: str | os.PathLike | None = None,
    chunk: int = 32,
    progress: bool = False,
) -> TokenData:
    """Token grids of every frame of ``datasets``, read from ``cache_path`` when it was made from the same shards and
    tokenizer, else computed (``chunk`` frames per encoder call: larger chunks are slower on CPU, their activations
    no longer fit in cache) and written there atomically."""
    key = sha256_json({
        "datasets": [[s.sha256 for s in d.shards] for d in datasets],
        "tokenizer": tokenizer_sha256,
        "grid": list(tokenizer.grid),
    })  # fmt: skip
    cache_path = None if cache_path is None else Path(cache_path)
    if cache_path is not None and cache_path.is_file():
        try:
            with np.load(cache_path, allow_pickle=False) as cached:
                if str(cached["key"]) == key:
                    return TokenData(cached["tokens"], cached["actions"], cached["episode_lengths"], key, reused=True)
        except (OSError, ValueError, KeyError):
            pass  # unreadable or foreign: tokenize again and replace it
    dtype = np.int16 if tokenizer.codebook_size <= np.iinfo(np.int16).max + 1 else np.int32
    hw = tokenizer.grid[0] * tokenizer.grid[1]
    total = sum(len(d) for d in datasets)
    tokens = np.empty((total, hw), dtype=dtype)
    actions = np.empty(total, dtype=np.int64)
    lengths = np.concatenate([d.episode_lengths for d in datasets]).astype(np.int64)
    tokenizer.eval()
    row = 0
    with Progress(total, "tokenizing", enabled=progress) as bar:
        for dataset in datasets:
            for episode in dataset.episodes():
                n = len(episode)
                for start in range(0, n, chunk):
                    frames = torch.from_numpy(episode.frames[start : start + chunk])
                    ids = tokenizer.tokenize(frames, chunk=chunk)
                    tokens[row + start : row + start + len(frames)] = ids.reshape(len(frames), hw).numpy()
                    bar.advance(len(frames))
                actions[row : row + n] = episode.actions
                row += n
    data = TokenData(tokens, actions, lengths, key)
    if cache_path is not None:
        with atomic_output(cache_path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, tokens=tokens, actions=actions, episode_lengths=lengths, key=np.array(key))
    return data


# -- sequences and loss -----------------------------------------------------------------------------------------------


def window_starts(episode_lengths: np.ndarray, episodes: np.ndarray, window_frames: int) -> np.ndarray:
    """Global frame index of the first frame of every window of ``window_frames`` consecutive frames inside one of
    ``episodes`` (all its actions but the last frame's are real actions)."""
    starts = np.concatenate([[0], np.cumsum(episode_lengths)[:-1]]).astype(np.int64)
    parts = [starts[e] + np.arange(max(0, int(episode_lengths[e]) - window_frames + 1)) for e in episodes]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def build_sequences(frame_tokens: torch.Tensor, actions: torch.Tensor, config: MineWorldConfig) -> torch.Tensor:
    """MineWorld token sequences of windows: ``frame_tokens int[B, T, h*w]`` and the ``T - 1`` actions between
    them ``int[B, T - 1]`` (compact, ``actions[:, t]`` taken at frame ``t``) -> ``int64[B, T*h*w + (T-1)*A]``
    laid out ``[frame_0][action_0][frame_1] ... [frame_{T-1}]``."""
    b, t, hw = frame_tokens.shape
    if hw != config.tokens_per_frame or tuple(actions.shape) != (b, t - 1):
        raise ConfigError(
            f"windows of {tuple(frame_tokens.shape)} tokens need actions of shape {(b, t - 1)} and "
            f"{config.tokens_per_frame} tokens per frame; got actions {tuple(actions.shape)}"
        )
    action_ids = config.domain.to_tokens(actions.cpu().numpy(), offset=config.action_vocab_offset)
    action_ids = torch.as_tensor(action_ids, dtype=torch.long)
    frame_tokens = frame_tokens.long()
    pairs = torch.cat([frame_tokens[:, :-1], action_ids], dim=-1).reshape(b, -1)
    return torch.cat([pairs, frame_tokens[:, -1]], dim=-1)


def _logits_and_targets(transformer: Transformer, ids: torch.Tensor, image_vocab_size: int):
    logits = transformer.head(transformer.hidden_states(ids[:, :-1]), vocab_limit=image_vocab_size)
    targets = ids[:, 1:]
    return logits, torch.where(targets < image_vocab_size, targets, torch.full_like(targets, _IGNORE))


def image_token_loss(transformer: Transformer, ids: torch.Tensor, image_vocab_size: int) -> torch.Tensor:
    """Mean next-token cross-entropy over the image-token targets of ``ids [B, S]``.

    The logits at position ``i`` predict token ``i + 1``; only targets below ``image_vocab_size`` count (action
    tokens are conditioning), and the softmax runs over the ``image_vocab_size`` image logits.
    """
    logits, targets = _logits_and_targets(transformer, ids, image_vocab_size)
    return F.cross_entropy(logits.reshape(-1, image_vocab_size), targets.reshape(-1), ignore_index=_IGNORE)


@torch.no_grad()
def image_token_nll(
    transformer: Transformer, ids: torch.Tensor, image_vocab_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-target ``(nll, correct, is_image)``, each ``[B, S - 1]`` (zeros where the target is not an image token):
    the terms of :func:`image_token_loss` and whether the arg-max logit is the target."""
    logits, targets = _logits_and_targets(transformer, ids, image_vocab_size)
    is_image = targets != _IGNORE
    nll = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=_IGNORE, reduction="none")
    correct = (logits.argmax(-1) == targets) & is_image
    return nll, correct, is_image


@torch.no_grad()
def evaluate_windows(
    transformer: Transformer, ids: torch.Tensor, config: MineWorldConfig, *, batch_size: int = 16
) -> dict[str, float]:
    """Validation metrics over sequences ``ids [N, S]`` (from :func:`build_sequences`).

    ``loss`` / ``acc``: mean cross-entropy and arg-max accuracy over every image-token target; ``loss_next`` /
    ``acc_next``: over the frames after the first (generation given context and action, what the env does);
    ``copy_acc``: accuracy of repeating the previous frame's token at the same grid cell (a baseline for
    ``acc_next``).
    """
    was_training = transformer.training
    transformer.eval()
    hw, pair = config.tokens_per_frame, config.tokens_per_pair
    sums = {"loss": 0.0, "acc": 0.0, "loss_next": 0.0, "acc_next": 0.0}
    counts = {"all": 0, "next": 0}
    copy_hits = 0
    for part in ids.split(batch_size):
        nll, correct, is_image = image_token_nll(transformer, part, config.image_vocab_size)
        target_pos = torch.arange(1, part.shape[1])
        later = (target_pos >= pair)[None] & is_image  # targets in frames 1..T-1
        sums["loss"] += float(nll.sum())
        sums["acc"] += float(correct.sum())
        sums["loss_next"] += float((nll * later).sum())
        sums["acc_next"] += float((correct & later).sum())
        counts["all"] += int(is_image.sum())
        counts["next"] += int(later.sum())
        t = (part.shape[1] + config.tokens_per_action) // pair
        frames = torch.stack([part[:, k * pair : k * pair + hw] for k in range(t)], dim=1)
        copy_hits += int((frames[:, 1:] == frames[:, :-1]).sum())
    transformer.train(was_training)
    return {
        "loss": sums["loss"] / max(1, counts["all"]),
        "acc": sums["acc"] / max(1, counts["all"]),
        "loss_next": sums["loss_next"] / max(1, counts["next"]),
        "acc_next": sums["acc_next"] / max(1, counts["next"]),
        "copy_acc": copy_hits / max(1, counts["next"]),
    }


def _gather_windows(data: TokenData, starts: np.ndarray, window_frames: int, config: MineWorldConfig) -> torch.Tensor:
    frames = data.tokens[starts[:, None] + np.arange(window_frames)]
    actions = data.actions[starts[:, None] + np.arange(window_frames - 1)]
    return build_sequences(torch.from_numpy(frames.astype(np.int64)), torch.from_numpy(actions), config)


# -- training ---------------------------------------------------------------------------------------------------------


def draw_learning_curves(log_path: str | os.PathLike, png_path: str | os.PathLike) -> Path:
    """Draw a world-model run's ``log.jsonl`` to ``png_path``: the training and validation loss over steps, and the
    validation next-frame token accuracy against the copy-the-last-frame baseline.

    Raises:
        DataError: the log holds no validation.
    """
    train_loss, val_loss, val_acc, copy_acc = [], [], [], []
    for record in log_records(log_path):
        step = record.get("step")
        if not isinstance(step, int):
            continue
        if isinstance(record.get("loss"), (int, float)):
            train_loss.append((step, float(record["loss"])))
        val = record.get("val")
        if isinstance(val, dict) and {"loss_next", "acc_next", "copy_acc"} <= val.keys():
            val_loss.append((step, float(val["loss_next"])))
            val_acc.append((step, float(val["acc_next"])))
            copy_acc.append((step, float(val["copy_acc"])))
    if not val_loss:
        raise DataError(f"{log_path} holds no validation record; train with eval_every > 0 or let the run finish")
    blue, red, grey = (66, 133, 244), (234, 67, 53), (120, 120, 120)
    return save_panels([
        line_chart([Series("training loss", blue, train_loss), Series("validation loss (next frames)", red, val_loss)],
                   title="world model: next-token cross-entropy", x_label="step"),
        line_chart([Series("validation token accuracy (next frames)", red, val_acc),
                    Series("copy the last frame", grey, copy_acc)],
                   title="world model: next-frame token accuracy", x_label="step"),
    ], png_path)  # fmt: skip


def warm_start(model: MineWorld, init_path: str | os.PathLike, tokenizer_path: str | os.PathLike) -> dict[str, Any]:
    """Load the transformer of the MineWorld file ``init_path`` into ``model`` (whose tokenizer is already
    ``tokenizer_path``'s); returns ``{"path", "sha256", "training"}``: ``training`` is the file's training summary
    (``<stem>.json``) when it describes this very file, else None, so a chain of warm starts keeps its history.

    Raises ConfigError when the architectures differ or the file's tokenizer turns frames into other tokens than
    ``tokenizer_path`` (its transformer learnt to predict those).
    """
    init = MineWorld.from_checkpoint(init_path)
    require_init_architecture(model.config.to_dict(), init.config.to_dict(), init_path)
    differing = tokenizing_differences(model.tokenizer.model.state_dict(), init.tokenizer.model.state_dict())
    if differing:
        raise ConfigError(f"--init {init_path} was trained on the tokens of another tokenizer than "
                          f"{tokenizer_path} ({', '.join(differing[:3])} differ); pass the tokenizer it was trained "
                          "with (or one whose decoder alone was fine-tuned from it)")  # fmt: skip
    model.transformer.load_state_dict(init.transformer.state_dict(), strict=True)
    model.sampling = init.sampling  # its default decoding, as a post-trained model keeps its base's
    return init_record(init_path)


def train_worldmodel(
    data_dirs: str | os.PathLike | Sequence[str | os.PathLike],
    tokenizer_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    config: MineWorldConfig | None = None,
    steps: int = 2000,
    batch_size: int = 8,
    window_frames: int | None = None,
    lr: float = 1e-3,
    warmup: int = 100,
    weight_decay: float = 0.1,
    seed: int = 0,
    val_fraction: float = 0.05,
    val_windows: int = 128,
    eval_every: int = 250,
    log_every: int = 25,
    checkpoint_every: int = 250,
    log_path: str | os.PathLike | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    compile: bool = False,
    tokenize_chunk: int = 32,
    progress: bool = True,
    report_to: str = "none",
    init_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Train a MineWorld-architecture transformer on tokenized recordings; write ``out_path`` and its summary.

    Args:
        data_dirs: trajectory-shard directories (``rlir record crafter``).
        tokenizer_path: a tokenizer written by ``rlir train tokenizer`` (frozen here, stored in the output).
        out_path: the MineWorld ``.safetensors`` to write (transformer + tokenizer + configs); the run directory
            ``<stem>.run/`` next to it holds the checkpoint, (by default) the log and the learning curves
            (``curves.png``, :func:`draw_learning_curves`), ``<stem>.tokens.npz`` the tokens.
        config: the architecture; default :data:`CRAFTER_AR_CONFIG`. Its frame size, grid and image vocabulary must
            match the tokenizer, its action domain the recording.
        steps: optimiser steps.
        batch_size: windows per step.
        window_frames: frames per training window; default: as many as ``max_position_embeddings`` holds.
        lr: peak AdamW learning rate (linear warm-up over ``warmup`` steps, cosine decay to ``lr / 10``).
        weight_decay: AdamW weight decay of the weight matrices (not of norms).
        seed: seeds the weights, the episode split, the validation windows and every batch.
        val_fraction: share of episodes held out for validation.
        val_windows: validation windows (drawn once from the validation episodes).
        eval_every: validate every this many steps (and at the end); 0: only at the end.
        log_every: log the training loss every this many steps.
        checkpoint_every: write the resumable checkpoint every this many steps (and when stopping).
        log_path: JSON Lines log; default ``<run dir>/log.jsonl``.
        resume: continue from the run directory's checkpoint (same settings, data and tokenizer required); without a
            checkpoint, start from scratch. A larger ``steps`` than the checkpoint's extends a run (finished or not):
            the batches of the added steps are those a run planned that long draws, the learning rate jumps to that
            run's schedule (a warm restart when the old one had decayed) and ``schedules`` in the summary records it.
        stop_after: stop (after checkpointing) once this many steps are done, as an interruption would; outputs are
            written only when all ``steps`` are done.
        compile: ``torch.compile`` the loss computation (same results up to float rounding).
        tokenize_chunk: frames per tokenizer call when building the token cache.
        progress: show progress bars.
        report_to: also log scalars to ``"tensorboard"`` or ``"wandb"``.
        init_path: warm start: a MineWorld ``.safetensors`` whose transformer (of this ``config``, trained on this
            tokenizer's tokens: its encoder and codebook must equal ``tokenizer_path``'s) the run starts from, with a
            fresh optimiser and schedule; step 0's validation scores it. Pass the init run's data and seed (the seed
            splits the episodes) so that its validation episodes stay unseen. The written model keeps the init's
            default sampling; the summary records the init under ``init``.

    Returns:
        The summary (also written as JSON): data, settings, losses, validation curve, throughput, wall time, machine.
        ``finished`` is False when ``stop_after`` ended the run early.
    """
    watch = Stopwatch()
    config = CRAFTER_AR_CONFIG if config is None else config
    require_positive_ints(steps=steps, batch_size=batch_size, val_windows=val_windows)
    largest = (config.max_position_embeddings + config.tokens_per_action) // config.tokens_per_pair
    window_frames = largest if window_frames is None else int(window_frames)
    if not 2 <= window_frames <= largest:
        raise ConfigError(
            f"window_frames={window_frames} must lie in [2, {largest}]: {config.name} holds {largest} frames "
            f"({config.max_position_embeddings} positions, {config.tokens_per_pair} per frame-action pair)"
        )
    out_path = Path(out_path)
    if out_path.suffix != ".safetensors":
        raise ConfigError(f"out_path must end in .safetensors, got {out_path.name!r}")
    run_dir = run_dir_for(out_path)
    checkpoint_path = run_dir / CHECKPOINT_NAME
    log_path = run_dir / "log.jsonl" if log_path is None else Path(log_path)
    seed_everything(seed)

    # 1. the model: a fresh transformer (or the warm start's) next to the trained, frozen tokenizer
    vq_state, vq_config, frame_size = read_tokenizer_file(tokenizer_path)
    if tuple(frame_size) != tuple(config.frame_size):
        raise ConfigError(f"the tokenizer takes {tuple(frame_size)} frames but {config.name} has frame_size "
                          f"{config.frame_size}")  # fmt: skip
    model = MineWorld.from_config(config, vq_config)
    model.tokenizer.model.load_state_dict(vq_state, strict=True)
    init = None if init_path is None else warm_start(model, init_path, tokenizer_path)
    model.tokenizer.requires_grad_(False).eval()
    transformer = model.transformer.train()
    tokenizer_sha256 = sha256_file(tokenizer_path)

    # 2. tokens (cached), episode split and windows
    datasets = [ShardDataset(d, max_cached_shards=1) for d in as_dirs(data_dirs)]
    for dataset in datasets:
        if tuple(dataset.frame_shape[:2]) != tuple(config.frame_size):
            raise DataError(f"{dataset.root} holds {tuple(dataset.frame_shape[:2])} frames but {config.name} takes "
                            f"{config.frame_size}")  # fmt: skip
    with watch("tokenize"):
        data = tokenize_datasets(model.tokenizer, datasets, tokenizer_sha256=tokenizer_sha256,
                                 cache_path=token_cache_path(out_path), chunk=tokenize_chunk,
                                 progress=progress)  # fmt: skip
    valid = data.actions >= 0
    config.domain.validate(data.actions[valid])  # a recording of another action domain fails here
    train_episodes, val_episodes = split_episodes(len(data.episode_lengths), val_fraction, seed, _SPLIT_STREAM)
    train_starts = window_starts(data.episode_lengths, train_episodes, window_frames)
    val_starts = window_starts(data.episode_lengths, val_episodes, window_frames)
    if len(train_starts) == 0 or len(val_starts) == 0:
        raise DataError(f"no {'training' if len(train_starts) == 0 else 'validation'} episode has the "
                        f"{window_frames} frames a window needs; record more data or shorten "
                        "window_frames")  # fmt: skip
    val_pick = np.sort(step_rng(seed, _VAL_STREAM).choice(len(val_starts), min(val_windows, len(val_starts)),
                                                         replace=False))  # fmt: skip
    val_ids = _gather_windows(data, val_starts[val_pick], window_frames, config)

    # 3. optimiser, schedule, checkpoint
    optimizer = make_adamw(transformer.named_parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = cosine_with_warmup(optimizer, warmup=warmup, total=steps)
    run_config = {
        "task": "worldmodel", "config": config.to_dict(), "steps": steps, "batch_size": batch_size,
        "window_frames": window_frames, "lr": lr, "warmup": warmup, "weight_decay": weight_decay, "seed": seed,
        "val_fraction": val_fraction, "val_windows": val_windows, "tokenizer_sha256": tokenizer_sha256,
        "data": [dataset_identity(d) for d in datasets],
    }  # fmt: skip
    sample_stream = _SAMPLE_STREAM
    if init is not None:
        run_config["init_sha256"] = init["sha256"]
        sample_stream = int(init["sha256"][:15], 16)  # a stream of its own per init file (stream ids < 2**60)
    start_step, resumed_from, validations, schedules = 0, None, [], [{"from_step": 0, "steps": steps}]
    if resume and checkpoint_path.is_file():
        saved_steps = checkpoint_run_config(checkpoint_path)["steps"]
        start_step, _, extra_meta = load_checkpoint(checkpoint_path, model=transformer, optimizer=optimizer,
                                                    scheduler=scheduler, run_config=run_config,
                                                    extendable=True)  # fmt: skip
        validations, resumed_from = extra_meta["validations"], start_step
        schedules = extra_meta.get("schedules", [{"from_step": 0, "steps": saved_steps}])
        if saved_steps != steps:
            schedules = [*schedules, {"from_step": start_step, "steps": steps}]
    logger = JsonlLogger(log_path, resume_step=resumed_from, report_to=report_to)
    stop = steps if stop_after is None else min(int(stop_after), steps)
    loss_fn = torch.compile(image_token_loss) if compile else image_token_loss

    def checkpoint(step: int) -> None:
        save_checkpoint(checkpoint_path, model=transformer, optimizer=optimizer, scheduler=scheduler, step=step,
                        run_config=run_config, extra_meta={"validations": validations,
                                                           "schedules": schedules})  # fmt: skip

    def validate(step: int) -> None:
        with watch("validate"):
            result = evaluate_windows(transformer, val_ids, config)
        validations.append({"step": step, **result})
        logger.log(step=step, val=result)

    if start_step == 0 and stop > 0:
        validate(0)

    # 4. training loop
    seq_len = val_ids.shape[1]
    losses: list[float] = []
    last_train_loss, step_time = None, 0.0
    with Progress(steps, "world model", enabled=progress, completed=start_step) as bar:
        for step in range(start_step, stop):
            began = time.perf_counter()
            rng = step_rng(seed, sample_stream, step)
            ids = _gather_windows(data, train_starts[rng.integers(0, len(train_starts), batch_size)], window_frames,
                                  config)  # fmt: skip
            loss = loss_fn(transformer, ids, config.image_vocab_size)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            step_time += time.perf_counter() - began
            done = step + 1
            losses.append(loss.item())
            bar.advance(1, f"loss {losses[-1]:.3f}")
            if done % log_every == 0 or done == stop:
                last_train_loss = float(np.mean(losses))
                s_per_step = step_time / (done - start_step)
                logger.log(step=done, loss=last_train_loss, lr=scheduler.get_last_lr()[0],
                           grad_norm=float(grad_norm), s_per_step=s_per_step,
                           tokens_per_s=batch_size * seq_len / s_per_step)  # fmt: skip
                losses = []
            if (eval_every and done % eval_every == 0) or done == steps:
                validate(done)
            if done % checkpoint_every == 0 or done == stop:
                checkpoint(done)

    finished = stop == steps
    s_per_step = step_time / max(1, stop - start_step)
    summary: dict[str, Any] = {
        "kind": "rlir.mineworld-training",
        "finished": finished,
        "steps_done": stop,
        "resumed_from": resumed_from,
        "schedules": schedules,
        "config": config.to_dict(),
        "settings": {k: v for k, v in run_config.items() if k not in ("config", "data")},
        "data": run_config["data"],
        "tokenizer": str(tokenizer_path),
        "init": init,
        "token_cache": {"path": str(token_cache_path(out_path)), "reused": data.reused, "key": data.key},
        "episodes": {"train": int(len(train_episodes)), "val": int(len(val_episodes))},
        "windows": {"train": int(len(train_starts)), "val": int(len(val_ids)), "tokens_per_window": int(seq_len)},
        "parameters": int(sum(p.numel() for p in transformer.parameters())),
        "train_loss": last_train_loss,
        "validations": validations,
        "final": validations[-1] if finished and validations else None,
        "s_per_step": s_per_step,
        "tokens_per_s": batch_size * seq_len / s_per_step if stop > start_step else None,
        "tokens_seen": int(stop * batch_size * seq_len),
        "wall_time": watch.report(),
        "machine": machine_info(),
        "compile": compile,
    }
    if finished:
        model.eval()
        save_safetensors(model, out_path)
        summary["sha256"] = sha256_file(out_path)
        summary["curves"] = str(draw_learning_curves(log_path, run_dir / "curves.png"))
        write_json(summary_path(out_path), summary)
    return summary
