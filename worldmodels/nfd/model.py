"""NFD: a frame autoencoder plus a block-causal diffusion transformer, as a batched
:class:`worldmodels.protocol.WorldModel`, and its safetensors checkpoints.

A slot's window holds up to ``context_frames`` frames as the (context-noised) latents fed to the transformer::

    [frame_0 (no action)] [frame_1 | action_0] ... [frame_{n-1} | action_{n-2}]   (frame_{n-1} pending)

The last frame is *pending*: its keys and values are not yet in the KV cache. The next step feeds it together with
the first denoising input of the new frame (one forward for both, like MineWorld's boundary chunk), so each frame
costs exactly ``steps`` transformer calls. A generated frame enters the window as
``(1 - t_ctx) z0 + t_ctx eps`` at flow time ``t_ctx`` (``NFDConfig.context_noise``), as the context frames of
training windows do.

When a new frame would not fit, the slot keeps its newest ``reference_frames`` frames (the first of them loses its
action, as the first frame of every training window has none) and rebuilds its cache from them; other slots are
untouched.

Randomness: every slot draws from its own ``torch.Generator`` (context noise at ``start``/``reset_slots``; per frame
the initial noise, then the new frame's context noise), so a seed reproduces a slot's rollout whatever else is in the
batch. Step-level hooks (:meth:`NFD.begin_frame`, :meth:`NFD.velocity`, :meth:`NFD.end_frame`) let other samplers
(e.g. the Flow-GRPO SDE in ``posttrain.flow``) drive the same cache.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from worldmodels.errors import ActionError, CheckpointError, ConfigError, FrameError, MissingFileError, NumericalError
from worldmodels.mineworld.checkpoint import read_safetensors, state_dict_diff
from worldmodels.nfd.autoencoder import FrameAutoencoder
from worldmodels.nfd.config import NFDConfig
from worldmodels.nfd.sampling import FlowSolver, NFDSampling, choose_sampling
from worldmodels.nfd.transformer import KVCache, NFDTransformer
from worldmodels.protocol import ModelSpec
from worldmodels.weights import save_safetensors_file

SAFETENSORS_KIND = "rlir.nfd"


@dataclass
class FrameInProgress:
    """The frame being denoised between :meth:`NFD.begin_frame` and :meth:`NFD.end_frame`."""

    actions: torch.Tensor
    """Compact actions ``int64[B, *A]`` that lead to the new frame."""
    pending_written: bool = False
    """Whether the pending frame's keys/values went into the cache (with the first :meth:`NFD.velocity` call)."""
    calls: int = 0


@dataclass
class NFDState:
    """Rollout state of ``B`` environment slots (opaque to envs; see :class:`NFD`)."""

    cache: KVCache
    latents: torch.Tensor
    """``float[B, context_frames, C, h, w]`` the context-noised latents of each slot's window, as fed."""
    actions: torch.Tensor
    """``int64[B, context_frames, *A]`` the action that led to each window frame."""
    present: torch.Tensor
    """``bool[B, context_frames]`` whether a window frame has an action (False for the first)."""
    lengths: np.ndarray
    """``int64[B]`` frames in each window, the last one pending."""
    generators: list[torch.Generator]
    sampling: NFDSampling
    reference_frames: int
    steps: int = 0
    slides: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    frame: FrameInProgress | None = None

    @property
    def batch_size(self) -> int:
        return int(self.latents.shape[0])


def check_generators(generators: Sequence[torch.Generator] | None, n: int) -> list[torch.Generator]:
    if generators is None:
        raise ConfigError(
            "NFD sampling is stochastic: pass one torch.Generator per environment (generators=[...])"
        )
    generators = list(generators)
    if len(generators) != n:
        raise ConfigError(f"expected {n} generators (one per environment), got {len(generators)}")
    for g in generators:
        if not isinstance(g, torch.Generator):
            raise ConfigError(f"generators must be torch.Generator objects, got {type(g).__name__}")
    return generators


def draw_normal(generators: Sequence[torch.Generator], shape: tuple[int, ...], device) -> torch.Tensor:
    """``float32[len(generators), *shape]`` standard normals; row ``i`` comes from ``generators[i]`` alone."""
    return torch.stack([torch.randn(shape, generator=g, device=g.device) for g in generators]).to(device)


class NFD(nn.Module):
    """Next-frame diffusion world model (NFD-style; our implementation, see ``worldmodels.nfd``).

    Args:
        config: the transformer and latent layout.
        ae_config: the frame autoencoder's ``diffusers.AutoencoderKL`` config.
        reference_frames: frames kept when a window is full (default ``context_frames // 2``, at least 1; at most
            ``context_frames - 1``).
        sampling: default :class:`NFDSampling` for :meth:`start`.
    """

    def __init__(
        self,
        config: NFDConfig,
        ae_config: dict[str, Any],
        *,
        reference_frames: int | None = None,
        sampling: NFDSampling | None = None,
    ):
        super().__init__()
        self.config = config
        self.transformer = NFDTransformer(config)
        self.autoencoder = FrameAutoencoder(ae_config, config.frame_size)
        if self.autoencoder.latent_channels != config.latent_channels or self.autoencoder.grid != config.latent_grid:
            raise ConfigError(
                f"the autoencoder maps {config.frame_size} frames to {self.autoencoder.latent_channels}x"
                f"{self.autoencoder.grid} latents, but {config.name} expects {config.latent_channels}x"
                f"{config.latent_grid} (latent_channels x latent_grid)"
            )
        self.spec = ModelSpec(
            name=config.name, domain=config.action_domain, frame_size=config.frame_size, fps=config.fps,
            context_frames=config.context_frames,
        )  # fmt: skip
        self.reference_frames = self._check_reference_frames(reference_frames)
        self.sampling = sampling if sampling is not None else NFDSampling()

    # --- construction ------------------------------------------------------------------------------------------

    @classmethod
    def from_config(
        cls,
        config: NFDConfig,
        ae_config: dict[str, Any],
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        **options: Any,
    ) -> NFD:
        """A randomly initialised model (DiT initialisation, diffusers' autoencoder initialisation). ``device="meta"``
        builds the structure only (e.g. to count parameters)."""
        with torch.device(device):
            model = cls(config, ae_config, **options)
        if torch.device(device).type != "meta":
            model.transformer.initialize_weights()
        return model.to(dtype=dtype)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        **options: Any,
    ) -> NFD:
        """Load a ``.safetensors`` written by :func:`save_nfd` (configs from its metadata; strict key check)."""
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"NFD checkpoint {str(path)!r} does not exist")
        state_dict, meta = read_safetensors(path)
        if meta.get("kind") != SAFETENSORS_KIND or "nfd_config" not in meta or "ae_config" not in meta:
            raise CheckpointError(
                f"{path} is not an NFD checkpoint (metadata kind {meta.get('kind')!r}); write one with save_nfd or "
                "`rlir train nfd`"
            )
        config = NFDConfig.from_dict(json.loads(meta["nfd_config"]))
        ae_config = json.loads(meta["ae_config"])
        if "sampling" in meta and "sampling" not in options:
            options["sampling"] = NFDSampling(**json.loads(meta["sampling"]))
        with torch.device("meta"):
            model = cls(config, ae_config, **options)
        model = model.to(dtype=dtype).to_empty(device=device)
        model.transformer.reset_buffers()
        load_weights(model, state_dict, source=str(path))
        return model.eval()

    def _check_reference_frames(self, reference_frames: int | None) -> int:
        largest = self.config.context_frames - 1
        if reference_frames is None:
            return max(1, self.config.context_frames // 2)
        if isinstance(reference_frames, bool) or int(reference_frames) != reference_frames:
            raise ConfigError(f"reference_frames must be an integer, got {reference_frames!r}")
        if not 1 <= reference_frames <= largest:
            raise ConfigError(
                f"reference_frames={reference_frames} must lie in [1, {largest}] for {self.config.name} (the kept "
                f"frames plus a new one must fit in context_frames={self.config.context_frames})"
            )
        return int(reference_frames)

    @property
    def device(self) -> torch.device:
        return self.transformer.patch_embed.weight.device

    # --- frames and actions ------------------------------------------------------------------------------------

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """``uint8[B, H, W, 3]`` -> normalised latents ``float32[B, C, h, w]``."""
        return self.autoencoder.encode(frames)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents ``[B, C, h, w]`` -> ``uint8[B, H, W, 3]``."""
        return self.autoencoder.decode(latents)

    def compact_actions(self, actions: Any, batch_shape: tuple[int, ...]) -> torch.Tensor:
        """Compact actions (or, for Minecraft, MineRL dicts nested as ``batch_shape`` lists) -> ``int64`` tensor
        ``[*batch_shape, *compact_shape]`` on the model's device."""
        compact = self.config.domain.compact_batch(actions, batch_shape)
        return torch.as_tensor(compact, dtype=torch.long, device=self.device)

    def _context_latents(self, frames: Any, what: str) -> torch.Tensor:
        """``uint8[n, T, H, W, 3]`` -> clean latents ``[n, T, C, h, w]``."""
        if not isinstance(frames, torch.Tensor):
            frames = torch.as_tensor(np.asarray(frames))
        H, W = self.config.frame_size
        if frames.ndim != 5 or tuple(frames.shape[2:]) != (H, W, 3) or frames.shape[1] < 1:
            raise FrameError(
                f"{what} must be uint8[B, T, {H}, {W}, 3] with T >= 1 context frames, got {tuple(frames.shape)}"
            )
        n, t = frames.shape[:2]
        if t > self.config.context_frames - 1:
            raise FrameError(
                f"a context of {t} frames leaves no room for a new frame in {self.config.name}'s window of "
                f"{self.config.context_frames}; pass at most {self.config.context_frames - 1} frames"
            )
        return self.encode(frames.reshape(n * t, H, W, 3)).reshape(n, t, *self.latent_shape)

    def _context_actions(self, actions: Any, n: int, t: int) -> torch.Tensor:
        empty = actions is None or (hasattr(actions, "__len__") and np.asarray(actions, dtype=object).size == 0)
        if t == 1 and empty:
            return torch.zeros(n, 0, *self.config.domain.compact_shape, dtype=torch.long, device=self.device)
        if actions is None:
            raise ActionError(f"a context of {t} frames needs the {t - 1} actions between them, got None")
        return self.compact_actions(actions, (n, t - 1))

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(C, h, w)`` of one frame's latent."""
        return (self.config.latent_channels, *self.config.latent_grid)

    # --- state -------------------------------------------------------------------------------------------------

    def _new_state(self, batch: int, generators, sampling: NFDSampling | None, reference_frames) -> NFDState:
        c = self.config
        dtype = self.transformer.patch_embed.weight.dtype
        return NFDState(
            cache=self.transformer.new_cache(batch),
            latents=torch.zeros(batch, c.context_frames, *self.latent_shape, dtype=dtype, device=self.device),
            actions=torch.zeros(batch, c.context_frames, *c.domain.compact_shape, dtype=torch.long, device=self.device),
            present=torch.zeros(batch, c.context_frames, dtype=torch.bool, device=self.device),
            lengths=np.zeros(batch, dtype=np.int64),
            generators=check_generators(generators, batch),
            sampling=sampling if sampling is not None else self.sampling,
            reference_frames=(
                self.reference_frames if reference_frames is None else self._check_reference_frames(reference_frames)
            ),
            slides=np.zeros(batch, dtype=np.int64),
        )

    def _load_context(self, state: NFDState, rows: list[int], clean: torch.Tensor, actions: torch.Tensor) -> None:
        """Write contexts (clean latents ``[n, T, C, h, w]``, actions ``[n, T-1, *A]``) into slots ``rows``: draw
        each slot's context noise, store the noised latents and prefill all but the last frame."""
        n, t = clean.shape[:2]
        t_ctx = self.config.context_noise
        noise = draw_normal([state.generators[r] for r in rows], (t, *self.latent_shape), self.device)
        index = torch.as_tensor(rows, device=self.device)
        state.latents[index] = 0
        state.latents[index, :t] = ((1.0 - t_ctx) * clean + t_ctx * noise).to(state.latents.dtype)
        state.actions[index] = 0
        state.present[index] = False
        if t > 1:
            state.actions[index, 1:t] = actions
            state.present[index, 1:t] = True
        state.lengths[rows] = t
        self._prefill(state, rows)

    @torch.no_grad()
    def _prefill(self, state: NFDState, rows: list[int]) -> None:
        """Rebuild the cache of ``rows`` (windows of equal length) from their stored latents, all but the pending."""
        cached = int(state.lengths[rows[0]]) - 1
        assert all(int(state.lengths[r]) - 1 == cached for r in rows)
        index = torch.as_tensor(rows, device=self.device)
        state.cache.zero_(index)
        if cached > 0:
            t = torch.full((len(rows), cached), self.config.context_noise, device=self.device)
            start = torch.zeros(len(rows), dtype=torch.long, device=self.device)
            self.transformer.decode(state.latents[index, :cached], t, state.actions[index, :cached],
                                    state.present[index, :cached], start, state.cache, rows=index)  # fmt: skip

    def _slide_full_slots(self, state: NFDState) -> None:
        full = np.nonzero(state.lengths + 1 > self.config.context_frames)[0]
        if len(full) == 0:
            return
        keep = state.reference_frames
        groups: dict[int, list[int]] = {}
        for b in full.tolist():
            length = int(state.lengths[b])
            drop = length - keep
            for tensor in (state.latents, state.actions, state.present):
                tensor[b, :keep] = tensor[b, drop:length].clone()
                tensor[b, keep:] = 0
            state.present[b, 0] = False  # a window's first frame carries no action
            state.lengths[b] = keep
            state.slides[b] += 1
            groups.setdefault(keep, []).append(b)
        for rows in groups.values():
            self._prefill(state, rows)

    # --- WorldModel protocol -----------------------------------------------------------------------------------

    def start(
        self,
        frames: torch.Tensor,
        actions: Any = None,
        generators: Sequence[torch.Generator] | None = None,
        *,
        sampling: NFDSampling | None = None,
        reference_frames: int | None = None,
    ) -> NFDState:
        """Prefill ``B`` environment slots.

        Args:
            frames: ``uint8[B, T, H, W, 3]`` context frames (``T <= context_frames - 1``).
            actions: the ``T - 1`` compact actions between them (``None`` when ``T == 1``).
            generators: one ``torch.Generator`` per slot (required: sampling is stochastic).
            sampling: overrides the model's default :class:`NFDSampling`.
            reference_frames: overrides the frames kept when a window slides.
        """
        clean = self._context_latents(frames, "frames")
        return self.start_latents(clean, actions, generators, sampling=sampling, reference_frames=reference_frames)

    def start_latents(
        self,
        latents: torch.Tensor,
        actions: Any = None,
        generators: Sequence[torch.Generator] | None = None,
        *,
        sampling: NFDSampling | None = None,
        reference_frames: int | None = None,
    ) -> NFDState:
        """Like :meth:`start` from clean normalised latents ``[B, T, C, h, w]`` instead of frames."""
        if latents.ndim != 5 or tuple(latents.shape[2:]) != self.latent_shape or latents.shape[1] < 1:
            raise FrameError(f"latents must be [B, T, {', '.join(map(str, self.latent_shape))}] with T >= 1, got "
                             f"{tuple(latents.shape)}")  # fmt: skip
        if latents.shape[1] > self.config.context_frames - 1:
            raise FrameError(f"a context of {latents.shape[1]} frames leaves no room for a new frame; pass at most "
                             f"{self.config.context_frames - 1}")  # fmt: skip
        n, t = latents.shape[:2]
        context_actions = self._context_actions(actions, n, t)
        state = self._new_state(n, generators, sampling, reference_frames)
        self._load_context(state, list(range(n)), latents.to(self.device).float(), context_actions)
        return state

    def step(self, state: NFDState, actions: Any) -> torch.Tensor:
        """Advance every slot by one action (compact ``[B, ...]``); returns the new frames ``uint8[B, H, W, 3]``."""
        return self.decode(self.step_latents(state, actions))

    @torch.no_grad()
    def step_latents(self, state: NFDState, actions: Any, *, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Like :meth:`step` but returns the new frames' clean normalised latents ``float32[B, C, h, w]``.

        ``noise``: the initial noise ``x_1`` (default: drawn from each slot's generator).
        """
        self.begin_frame(state, actions)
        x = self.draw_noise(state) if noise is None else noise.to(self.device, torch.float32)
        solver = FlowSolver(state.sampling)
        for i, t in enumerate(solver.times[:-1]):
            x = solver.step(i, x, self.velocity(state, x, t))
        self.end_frame(state, x)
        return x

    def reset_slots(
        self,
        state: NFDState,
        env_ids: Sequence[int],
        frames: torch.Tensor,
        actions: Any = None,
        generators: Sequence[torch.Generator] | None = None,
    ) -> None:
        """Restart slots ``env_ids`` from new contexts ``frames [len(env_ids), T, H, W, 3]`` (and the ``T - 1``
        actions between them); other slots are untouched. ``generators`` (one per reset slot) replace theirs."""
        if state.frame is not None:
            raise ConfigError("reset_slots during a frame (between begin_frame and end_frame) is not allowed")
        rows = self._check_slots(state, env_ids, "env_ids")
        clean = self._context_latents(frames, "frames")
        if clean.shape[0] != len(rows):
            raise FrameError(f"got {clean.shape[0]} contexts for {len(rows)} env_ids")
        context_actions = self._context_actions(actions, len(rows), clean.shape[1])
        if generators is not None:
            for r, g in zip(rows, check_generators(generators, len(rows))):
                state.generators[r] = g
        self._load_context(state, rows, clean, context_actions)

    def copy_slots(self, state: NFDState, src_ids: Sequence[int], dst_ids: Sequence[int]) -> None:
        """Copy slots ``src_ids[i] -> dst_ids[i]`` (cache, window, length; not the generators), e.g. to prefill a
        shared context once and fan it out to a GRPO group."""
        src = self._check_slots(state, src_ids, "src_ids", unique=False)
        dst = self._check_slots(state, dst_ids, "dst_ids")
        if len(src) != len(dst):
            raise ValueError(f"src_ids and dst_ids must have the same length, got {len(src)} and {len(dst)}")
        s = torch.as_tensor(src, device=self.device)
        d = torch.as_tensor(dst, device=self.device)
        state.cache.copy_(s, d)
        for tensor in (state.latents, state.actions, state.present):
            tensor[d] = tensor[s]
        state.lengths[dst] = state.lengths[src]
        state.slides[dst] = state.slides[src]

    def start_group(
        self,
        frames: torch.Tensor,
        actions: Any,
        generators: Sequence[torch.Generator],
        *,
        group_size: int,
        context_generators: Sequence[torch.Generator] | None = None,
        sampling: NFDSampling | None = None,
        reference_frames: int | None = None,
    ) -> NFDState:
        """:meth:`start` for ``n`` contexts, each run by a group of ``group_size`` slots (``n * group_size`` in all;
        slot ``p * group_size + g`` is member ``g`` of context ``p``): each context is encoded, context-noised and
        prefilled **once**, then copied to the other slots of its group (:meth:`copy_slots`), so the whole group
        starts from the same noised context.

        Args:
            frames: ``uint8[n, T, H, W, 3]`` contexts (``T <= context_frames - 1``).
            actions: the ``T - 1`` compact actions between them (``None`` when ``T == 1``).
            generators: one per slot, ``n * group_size`` in slot order; every later draw of a slot uses its own.
            group_size: slots per context.
            context_generators: one per context: draws its context noise (default: the generator of the group's
                first slot).
            sampling, reference_frames: as for :meth:`start`.
        """
        if isinstance(group_size, bool) or int(group_size) != group_size or group_size < 1:
            raise ConfigError(f"group_size must be an integer >= 1, got {group_size!r}")
        generators = list(generators)
        clean = self._context_latents(frames, "frames")
        n, t = clean.shape[:2]
        leaders = [p * group_size for p in range(n)]
        loading = list(generators)  # the leaders draw the context noise, then get their own generators back
        if context_generators is not None:
            if len(context_generators) != n:
                raise ConfigError(f"expected {n} context_generators (one per context), got {len(context_generators)}")
            for leader, g in zip(leaders, context_generators):
                loading[leader] = g
        state = self._new_state(n * group_size, loading, sampling, reference_frames)
        context_actions = self._context_actions(actions, n, t)
        self._load_context(state, leaders, clean, context_actions)
        if group_size > 1:
            for leader in leaders:
                self.copy_slots(state, [leader] * (group_size - 1), range(leader + 1, leader + group_size))
        for leader in leaders:
            state.generators[leader] = generators[leader]
        return state

    @staticmethod
    def _check_slots(state: NFDState, ids: Sequence[int], what: str, *, unique: bool = True) -> list[int]:
        ids = [int(i) for i in np.asarray(ids, dtype=np.int64).reshape(-1)]
        if not ids:
            raise ValueError(f"{what} is empty")
        bad = [i for i in ids if not 0 <= i < state.batch_size]
        if bad:
            raise ValueError(f"{what} {bad} out of range for {state.batch_size} slots")
        if unique and len(set(ids)) != len(ids):
            raise ValueError(f"{what} must not repeat a slot, got {ids}")
        return ids

    # --- step-level hooks (samplers) ---------------------------------------------------------------------------

    def denoising_sampling(self, sampler: str | None = None, steps: int | None = None) -> NFDSampling:
        """The model's :class:`NFDSampling` with ``sampler`` (``"euler"`` or ``"dpm-solver++"``) and ``steps`` when
        given (what the vector env's ``sampler``/``sampling_steps`` options select)."""
        return choose_sampling(self.sampling, sampler, steps)

    def window_lengths(self, state: NFDState) -> np.ndarray:
        """``int64[B]`` frames in each slot's window, the last one pending (a copy)."""
        return state.lengths.copy()

    def window_latents(self, state: NFDState) -> torch.Tensor:
        """``[B, context_frames, C, h, w]`` each slot's window as fed to the transformer: context-noised latents,
        zero past the window's length (a copy)."""
        return state.latents.clone()

    def draw_noise(self, state: NFDState) -> torch.Tensor:
        """One frame of standard normal noise per slot, from the slots' generators: ``float32[B, C, h, w]``."""
        return draw_normal(state.generators, self.latent_shape, self.device)

    def begin_frame(self, state: NFDState, actions: Any) -> None:
        """Start a new frame of every slot, led to by ``actions`` (compact ``[B, ...]``); slides full windows."""
        if state.frame is not None:
            raise ConfigError("begin_frame called twice without end_frame")
        compact = self.compact_actions(actions, (state.batch_size,))
        self._slide_full_slots(state)
        state.frame = FrameInProgress(actions=compact)

    @torch.no_grad()
    def velocity(self, state: NFDState, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """The model's velocity ``float32[B, C, h, w]`` for the new frames at ``x`` and flow time ``t`` (a number
        or ``[B]``); the first call of a frame also writes the pending frame into the cache."""
        frame = state.frame
        if frame is None:
            raise ConfigError("call begin_frame before velocity")
        b = state.batch_size
        device = self.device
        dtype = state.latents.dtype
        t = torch.as_tensor(t, dtype=torch.float32, device=device).expand(b)
        lengths = torch.as_tensor(state.lengths, device=device)
        rows = torch.arange(b, device=device)
        x = x.to(dtype)[:, None]
        if frame.pending_written:
            z, times, actions, start = x, t[:, None], frame.actions[:, None], lengths
            present = torch.ones(b, 1, dtype=torch.bool, device=device)
        else:
            last = lengths - 1
            z = torch.cat([state.latents[rows, last][:, None], x], dim=1)
            times = torch.stack([torch.full_like(t, self.config.context_noise), t], dim=1)
            actions = torch.stack([state.actions[rows, last], frame.actions], dim=1)
            present = torch.stack([state.present[rows, last], torch.ones_like(state.present[:, 0])], dim=1)
            start = last
            frame.pending_written = True
        v = self.transformer.decode(z, times, actions, present, start, state.cache)[:, -1].float()
        frame.calls += 1
        if not torch.isfinite(v).all():
            bad = torch.nonzero(~torch.isfinite(v).flatten(1).all(1)).flatten().tolist()
            raise NumericalError(
                f"NaN/inf velocity for slots {bad} at denoising call {frame.calls} of step {state.steps} (t = "
                f"{t[bad[0]].item():.4f}); the weights or inputs are corrupted, or the dtype overflows (use float32)"
            )
        return v

    @torch.no_grad()
    def end_frame(self, state: NFDState, latents: torch.Tensor) -> torch.Tensor:
        """Finish the frame with clean latents ``[B, C, h, w]``: they enter each window as the new pending frame,
        context-noised with the slot's generator. Returns the noised latents as stored."""
        frame = state.frame
        if frame is None:
            raise ConfigError("call begin_frame before end_frame")
        if not frame.pending_written:
            raise ConfigError("end_frame without a velocity call: the pending frame never entered the cache")
        if not torch.isfinite(latents).all():
            bad = torch.nonzero(~torch.isfinite(latents).flatten(1).all(1)).flatten().tolist()
            raise NumericalError(f"sampled latents of slots {bad} at step {state.steps} are NaN/inf")
        t_ctx = self.config.context_noise
        noise = self.draw_noise(state)
        noised = ((1.0 - t_ctx) * latents.float() + t_ctx * noise).to(state.latents.dtype)
        rows = torch.arange(state.batch_size, device=self.device)
        lengths = torch.as_tensor(state.lengths, device=self.device)
        state.latents[rows, lengths] = noised
        state.actions[rows, lengths] = frame.actions
        state.present[rows, lengths] = True
        state.lengths += 1
        state.steps += 1
        state.frame = None
        return noised


# --- checkpoints ------------------------------------------------------------------------------------------------


def load_weights(model: NFD, state_dict: dict[str, torch.Tensor], *, source: str) -> None:
    """Strictly load ``state_dict`` into ``model``; raises CheckpointError with a readable key diff."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    diff = state_dict_diff(expected, state_dict)
    if diff:
        raise CheckpointError(
            f"{source} does not match {model.config.name}: {diff}. Check that the NFD config and the autoencoder "
            "config belong to these weights."
        )
    with torch.no_grad():
        model.load_state_dict(state_dict, strict=True)


def save_nfd(model: NFD, path: str | Path) -> Path:
    """Write ``model``'s weights and configs (JSON metadata: ``kind``, ``nfd_config``, ``ae_config``, ``sampling``) so
    that ``NFD.from_checkpoint(path)`` rebuilds it without any other file."""
    from dataclasses import asdict

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ConfigError(f"NFD checkpoints are .safetensors files, got {path.name!r}")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {
        "format": "pt",
        "kind": SAFETENSORS_KIND,
        "nfd_config": model.config.to_json(),
        "ae_config": json.dumps(model.autoencoder.config, sort_keys=True),
        "sampling": json.dumps(asdict(model.sampling), sort_keys=True),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors_file(tensors, path, meta)
    return path


def load_nfd(
    path: str | Path,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    config: Any = None,
    vae_config: Any = None,
    **options: Any,
) -> NFD:
    """Registry loader: ``NFD.from_checkpoint(path, ...)``. ``config`` / ``vae_config`` (the MineWorld loader's
    options, passed as ``None`` by envs) must stay unset: an NFD file holds its own configs."""
    if config is not None or vae_config is not None:
        raise ConfigError(
            f"{path} is an NFD checkpoint: its configs are stored in the file, so config= / vae_config= cannot be "
            "used with it; drop them"
        )
    if options.pop("compile", False):
        raise ConfigError(
            f"{path} is an NFD model: compile=True applies to autoregressive (MineWorld) models only; drop it"
        )
    return NFD.from_checkpoint(path, device=device, dtype=dtype, **options)


def is_nfd_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a safetensors file whose metadata says it holds an NFD model (reads the header only)."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return False
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return (f.metadata() or {}).get("kind") == SAFETENSORS_KIND
    except (SafetensorError, OSError):
        return False
