"""Train an NFD world model (``rlir train nfd``): the frame autoencoder, then the diffusion transformer.

Reading top to bottom, :func:`train_nfd`:

1. opens the data (:func:`open_source`): Crafter trajectory shards, a MineWorld clip folder (``<prefix>_<N>.mp4`` +
   ``.jsonl``) or VPT contractor recordings, as episodes of frames and compact actions (``actions[k]`` is taken at
   frame ``k`` and leads to frame ``k + 1``), and splits the episodes into training and validation ones (from
   ``seed``);
2. trains the autoencoder (:func:`train_autoencoder`, skipped when ``autoencoder=`` names a trained one or a finished
   one for the same settings exists): ``L1 + MSE`` of the reconstruction of posterior samples plus ``kl_weight``
   times the KL to ``N(0, I)`` per latent element, then the per-channel latent statistics; written to
   ``<out stem>.autoencoder.safetensors``;
3. encodes every frame once (posterior means, normalised) into ``<out stem>.latents.npz``, keyed by the data and
   the autoencoder;
4. trains the transformer (:func:`train_transformer`) on windows of ``window_frames`` latents: every frame gets its
   own flow time ``t ~ sigmoid(N(0, 1))`` (SD3's logit-normal; diffusion forcing), and with probability
   ``context_prob`` a random prefix of the window is set to the context noise level ``t_ctx`` instead (exactly how
   the frames before a generated one look at inference) and left out of the loss. The loss is the mean squared
   error of the predicted velocity ``v = eps - z`` over the other frames (:func:`flow_matching_loss`);
5. AdamW (weight decay on matrices), warm-up + cosine, gradient clipping at 1.0, fp32; the data, times and noise of
   step ``k`` depend only on ``(seed, k)``, so a resumed run ends with the same weights as an uninterrupted one (a
   warm start, ``init_path``: a trained NFD's transformer and autoencoder, a fresh optimiser and schedule, draws them
   from streams keyed by the init file too, so it does not replay the batches that trained it); under
   ``torchrun`` (gloo on CPU) every rank takes its share of each global batch and gradients are averaged (DDP), so
   the update equals the single-process one up to float summation order;
6. validates (loss on fixed windows, times and noise; at the end the PSNR of sampled next frames against the
   autoencoder's reconstruction of the real one, next to the copy-the-last-frame baseline), and writes the model
   (:func:`worldmodels.nfd.save_nfd`, loadable by ``NFD.from_checkpoint`` and ``rlir`` envs) with a JSON summary.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldmodels.actions import crafter, get_domain, minecraft
from worldmodels.data.clips import MineWorldClips, VPTDataset
from worldmodels.data.resize import resize_linear_uint8
from worldmodels.data.shards import ShardDataset
from worldmodels.errors import CheckpointError, ConfigError, DataError, MissingFileError
from worldmodels.hashing import sha256_file, sha256_json
from worldmodels.mineworld.checkpoint import read_safetensors, state_dict_diff
from worldmodels.nfd import (
    CRAFTER_AE_CONFIG,
    NFD,
    FrameAutoencoder,
    NFDConfig,
    NFDSampling,
    get_preset,
    is_nfd_checkpoint,
    save_nfd,
)
from worldmodels.runtime.distributed import Distributed
from worldmodels.runtime.files import atomic_output, write_json
from worldmodels.runtime.progress import Progress
from worldmodels.training.common import (
    CHECKPOINT_NAME,
    JsonlLogger,
    Stopwatch,
    as_dirs,
    cosine_with_warmup,
    init_record,
    load_checkpoint,
    machine_info,
    make_adamw,
    require_init_architecture,
    run_dir_for,
    save_checkpoint,
    seed_everything,
    split_episodes,
    state_differences,
    step_generator,
    step_rng,
    summary_path,
)
from worldmodels.training.worldmodel import window_starts
from worldmodels.weights import save_safetensors_file

__all__ = [
    "AUTOENCODER_KIND",
    "ClipSource",
    "FrameSource",
    "LatentData",
    "ShardSource",
    "autoencoder_loss",
    "encode_source",
    "evaluate_autoencoder",
    "evaluate_generation",
    "flow_matching_loss",
    "gather_windows",
    "load_autoencoder",
    "open_source",
    "sample_flow_times",
    "save_autoencoder",
    "train_autoencoder",
    "train_nfd",
    "train_transformer",
]

AUTOENCODER_KIND = "rlir.nfd-autoencoder"
_AE_STREAM, _AE_NOISE_STREAM, _AE_EVAL_STREAM, _SPLIT_STREAM, _AE_POOL_STREAM = 41, 42, 43, 44, 49
_DIT_STREAM, _DIT_NOISE_STREAM, _VAL_STREAM, _GEN_STREAM = 45, 46, 47, 48
_AE_WARMUP = 50


# -- data -------------------------------------------------------------------------------------------------------------


class FrameSource:
    """Episodes of frames (``uint8[n, H, W, 3]``) and compact actions (``int64[n, *A]``, ``actions[k]`` taken at frame
    ``k``; the last frame's is -1), numbered globally."""

    domain: str
    frame_size: tuple[int, int]
    episode_lengths: np.ndarray

    def episode(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        """What identifies the content (keys the latent cache and the run configuration)."""
        raise NotImplementedError

    @property
    def n_episodes(self) -> int:
        return len(self.episode_lengths)

    def gather(self, episodes: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
        """Frames of ``episodes`` laid end to end, or only rows ``index`` of that sequence (episodes read once)."""
        episodes = np.asarray(episodes, dtype=np.int64)
        lengths = self.episode_lengths[episodes]
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        rows = np.arange(offsets[-1]) if index is None else np.asarray(index, dtype=np.int64)
        out = np.empty((len(rows), *self.frame_size, 3), dtype=np.uint8)
        owner = np.searchsorted(offsets, rows, side="right") - 1
        for k in np.unique(owner):
            where = np.flatnonzero(owner == k)
            out[where] = self.episode(int(episodes[k]))[0][rows[where] - offsets[k]]
        return out


class ShardSource(FrameSource):
    """Trajectory-shard directories (``rlir record crafter``) as one source; episodes in directory, then manifest
    order."""

    def __init__(self, dirs: Sequence[str | os.PathLike]):
        self.datasets = [ShardDataset(d, max_cached_shards=1) for d in as_dirs(dirs)]
        shapes = {tuple(d.frame_shape) for d in self.datasets}
        if len(shapes) != 1:
            raise DataError(f"the recordings hold frames of different sizes {sorted(shapes)}; train on one size")
        self.frame_size = tuple(int(v) for v in next(iter(shapes))[:2])
        self.domain = "crafter"  # shards hold Discrete(17) Crafter actions (validated when encoded)
        self._n_actions = crafter.N_ACTIONS
        self.episode_lengths = np.concatenate([d.episode_lengths for d in self.datasets]).astype(np.int64)
        self._owner = np.concatenate([np.full(d.n_episodes, i) for i, d in enumerate(self.datasets)])
        self._local = np.concatenate([np.arange(d.n_episodes) for d in self.datasets])

    def episode(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        episode = self.datasets[int(self._owner[index])].episode(int(self._local[index]))
        return episode.frames, episode.actions

    def identity(self) -> dict[str, Any]:
        return {"kind": "shards", "datasets": [
            {"dir": str(d.root), "frames": len(d), "shards_sha256": [s.sha256 for s in d.shards]}
            for d in self.datasets
        ]}  # fmt: skip


class ClipSource(FrameSource):
    """Minecraft clips held in memory: a MineWorld clip folder (``layout="mineworld"``: line ``k`` of a clip's jsonl
    leads to frame ``k``, so ``actions[k]`` = line ``k + 1``) or VPT contractor recordings cut into episodes of
    ``clip_frames`` (``layout="vpt"``: frame ``k + 1`` follows line ``k``), resized to ``frame_size``."""

    def __init__(self, root: str | os.PathLike, *, layout: str, frame_size: tuple[int, int] = (224, 384),
                 clip_frames: int = 16, limit: int | None = None):  # fmt: skip

        self.domain = "minecraft"
        self.frame_size = (int(frame_size[0]), int(frame_size[1]))
        self.root = Path(root)
        self.layout = layout
        frames, actions, names = [], [], []
        if layout == "mineworld":
            if self.frame_size != (224, 384):
                raise ConfigError(f"MineWorld clips are 224x384; frame_size {self.frame_size} would need a resize")
            for clip in MineWorldClips(root, frames=None, size=(224, 384), limit=limit):
                compact = minecraft.to_compact(clip.actions[1:])
                frames.append(clip.frames)
                actions.append(np.concatenate([compact, np.full((1, compact.shape[1]), -1)]))
                names.append(clip.name)
        elif layout == "vpt":
            for chunk in VPTDataset(root).iter_chunks(clip_frames, drop_last=True):
                frames.append(_resize(chunk.frames, self.frame_size))
                compact = minecraft.to_compact(chunk.env_actions[:-1])
                actions.append(np.concatenate([compact, np.full((1, compact.shape[1]), -1)]))
                names.append(f"{chunk.recording}-{chunk.start}")
                if limit is not None and len(frames) >= limit:
                    break
        else:
            raise ConfigError(f"clip layout must be 'mineworld' or 'vpt', got {layout!r}")
        if not frames:
            raise DataError(f"{root} holds no {layout} clips")
        self._frames, self._actions, self.names = frames, actions, names
        self.episode_lengths = np.array([len(f) for f in frames], dtype=np.int64)

    def episode(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self._frames[index], self._actions[index].astype(np.int64)

    def identity(self) -> dict[str, Any]:
        return {"kind": self.layout, "root": str(self.root), "frame_size": list(self.frame_size),
                "clips": self.names, "lengths": self.episode_lengths.tolist()}  # fmt: skip


def _resize(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return resize_linear_uint8(torch.from_numpy(np.ascontiguousarray(frames)), *size).numpy()


def open_source(
    data: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    layout: str = "auto",
    frame_size: tuple[int, int] | None = None,
    clip_frames: int = 16,
    limit: int | None = None,
) -> FrameSource:
    """The training data: ``layout="shards"`` (directories with ``manifest.json``), ``"mineworld"`` (a clip folder),
    ``"vpt"`` (contractor recordings); ``"auto"`` picks shards when a ``manifest.json`` exists, else MineWorld clips."""
    dirs = as_dirs(data)
    if layout == "auto":
        layout = "shards" if all((d / "manifest.json").is_file() for d in dirs) else "mineworld"
    if layout == "shards":
        source = ShardSource(dirs)
        if frame_size is not None and tuple(frame_size) != source.frame_size:
            raise DataError(f"the recordings hold {source.frame_size} frames, not {tuple(frame_size)}")
        return source
    if len(dirs) != 1:
        raise ConfigError(f"clip layouts read one folder, got {len(dirs)}")
    return ClipSource(dirs[0], layout=layout, frame_size=frame_size or (224, 384), clip_frames=clip_frames,
                      limit=limit)  # fmt: skip


@dataclass
class LatentData:
    """Every frame's normalised latent (posterior mean), with actions and episode boundaries."""

    latents: np.ndarray
    """``float16[F, C, h, w]``."""
    actions: np.ndarray
    """``int64[F, *A]`` (the last frame of an episode holds -1)."""
    episode_lengths: np.ndarray
    key: str
    reused: bool = False


@torch.no_grad()
def encode_source(
    autoencoder: FrameAutoencoder,
    source: FrameSource,
    *,
    autoencoder_sha256: str,
    cache_path: str | os.PathLike | None = None,
    progress: bool = False,
) -> LatentData:
    """Latents of every frame of ``source``, read from ``cache_path`` when made from the same data and autoencoder,
    else computed (fixed-size encoder calls, so a frame's latent does not depend on its neighbours) and cached."""
    key = sha256_json({"source": source.identity(), "autoencoder": autoencoder_sha256})
    cache_path = None if cache_path is None else Path(cache_path)
    if cache_path is not None and cache_path.is_file():
        try:
            with np.load(cache_path, allow_pickle=False) as cached:
                if str(cached["key"]) == key:
                    return LatentData(cached["latents"], cached["actions"], cached["episode_lengths"], key, True)
        except (OSError, ValueError, KeyError):
            pass  # unreadable or foreign: encode again and replace it
    domain = get_domain(source.domain)
    total = int(source.episode_lengths.sum())
    latents = np.empty((total, autoencoder.latent_channels, *autoencoder.grid), dtype=np.float16)
    actions = np.empty((total, *domain.compact_shape), dtype=np.int64)
    autoencoder.eval()
    row = 0
    with Progress(total, "encoding", enabled=progress) as bar:
        for e in range(source.n_episodes):
            frames, episode_actions = source.episode(e)
            n = len(frames)
            if n > 1:
                domain.validate(episode_actions[:-1])  # a recording of another domain fails here
            for start in range(0, n, 64):
                part = torch.from_numpy(np.ascontiguousarray(frames[start : start + 64]))
                latents[row + start : row + start + len(part)] = autoencoder.encode(part).numpy()
                bar.advance(len(part))
            actions[row : row + n] = episode_actions
            row += n
    data = LatentData(latents, actions, source.episode_lengths.copy(), key)
    if cache_path is not None:
        with atomic_output(cache_path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, latents=latents, actions=actions, episode_lengths=data.episode_lengths, key=np.array(key))
    return data


def gather_windows(
    data: LatentData, starts: np.ndarray, window_frames: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Windows of ``window_frames`` latents from global frame indices ``starts``: ``(latents float32[n, T, C, h, w],
    actions int64[n, T, *A], present bool[n, T])`` where frame ``j``'s action is the one that led to it (taken at
    frame ``j - 1``); the first frame of a window has none (``present`` False, action 0)."""
    rows = starts[:, None] + np.arange(window_frames)
    latents = torch.from_numpy(data.latents[rows].astype(np.float32))
    actions = np.zeros((len(starts), window_frames, *data.actions.shape[1:]), dtype=np.int64)
    actions[:, 1:] = data.actions[rows[:, :-1]]
    present = np.ones((len(starts), window_frames), dtype=bool)
    present[:, 0] = False
    return latents, torch.from_numpy(actions), torch.from_numpy(present)


# -- losses -----------------------------------------------------------------------------------------------------------


def sample_flow_times(
    generator: torch.Generator,
    batch: int,
    frames: int,
    *,
    context_noise: float,
    context_prob: float,
    mean: float = 0.0,
    std: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame flow times ``t [batch, frames]`` and the frames that count in the loss ``bool[batch, frames]``.

    ``t = sigmoid(mean + std * n)``, ``n ~ N(0, 1)`` independently per frame (SD3's logit-normal; diffusion forcing).
    With probability ``context_prob`` a window becomes a next-frame window: a prefix of ``k ~ U{1 .. frames-1}`` frames
    is set to ``context_noise`` (as context frames enter at inference) and excluded from the loss.
    """
    t = torch.sigmoid(mean + std * torch.randn(batch, frames, generator=generator))
    mask = torch.ones(batch, frames, dtype=torch.bool)
    if frames > 1 and context_prob > 0:
        chosen = torch.rand(batch, generator=generator) < context_prob
        prefix = torch.randint(1, frames, (batch,), generator=generator)
        context = chosen[:, None] & (torch.arange(frames)[None, :] < prefix[:, None])
        t = torch.where(context, torch.full_like(t, context_noise), t)
        mask = ~context
    return t, mask


def flow_matching_loss(
    transformer: torch.nn.Module,
    latents: torch.Tensor,
    actions: torch.Tensor,
    present: torch.Tensor,
    times: torch.Tensor,
    noise: torch.Tensor,
    mask: torch.Tensor,
    *,
    normalizer: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rectified-flow loss: frames ``x_t = (1 - t) z + t eps`` go in, the predicted velocity is compared with
    ``eps - z`` by mean squared error per frame; returns ``(sum of the masked frames' errors / normalizer, per-frame
    errors [b, f])``. ``normalizer`` defaults to the number of masked frames (a plain mean)."""
    t = times[..., None, None, None]
    noisy = (1.0 - t) * latents + t * noise
    velocity = transformer(noisy, times, actions, present)
    per_frame = (velocity - (noise - latents)).pow(2).mean(dim=(2, 3, 4))
    denominator = float(mask.sum()) if normalizer is None else normalizer
    return (per_frame * mask).sum() / max(denominator, 1.0), per_frame.detach()


def autoencoder_loss(
    autoencoder: FrameAutoencoder, pixels: torch.Tensor, eps: torch.Tensor, kl_weight: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """``L1 + MSE`` of the reconstruction of the posterior sample ``mean + exp(logvar / 2) eps`` plus ``kl_weight``
    times ``KL(q || N(0, I))`` averaged per latent element."""
    mean, logvar = autoencoder.posterior(pixels)
    sample = mean + torch.exp(0.5 * logvar) * eps
    reconstruction = autoencoder.decode_raw(sample)
    l1 = (reconstruction - pixels).abs().mean()
    mse = (reconstruction - pixels).pow(2).mean()
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
    loss = l1 + mse + kl_weight * kl
    return loss, {"loss": loss.item(), "l1": l1.item(), "mse": mse.item(), "kl": kl.item()}


def _pixels(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    mse = (a.float() - b.float()).pow(2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(255.0**2 / mse.clamp_min(1e-10))


@torch.no_grad()
def evaluate_autoencoder(autoencoder: FrameAutoencoder, frames: np.ndarray, *, batch: int = 64) -> dict[str, float]:
    """The inference path (``encode`` -> ``decode``, uint8) on ``frames``: ``psnr``, ``mae`` (0..255), and the mean
    posterior standard deviation relative to the latent standard deviation (``posterior_std``)."""
    was = autoencoder.training
    autoencoder.eval()
    psnr, mae, spread = [], [], []
    for start in range(0, len(frames), batch):
        x = torch.as_tensor(frames[start : start + batch])
        rec = autoencoder.decode(autoencoder.encode(x))
        psnr.append(_psnr(rec, x))
        mae.append((rec.float() - x.float()).abs().mean(dim=(1, 2, 3)))
        _, logvar = autoencoder.posterior(_pixels(x))
        spread.append((torch.exp(0.5 * logvar) / autoencoder.latent_std[:, None, None]).mean(dim=(1, 2, 3)))
    autoencoder.train(was)
    return {"psnr": float(torch.cat(psnr).mean()), "mae": float(torch.cat(mae).mean()),
            "posterior_std": float(torch.cat(spread).mean())}  # fmt: skip


@torch.no_grad()
def calibrate_latents(autoencoder: FrameAutoencoder, frames: np.ndarray, *, batch: int = 64) -> None:
    """Set ``latent_mean`` / ``latent_std`` to the per-channel statistics of the posterior means of ``frames``."""
    means = []
    for start in range(0, len(frames), batch):
        mean, _ = autoencoder.posterior(_pixels(frames[start : start + batch]))
        means.append(mean.double().transpose(0, 1).flatten(1))
    values = torch.cat(means, dim=1)
    autoencoder.latent_mean.copy_(values.mean(1).float())
    autoencoder.latent_std.copy_(values.std(1).clamp_min(1e-6).float())


# -- autoencoder files ------------------------------------------------------------------------------------------------


def save_autoencoder(autoencoder: FrameAutoencoder, path: str | os.PathLike, *, summary: dict | None = None) -> Path:
    """Weights (diffusers key names under ``model.``, plus ``latent_mean`` / ``latent_std``) with the config, frame
    size and summary as JSON metadata."""
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in autoencoder.state_dict().items()}
    meta = {"format": "pt", "kind": AUTOENCODER_KIND, "ae_config": json.dumps(autoencoder.config, sort_keys=True),
            "frame_size": json.dumps(list(autoencoder.frame_size)), "summary": json.dumps(summary or {})}  # fmt: skip
    with atomic_output(path) as tmp:
        save_safetensors_file(tensors, tmp, meta)
    return path


def load_autoencoder(path: str | os.PathLike) -> tuple[FrameAutoencoder, dict[str, Any]]:
    """``(autoencoder, summary)`` from a file written by :func:`save_autoencoder` (strict keys)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"autoencoder {str(path)!r} does not exist; train one with `rlir train nfd`")
    state, meta = read_safetensors(path)
    if meta.get("kind") != AUTOENCODER_KIND:
        raise CheckpointError(f"{path} is not an NFD autoencoder (metadata kind {meta.get('kind')!r})")
    autoencoder = FrameAutoencoder(json.loads(meta["ae_config"]), tuple(json.loads(meta["frame_size"])))
    diff = state_dict_diff({k: tuple(v.shape) for k, v in autoencoder.state_dict().items()}, state)
    if diff:
        raise CheckpointError(f"{path}: weights do not fit its config: {diff}")
    autoencoder.load_state_dict(state, strict=True)
    return autoencoder.eval(), json.loads(meta.get("summary", "{}"))


def autoencoder_path_for(out_path: str | os.PathLike) -> Path:
    out_path = Path(out_path)
    return out_path.parent / f"{out_path.stem}.autoencoder.safetensors"


def latent_cache_path(out_path: str | os.PathLike) -> Path:
    out_path = Path(out_path)
    return out_path.parent / f"{out_path.stem}.latents.npz"


# -- stage 1: the autoencoder -----------------------------------------------------------------------------------------


def train_autoencoder(
    source: FrameSource,
    train_episodes: np.ndarray,
    val_episodes: np.ndarray,
    out_path: str | os.PathLike,
    *,
    ae_config: dict[str, Any],
    steps: int = 1500,
    batch_size: int = 16,
    lr: float = 2e-3,
    warmup: int = _AE_WARMUP,
    kl_weight: float = 1e-4,
    seed: int = 0,
    pool_frames: int = 20000,
    eval_frames: int = 256,
    eval_every: int = 500,
    log_every: int = 25,
    checkpoint_every: int = 250,
    log_path: str | os.PathLike | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
    report_to: str = "none",
    parallel: Distributed | None = None,
) -> dict[str, Any]:
    """Train the frame autoencoder on up to ``pool_frames`` frames of ``train_episodes`` and write ``out_path``.

    Returns the summary (``finished`` False when ``stop_after`` ended the run early; nothing is written then).
    """
    parallel = parallel or Distributed()
    watch = Stopwatch()
    out_path = Path(out_path)
    run_dir = run_dir_for(out_path)
    checkpoint_path = run_dir / CHECKPOINT_NAME
    log_path = run_dir / "log.jsonl" if log_path is None else Path(log_path)
    seed_everything(seed)
    autoencoder = FrameAutoencoder(ae_config, source.frame_size)
    with watch("data"):
        n_train = int(source.episode_lengths[train_episodes].sum())
        pool_index = np.sort(step_rng(seed, _AE_POOL_STREAM).choice(n_train, min(pool_frames, n_train), replace=False))
        pool = source.gather(train_episodes, pool_index)
        n_val = int(source.episode_lengths[val_episodes].sum())
        val_index = np.sort(step_rng(seed, _AE_EVAL_STREAM).choice(n_val, min(eval_frames, n_val), replace=False))
        held_out = source.gather(val_episodes, val_index) if n_val else pool[: min(eval_frames, len(pool))]
    model = parallel.wrap(_AutoencoderLoss(autoencoder.train()))
    optimizer = make_adamw(autoencoder.named_parameters(), lr=lr, weight_decay=0.0)
    scheduler = cosine_with_warmup(optimizer, warmup=warmup, total=steps)
    run_config = autoencoder_run_config(source, val_episodes, ae_config=ae_config, steps=steps, batch_size=batch_size,
                                        lr=lr, warmup=warmup, kl_weight=kl_weight, seed=seed, pool_frames=pool_frames)
    start, resumed_from, evaluations = 0, None, []
    if resume and checkpoint_path.is_file():
        start, _, extra = load_checkpoint(checkpoint_path, model=autoencoder, optimizer=optimizer, scheduler=scheduler,
                                          run_config=run_config)  # fmt: skip
        evaluations, resumed_from = extra["evaluations"], start
    logger = JsonlLogger(log_path if parallel.main else None, resume_step=resumed_from, report_to=report_to)
    stop = steps if stop_after is None else min(int(stop_after), steps)
    rows = parallel.rows(batch_size)
    window: dict[str, list[float]] = {}
    step_time = 0.0
    shape = (batch_size, autoencoder.latent_channels, *autoencoder.grid)
    with Progress(steps, "autoencoder", enabled=progress and parallel.main, completed=start) as bar:
        for step in range(start, stop):
            began = time.perf_counter()
            picks = step_rng(seed, _AE_STREAM, step).integers(0, len(pool), batch_size)
            eps = torch.randn(shape, generator=step_generator(seed, _AE_NOISE_STREAM, step))
            loss, stats = model(_pixels(pool[picks[rows]]), eps[rows], kl_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(autoencoder.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            step_time += time.perf_counter() - began
            for key, value in stats.items():
                window.setdefault(key, []).append(value)
            done = step + 1
            bar.advance(1, f"loss {stats['loss']:.4f}")
            if done % log_every == 0 or done == stop:
                logger.log(step=done, **{k: parallel.mean(float(np.mean(v))) for k, v in window.items()},
                           lr=scheduler.get_last_lr()[0], s_per_step=step_time / (done - start))  # fmt: skip
                window = {}
            if parallel.main and ((eval_every and done % eval_every == 0) or done == steps):
                with watch("eval"):
                    calibrate_latents(autoencoder, pool[:4096])
                    result = evaluate_autoencoder(autoencoder, held_out)
                autoencoder.train()
                evaluations.append({"step": done, **result})
                logger.log(step=done, eval=result)
            if (done % checkpoint_every == 0 or done == stop) and parallel.main:
                save_checkpoint(checkpoint_path, model=autoencoder, optimizer=optimizer, scheduler=scheduler,
                                step=done, run_config=run_config, extra_meta={"evaluations": evaluations})  # fmt: skip
    finished = stop == steps
    summary = {
        "kind": AUTOENCODER_KIND, "finished": finished, "steps_done": stop, "resumed_from": resumed_from,
        "settings": {k: v for k, v in run_config.items() if k not in ("data", "val_episodes")},
        "pool_frames": int(len(pool)), "eval_frames": int(len(held_out)),
        "parameters": int(sum(p.numel() for p in autoencoder.parameters())), "latent_grid": list(autoencoder.grid),
        "latent_channels": autoencoder.latent_channels, "evaluations": evaluations,
        "final": evaluations[-1] if finished and evaluations else None,
        "s_per_step": step_time / max(1, stop - start), "wall_time": watch.report(), "machine": machine_info(),
        "run_sha256": sha256_json(run_config),
    }  # fmt: skip
    if finished and parallel.main:
        autoencoder.eval()
        calibrate_latents(autoencoder, pool[:4096])
        save_autoencoder(autoencoder, out_path, summary=summary)
        write_json(summary_path(out_path), summary)
    parallel.barrier()
    return summary


class _AutoencoderLoss(torch.nn.Module):
    """The autoencoder with :func:`autoencoder_loss` as its ``forward`` (what DDP wraps)."""

    def __init__(self, autoencoder: FrameAutoencoder):
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, pixels, eps, kl_weight):
        return autoencoder_loss(self.autoencoder, pixels, eps, kl_weight)


def autoencoder_run_config(source: FrameSource, val_episodes: np.ndarray, **settings: Any) -> dict[str, Any]:
    """What identifies an autoencoder run (resume checks, and whether a finished file can be reused)."""
    return {"task": "nfd-autoencoder", **settings, "data": source.identity(), "val_episodes": val_episodes.tolist()}


# -- stage 2: the transformer -----------------------------------------------------------------------------------------


class _TransformerLoss(torch.nn.Module):
    """The transformer with :func:`flow_matching_loss` as its ``forward`` (what DDP wraps)."""

    def __init__(self, transformer: torch.nn.Module):
        super().__init__()
        self.transformer = transformer

    def forward(self, latents, actions, present, times, noise, mask, normalizer):
        return flow_matching_loss(self.transformer, latents, actions, present, times, noise, mask,
                                  normalizer=normalizer)  # fmt: skip


@torch.no_grad()
def _validation_loss(transformer, windows, times, noise, mask) -> float:
    latents, actions, present = windows
    total, count = 0.0, 0.0
    for part in range(0, len(latents), 16):
        s = slice(part, part + 16)
        _, per_frame = flow_matching_loss(transformer, latents[s], actions[s], present[s], times[s], noise[s], mask[s])
        total += float((per_frame * mask[s]).sum())
        count += float(mask[s].sum())
    return total / max(count, 1.0)


@torch.no_grad()
def evaluate_generation(
    model: NFD, data: LatentData, starts: np.ndarray, window_frames: int, *, sampling: NFDSampling, seed: int
) -> dict[str, float]:
    """Sample the last frame of each window given the others and its action; PSNR of the decoded frame against the
    autoencoder's decoding of the real latent (``psnr``), and of the last context frame against it (``psnr_copy``,
    the copy baseline). Generators are seeded per window from ``seed``."""
    latents, actions, _ = gather_windows(data, starts, window_frames)
    context = window_frames - 1
    generators = [step_generator(seed, _GEN_STREAM, i) for i in range(len(starts))]
    state = model.start_latents(latents[:, :context], actions[:, 1:context], generators, sampling=sampling)
    generated = model.decode(model.step_latents(state, actions[:, context]))
    real = model.decode(latents[:, context])
    previous = model.decode(latents[:, context - 1])
    return {"psnr": float(_psnr(generated.permute(0, 3, 1, 2), real.permute(0, 3, 1, 2)).mean()),
            "psnr_copy": float(_psnr(previous.permute(0, 3, 1, 2), real.permute(0, 3, 1, 2)).mean()),
            "windows": int(len(starts)), "sampler": sampling.sampler, "steps": sampling.steps}  # fmt: skip


def train_transformer(
    model: NFD,
    data: LatentData,
    train_episodes: np.ndarray,
    val_episodes: np.ndarray,
    out_path: str | os.PathLike,
    *,
    steps: int = 2000,
    batch_size: int = 8,
    window_frames: int | None = None,
    lr: float = 1e-3,
    warmup: int = 100,
    weight_decay: float = 0.01,
    context_prob: float = 0.5,
    seed: int = 0,
    val_windows: int = 64,
    eval_every: int = 250,
    log_every: int = 25,
    checkpoint_every: int = 250,
    log_path: str | os.PathLike | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
    report_to: str = "none",
    parallel: Distributed | None = None,
    identity: dict[str, Any] | None = None,
    init: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``model.transformer`` (the autoencoder is frozen) on latent windows; write ``out_path`` when done.
    ``init``: a warm start's :func:`~worldmodels.training.common.init_record` (``model`` already holds the init's
    weights; see ``init_path`` of :func:`train_nfd`)."""
    parallel = parallel or Distributed()
    watch = Stopwatch()
    config = model.config
    window_frames = config.context_frames if window_frames is None else int(window_frames)
    if not 2 <= window_frames <= config.context_frames:
        raise ConfigError(f"window_frames={window_frames} must lie in [2, context_frames={config.context_frames}]")
    if not 0.0 <= context_prob <= 1.0:
        raise ConfigError(f"context_prob must lie in [0, 1], got {context_prob!r}")
    out_path = Path(out_path)
    run_dir = run_dir_for(out_path)
    checkpoint_path = run_dir / CHECKPOINT_NAME
    log_path = run_dir / "log.jsonl" if log_path is None else Path(log_path)
    train_starts = window_starts(data.episode_lengths, train_episodes, window_frames)
    val_starts = window_starts(data.episode_lengths, val_episodes, window_frames)
    if len(train_starts) == 0 or len(val_starts) == 0:
        raise DataError(f"no {'training' if len(train_starts) == 0 else 'validation'} episode has the {window_frames} "
                        "frames a window needs; record more data or pass a smaller window_frames")  # fmt: skip
    pick = np.sort(step_rng(seed, _VAL_STREAM).choice(len(val_starts), min(val_windows, len(val_starts)),
                                                     replace=False))  # fmt: skip
    val = gather_windows(data, val_starts[pick], window_frames)
    val_gen = step_generator(seed, _VAL_STREAM, 1)
    val_times, val_mask = sample_flow_times(val_gen, len(pick), window_frames, context_noise=config.context_noise,
                                            context_prob=context_prob)  # fmt: skip
    val_noise = torch.randn(val[0].shape, generator=val_gen)
    next_times = torch.full((len(pick), window_frames), config.context_noise)
    next_times[:, -1] = torch.sigmoid(torch.randn(len(pick), generator=val_gen))
    next_mask = torch.zeros_like(val_mask)
    next_mask[:, -1] = True

    transformer = model.transformer.train()
    model.autoencoder.requires_grad_(False).eval()
    wrapped = parallel.wrap(_TransformerLoss(transformer))
    optimizer = make_adamw(transformer.named_parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = cosine_with_warmup(optimizer, warmup=warmup, total=steps)
    run_config = {"task": "nfd-transformer", "config": config.to_dict(), "steps": steps, "batch_size": batch_size,
                  "window_frames": window_frames, "lr": lr, "warmup": warmup, "weight_decay": weight_decay,
                  "context_prob": context_prob, "seed": seed, "val_windows": val_windows, "data": identity or {},
                  "latents": data.key, "world": parallel.world}  # fmt: skip
    batch_stream, noise_stream = _DIT_STREAM, _DIT_NOISE_STREAM
    if init is not None:
        run_config["init_sha256"] = init["sha256"]
        batch_stream = int(init["sha256"][:15], 16)  # streams of their own per init file (ids < 2**60)
        noise_stream = int(init["sha256"][15:30], 16)
    start, resumed_from, validations = 0, None, []
    if resume and checkpoint_path.is_file():
        start, _, extra = load_checkpoint(checkpoint_path, model=transformer, optimizer=optimizer, scheduler=scheduler,
                                          run_config=run_config)  # fmt: skip
        validations, resumed_from = extra["validations"], start
    logger = JsonlLogger(log_path if parallel.main else None, resume_step=resumed_from, report_to=report_to)
    stop = steps if stop_after is None else min(int(stop_after), steps)
    rows = parallel.rows(batch_size)

    def validate(step: int) -> None:
        with watch("validate"):
            transformer.eval()
            result = {"loss": _validation_loss(transformer, val, val_times, val_noise, val_mask),
                      "loss_next": _validation_loss(transformer, val, next_times, val_noise, next_mask)}  # fmt: skip
            transformer.train()
        validations.append({"step": step, **result})
        logger.log(step=step, val=result)

    if start == 0 and stop > 0 and parallel.main:
        validate(0)
    losses: list[float] = []
    step_time = 0.0
    with Progress(steps, "nfd transformer", enabled=progress and parallel.main, completed=start) as bar:
        for step in range(start, stop):
            began = time.perf_counter()
            picks = train_starts[step_rng(seed, batch_stream, step).integers(0, len(train_starts), batch_size)]
            latents, actions, present = gather_windows(data, picks, window_frames)
            generator = step_generator(seed, noise_stream, step)
            times, mask = sample_flow_times(generator, batch_size, window_frames, context_noise=config.context_noise,
                                            context_prob=context_prob)  # fmt: skip
            noise = torch.randn(latents.shape, generator=generator)
            # sum over this rank's frames / all ranks' frame count, times the world size: DDP's gradient average is
            # then the gradient of the global mean
            normalizer = float(mask.sum()) / parallel.world
            loss, _ = wrapped(latents[rows], actions[rows], present[rows], times[rows], noise[rows], mask[rows],
                              normalizer)  # fmt: skip
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            step_time += time.perf_counter() - began
            losses.append(loss.item() / parallel.world)
            done = step + 1
            bar.advance(1, f"loss {losses[-1] * parallel.world:.4f}")
            if done % log_every == 0 or done == stop:
                logger.log(step=done, loss=parallel.mean(float(np.sum(losses) / len(losses))) * parallel.world,
                           lr=scheduler.get_last_lr()[0], grad_norm=float(grad_norm),
                           s_per_step=step_time / (done - start))  # fmt: skip
                losses = []
            if parallel.main and ((eval_every and done % eval_every == 0) or done == steps):
                validate(done)
            if (done % checkpoint_every == 0 or done == stop) and parallel.main:
                save_checkpoint(checkpoint_path, model=transformer, optimizer=optimizer, scheduler=scheduler,
                                step=done, run_config=run_config, extra_meta={"validations": validations})  # fmt: skip
    finished = stop == steps
    summary: dict[str, Any] = {
        "kind": "rlir.nfd-training", "finished": finished, "steps_done": stop, "resumed_from": resumed_from,
        "config": config.to_dict(), "settings": {k: v for k, v in run_config.items() if k not in ("config", "data")},
        "windows": {"train": int(len(train_starts)), "val": int(len(pick))},
        "parameters": int(sum(p.numel() for p in transformer.parameters())), "validations": validations,
        "final": validations[-1] if finished and validations else None,
        "s_per_step": step_time / max(1, stop - start), "wall_time": watch.report(), "machine": machine_info(),
        "world_size": parallel.world, "init": init,
    }  # fmt: skip
    if finished and parallel.main:
        model.eval()
        with watch("generation"):
            gen_pick = val_starts[pick[: min(16, len(pick))]]
            summary["generation"] = {
                name: evaluate_generation(model, data, gen_pick, window_frames, sampling=sampling, seed=seed)
                for name, sampling in (("euler10", NFDSampling("euler", 10)),
                                       ("dpmpp2m18", NFDSampling.rlir_eval()))
            }  # fmt: skip
        summary["wall_time"] = watch.report()
        save_nfd(model, out_path)
        summary["sha256"] = sha256_file(out_path)
        write_json(summary_path(out_path), summary)
    parallel.barrier()
    return summary


# -- both stages ------------------------------------------------------------------------------------------------------


def train_nfd(
    data: str | os.PathLike | Sequence[str | os.PathLike],
    out_path: str | os.PathLike,
    *,
    config: NFDConfig | None = None,
    ae_config: dict[str, Any] | None = None,
    autoencoder: str | os.PathLike | None = None,
    layout: str = "auto",
    clip_frames: int = 16,
    clip_limit: int | None = None,
    ae_steps: int = 1500,
    ae_batch_size: int = 16,
    ae_lr: float = 2e-3,
    kl_weight: float = 1e-4,
    ae_pool_frames: int = 20000,
    steps: int = 2000,
    batch_size: int = 8,
    window_frames: int | None = None,
    lr: float = 1e-3,
    warmup: int = 100,
    weight_decay: float = 0.01,
    context_prob: float = 0.5,
    seed: int = 0,
    val_fraction: float = 0.05,
    val_windows: int = 64,
    eval_every: int = 250,
    log_every: int = 25,
    checkpoint_every: int = 250,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
    report_to: str = "none",
    init_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Train an NFD world model end to end (see the module docstring); write ``out_path`` (``.safetensors``).

    Args:
        data: trajectory-shard directories, a MineWorld clip folder or a VPT recording folder (``layout``).
        out_path: the model file; ``<stem>.autoencoder.safetensors``, ``<stem>.latents.npz`` and the run directories
            ``<stem>.run/`` (transformer) and ``<stem>.autoencoder.run/`` (autoencoder) live next to it.
        config: the architecture; default ``nfd-crafter-small`` (Crafter) with the data's frame size and domain.
        ae_config: the autoencoder (``diffusers.AutoencoderKL`` config); default :data:`CRAFTER_AE_CONFIG`.
        autoencoder: a trained autoencoder file to use (skips stage 1).
        ae_steps, ae_batch_size, ae_lr, kl_weight, ae_pool_frames: stage 1 (see :func:`train_autoencoder`).
        steps, batch_size, window_frames, lr, warmup, weight_decay, context_prob: stage 2.
        seed: seeds weights, split, batches, times and noise of both stages.
        val_fraction: share of episodes held out.
        resume: continue interrupted stages from their checkpoints (the same settings and data are required).
        stop_after: stop the transformer stage after this many steps (resumable); the autoencoder stage always
            finishes first.
        report_to: ``"tensorboard"``, ``"wandb"`` or ``"none"`` (:mod:`worldmodels.training.report`), both stages.
        init_path: warm start from a trained NFD file: its transformer (of this ``config``; default: the init's
            architecture) with a fresh optimiser and schedule, and its autoencoder (stage 1 is skipped: the
            transformer learnt that autoencoder's latents; an ``autoencoder=`` file must hold the same weights).
            Pass the init run's data and seed (the seed splits the episodes) so that its validation episodes stay
            unseen; step 0's validation then scores the init. The written model keeps the init's default sampling;
            the summary records the init under ``init``.

    Returns:
        ``{"autoencoder": stage 1 summary or the reused file's, "transformer": stage 2 summary}``.
    """
    parallel = Distributed.from_env("cuda" if torch.cuda.is_available() else "cpu")
    out_path = Path(out_path)
    if out_path.suffix != ".safetensors":
        raise ConfigError(f"out_path must end in .safetensors, got {out_path.name!r}")
    source = open_source(data, layout=layout, clip_frames=clip_frames, limit=clip_limit)
    init_model = None if init_path is None else _load_init(init_path)
    init = None if init_path is None else init_record(init_path)
    if config is None:
        config = get_preset("nfd-crafter-small") if init_model is None else init_model.config
    if init_model is not None:
        require_init_architecture(config.to_dict(), init_model.config.to_dict(), init_path)
    if source.domain != config.action_domain or source.frame_size != tuple(config.frame_size):
        raise ConfigError(
            f"the data holds {source.domain} actions and {source.frame_size} frames, but {config.name} takes "
            f"{config.action_domain} actions and {tuple(config.frame_size)} frames; pick a matching config"
        )
    ae_config = dict(CRAFTER_AE_CONFIG if ae_config is None else ae_config)
    train_episodes, val_episodes = split_episodes(source.n_episodes, val_fraction, seed, _SPLIT_STREAM)

    # stage 1: the autoencoder (trained, reused, or the init's)
    ae_path = autoencoder_path_for(out_path) if autoencoder is None else Path(autoencoder)
    ae_summary: dict[str, Any] = {}
    if init_model is not None:
        _install_init_autoencoder(init_model, init, ae_path, given=autoencoder is not None, parallel=parallel)
    elif autoencoder is None:
        expected = autoencoder_run_config(source, val_episodes, ae_config=ae_config, steps=ae_steps,
                                          batch_size=ae_batch_size, lr=ae_lr, warmup=_AE_WARMUP, kl_weight=kl_weight,
                                          seed=seed, pool_frames=ae_pool_frames)  # fmt: skip
        existing = _finished_autoencoder(ae_path, sha256_json(expected))
        if existing is None:
            ae_summary = train_autoencoder(
                source, train_episodes, val_episodes, ae_path, ae_config=ae_config, steps=ae_steps,
                batch_size=ae_batch_size, lr=ae_lr, warmup=_AE_WARMUP, kl_weight=kl_weight, seed=seed,
                pool_frames=ae_pool_frames, eval_every=eval_every, log_every=log_every, checkpoint_every=checkpoint_every, resume=resume,
                progress=progress, report_to=report_to, parallel=parallel,
            )  # fmt: skip
        else:
            ae_summary = dict(existing, reused=True)
    frame_autoencoder, saved_summary = load_autoencoder(ae_path)
    ae_summary = ae_summary or dict(saved_summary, reused=True)
    if frame_autoencoder.frame_size != tuple(config.frame_size):
        raise ConfigError(f"the autoencoder takes {frame_autoencoder.frame_size} frames, {config.name} "
                          f"{tuple(config.frame_size)}")  # fmt: skip

    # stage 2: latents, then the transformer
    seed_everything(seed)
    model = NFD.from_config(config, frame_autoencoder.config)
    model.autoencoder.load_state_dict(frame_autoencoder.state_dict())
    if init_model is not None:
        model.transformer.load_state_dict(init_model.transformer.state_dict(), strict=True)
        model.sampling = init_model.sampling  # its default sampler, as a fine-tuned model keeps its base's
    ae_sha = sha256_file(ae_path)
    if parallel.main:
        latent_data = encode_source(model.autoencoder, source, autoencoder_sha256=ae_sha,
                                    cache_path=latent_cache_path(out_path), progress=progress)  # fmt: skip
    parallel.barrier()
    if not parallel.main:
        latent_data = encode_source(model.autoencoder, source, autoencoder_sha256=ae_sha,
                                    cache_path=latent_cache_path(out_path))  # fmt: skip
    summary = train_transformer(
        model, latent_data, train_episodes, val_episodes, out_path, steps=steps, batch_size=batch_size,
        window_frames=window_frames, lr=lr, warmup=warmup, weight_decay=weight_decay, context_prob=context_prob,
        seed=seed, val_windows=val_windows, eval_every=eval_every, log_every=log_every,
        checkpoint_every=checkpoint_every, resume=resume, stop_after=stop_after, progress=progress,
        report_to=report_to, parallel=parallel, identity={"source": source.identity(), "autoencoder_sha256": ae_sha},
        init=init,
    )  # fmt: skip
    summary["autoencoder"] = {"path": str(ae_path), "sha256": ae_sha, "final": ae_summary.get("final")}
    if summary["finished"] and parallel.main:
        write_json(summary_path(out_path), summary)
    return {"autoencoder": ae_summary, "transformer": summary}


def _load_init(path: str | os.PathLike) -> NFD:
    if not Path(path).is_file():
        raise MissingFileError(f"--init {str(path)!r} does not exist; pass a model written by `rlir train nfd`")
    if not is_nfd_checkpoint(path):
        raise ConfigError(f"--init {path} is not an NFD model file (rlir train nfd writes them); a MineWorld model "
                          "is continued with `rlir train worldmodel --init`")  # fmt: skip
    return NFD.from_checkpoint(path)


def _install_init_autoencoder(init: NFD, record: dict[str, Any], ae_path: Path, *, given: bool,
                              parallel: Distributed) -> None:  # fmt: skip
    """A warm start keeps the init's autoencoder (``record``: its :func:`init_record`): a given ``ae_path`` must hold
    it; otherwise it is written there (once; a file already there, from an interrupted warm start, must hold it too)."""
    init_path = record["path"]
    if ae_path.is_file():
        differing = state_differences(load_autoencoder(ae_path)[0].state_dict(), init.autoencoder.state_dict())
        if differing:
            source = "--autoencoder" if given else "the autoencoder file already next to --out"
            raise ConfigError(f"{source} {ae_path} is not the autoencoder of --init {init_path} "
                              f"({', '.join(differing[:3])} differ): its transformer learnt that autoencoder's "
                              "latents; " + ("leave out --autoencoder" if given else "pass another --out"))  # fmt: skip
    elif given:
        raise MissingFileError(f"--autoencoder {str(ae_path)!r} does not exist; leave it out to use the init's")
    elif parallel.main:
        save_autoencoder(init.autoencoder, ae_path, summary={"from_init": init_path, "init_sha256": record["sha256"]})
    parallel.barrier()


def _finished_autoencoder(path: Path, run_sha256: str) -> dict[str, Any] | None:
    """The summary of a finished autoencoder at ``path`` from a run with these settings and data (else ``None``)."""
    if not path.is_file():
        return None
    try:
        _, summary = load_autoencoder(path)
    except (CheckpointError, MissingFileError):
        return None
    return summary if summary.get("run_sha256") == run_sha256 else None
