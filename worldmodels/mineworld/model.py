"""MineWorld: a VQ tokenizer plus a Llama decoder over interleaved frame and action tokens, as a batched
:class:`worldmodels.protocol.WorldModel`.

Sequence of one environment slot (``hw`` tokens per frame, ``A`` per action, consecutive positions from 0)::

    [frame_0] [action_1] [frame_1] [action_2] [frame_2] ...

``frames[k + 1]`` is the result of the action between them. A slot's last image token is kept *pending* (not yet
in the KV cache): the next step feeds it together with the new action's tokens (the official boundary chunk), and
the logits at the action's last token give the first token of the new frame.

When the next frame would not fit in ``max_position_embeddings``, the slot keeps its latest ``reference_frames``
frames (and the actions between them) and re-prefills its cache from scratch, like the official demo
(``mineworld.py``: drop the oldest pairs, ``refresh_kvcache()``, prefill). Other slots are untouched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from worldmodels.errors import ActionError, ConfigError, FrameError
from worldmodels.mineworld.checkpoint import fill_tokenizer_weights, load_checkpoint, load_weights, stored_sampling
from worldmodels.mineworld.config import MineWorldConfig
from worldmodels.mineworld.decoding import DecodeStats, FrameDecoder
from worldmodels.mineworld.sampling import DEFAULT_DRAFT_LEN, SamplingConfig, check_generators, draw_uniforms
from worldmodels.mineworld.transformer import KVCache, Transformer
from worldmodels.mineworld.vq import VQTokenizer
from worldmodels.protocol import ModelSpec


FAST_VQ_FRAMES = 16
"""Frames per VQ decoder call in compile mode (the batch is split into calls of at most this many)."""


def _is_empty(actions: Any) -> bool:
    """``None``, an empty array, or lists of empty lists (no context actions)."""
    if actions is None:
        return True
    if isinstance(actions, (torch.Tensor, np.ndarray)):
        return actions.size == 0 if isinstance(actions, np.ndarray) else actions.numel() == 0
    if isinstance(actions, (list, tuple)):
        return all(_is_empty(a) for a in actions)
    return False


@dataclass(frozen=True)
class ContextWindow:
    """One context window of a slot's rollout: the frames it holds and which of them were generated inside it.

    Frame indices count the slot's frames: ``0 .. C-1`` the context, ``C .. C+F-1`` the generated frames. The window
    holds frames ``first .. last`` and the actions between them, at positions from 0; frames ``first_scored .. last``
    were sampled in it (the ones before are kept context).
    """

    first: int
    last: int
    first_scored: int

    @property
    def n_frames(self) -> int:
        return self.last - self.first + 1


def context_windows(
    config: MineWorldConfig, n_context: int, n_frames: int, reference_frames: int
) -> tuple[ContextWindow, ...]:
    """The context windows a rollout of ``n_frames`` frames after ``n_context`` context frames goes through.

    The plan of :meth:`MineWorld.step`'s sliding rule (``_slide_full_slots``): before a step whose action and frame
    would not fit in ``max_position_embeddings``, only the last ``reference_frames`` frames (and the actions between
    them) are kept. A teacher-forced replay scores each token under the window it was sampled in; every slide of a
    rollout shows in ``state.slides``, so a caller can check the plan against what happened.
    """
    hw, a = config.tokens_per_frame, config.tokens_per_action
    limit = config.max_position_embeddings
    length = n_context * hw + (n_context - 1) * a
    if length > limit:
        raise ConfigError(
            f"a context of {n_context} frames needs {length} positions but {config.name} has {limit}; use fewer "
            "context frames"
        )
    windows: list[ContextWindow] = []
    first, first_scored = 0, n_context
    for k in range(n_frames):
        frame = n_context + k
        if length + a + hw > limit:  # the rule of _slide_full_slots
            if frame > first_scored:
                windows.append(ContextWindow(first, frame - 1, first_scored))
            first, first_scored = frame - reference_frames, frame
            length = reference_frames * hw + (reference_frames - 1) * a
        length += a + hw
    windows.append(ContextWindow(first, n_context + n_frames - 1, first_scored))
    return tuple(windows)


@dataclass
class MineWorldState:
    """Rollout state of ``B`` environment slots (opaque to envs; see :class:`MineWorld`)."""

    cache: KVCache
    seq: torch.Tensor
    """``int64[B, max_position_embeddings]`` every slot's token sequence (the tokens actually generated)."""
    lengths: np.ndarray
    """``int64[B]`` tokens in each slot's sequence, including the pending last image token."""
    generators: list[torch.Generator] | None
    sampling: SamplingConfig
    reference_frames: int
    steps: int = 0
    slides: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """``int64[B]`` how many times each slot's context slid (for logging and tests)."""
    decode_stats: DecodeStats = field(default_factory=DecodeStats)
    """Forwards per frame and speculative acceptance, accumulated over this state's steps."""

    @property
    def batch_size(self) -> int:
        return int(self.seq.shape[0])


class MineWorld(nn.Module):
    """MineWorld world model (``microsoft/mineworld``), usable with official checkpoints and small trained ones.

    Children ``transformer`` (:class:`Transformer`) and ``tokenizer`` (:class:`VQTokenizer`) reproduce the
    official ``LlamaLVM`` state-dict keys. Build with :meth:`from_config` (random weights) or
    :meth:`from_checkpoint`.

    Args:
        config: architecture and token layout.
        vq_config: diffusers ``VQModel`` config dict (the official ``checkpoints/vae/config.json``).
        reference_frames: frames kept when a slot's context is full (official demo: 8). Default:
            ``min(8, context_frames // 2)``, at least 1; at most what leaves room for one new frame.
        sampling: default :class:`SamplingConfig` for :meth:`start` and :meth:`token_sampling` (its generation
            defaults; saved with the weights).
        compile: the fast path for many steps. Decode steps run compiled (:class:`~worldmodels.mineworld.decoding.
            StaticStep`: the same tokens as eager; each new batch size compiles once, seconds to a minute on a CPU),
            and :meth:`step` VQ-decodes its frames in calls of up to :data:`FAST_VQ_FRAMES` instead of one by one,
            with channels-last activations (2.6x and another 1.3x less VQ time per frame at 64 envs on the 2-core
            CPU). Convolution kernels depend on the call size and layout, so a frame's pixels can then differ by one
            intensity level (on ~1e-4 of the values) with the batch it was decoded in; the tokens never do. Eager
            mode keeps every frame's pixels independent of its batch.
        fused_projections: see :class:`Transformer` (default: on up to 100M parameters).
    """

    def __init__(
        self,
        config: MineWorldConfig,
        vq_config: dict[str, Any],
        *,
        reference_frames: int | None = None,
        sampling: SamplingConfig | None = None,
        compile: bool = False,
        fused_projections: bool | None = None,
    ):
        super().__init__()
        self.config = config
        self.transformer = Transformer(config, fused_projections=fused_projections)
        self.tokenizer = VQTokenizer(vq_config, config.frame_size)
        if self.tokenizer.grid != config.image_grid:
            raise ConfigError(
                f"the VQ config maps {config.frame_size} frames to a {self.tokenizer.grid} grid, but {config.name} "
                f"expects image_grid={config.image_grid}"
            )
        if self.tokenizer.codebook_size != config.image_vocab_size:
            raise ConfigError(
                f"the VQ codebook has {self.tokenizer.codebook_size} entries, but {config.name} expects "
                f"image_vocab_size={config.image_vocab_size}"
            )
        self.spec = ModelSpec(
            name=config.name,
            domain=config.action_domain,
            frame_size=config.frame_size,
            fps=config.fps,
            context_frames=config.context_frames,
        )
        self.reference_frames = self._check_reference_frames(reference_frames)
        self.sampling = sampling if sampling is not None else SamplingConfig()
        self.compile = compile
        self._decoders: dict[tuple, FrameDecoder] = {}

    # --- construction ----------------------------------------------------------------------------------------

    @classmethod
    def from_config(
        cls,
        config: MineWorldConfig,
        vq_config: dict[str, Any],
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        **options: Any,
    ) -> MineWorld:
        """A randomly initialised model (normal(0, 0.02) transformer weights; diffusers' VQ init).

        ``device="meta"`` builds the structure without allocating weights (e.g. to inspect key names).
        """
        with torch.device(device):
            model = cls(config, vq_config, **options)
        if torch.device(device).type != "meta":
            model._init_transformer_weights()
        return model.to(dtype=dtype)

    @classmethod
    def empty(
        cls,
        config: MineWorldConfig,
        vq_config: dict[str, Any],
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        **options: Any,
    ) -> MineWorld:
        """A model with uninitialised weights (to be filled by ``load_state_dict``); rotary tables are valid."""
        with torch.device("meta"):
            model = cls(config, vq_config, **options)
        model = model.to(dtype=dtype).to_empty(device=device)
        model.transformer.model.reset_rope()
        return model

    @classmethod
    def from_checkpoint(
        cls,
        ckpt: str | Path,
        config: str | Path | MineWorldConfig | None = None,
        *,
        vae_config: str | Path | dict | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        **options: Any,
    ) -> MineWorld:
        """Load an official ``.ckpt`` or a ``.safetensors`` written by :func:`save_safetensors`.

        Args:
            ckpt: the checkpoint file.
            config: an official yaml path, a preset name (``"300M_16f"``, ``"mineworld-300m-16f"``) or a
                :class:`MineWorldConfig`. ``None``: the config stored in a ``.safetensors``; for an official
                ``.ckpt``, ``<ckpt dir>/../configs/<stem>.yaml`` if it exists, else the preset named ``<stem>``.
            vae_config: the VQ ``config.json`` (path or dict); default ``<ckpt dir>/vae/config.json`` (official
                layout) or the one stored in a ``.safetensors``. Tokenizer weights missing from ``ckpt`` are read
                from ``vae.ckpt`` next to it.
            device, dtype: where and in which precision to run (fp32 on CPU; the official code runs fp16 on GPU).
            options: :class:`MineWorld` keyword arguments (``reference_frames``, ``sampling``, ``compile``,
                ``fused_projections``). ``sampling`` defaults to the one the file stores (:func:`save_safetensors`
                writes the model's :attr:`sampling` when it is not the plain default).
        """
        model_config, vq_config, state_dict, vae_ckpt = load_checkpoint(ckpt, config, vae_config=vae_config)
        if options.get("sampling") is None:
            options["sampling"] = stored_sampling(ckpt)
        model = cls.empty(model_config, vq_config, device=device, dtype=dtype, **options)
        fill_tokenizer_weights(state_dict, list(model.state_dict()), vae_ckpt, source=Path(ckpt).name)
        load_weights(model, state_dict, source=str(ckpt))
        return model.eval()

    @torch.no_grad()
    def _init_transformer_weights(self) -> None:
        for module in self.transformer.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
        for name, param in self.transformer.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)

    def _apply(self, fn, recurse=True):
        self._decoders = {}  # schedules live on the old device
        return super()._apply(fn, recurse)

    def _check_reference_frames(self, reference_frames: int | None) -> int:
        c = self.config
        hw, pair = c.tokens_per_frame, c.tokens_per_pair
        largest = (c.max_position_embeddings - hw) // pair  # R frames + one action + one new frame must fit
        if reference_frames is None:
            return max(1, min(8, c.context_frames // 2, largest))
        if isinstance(reference_frames, bool) or int(reference_frames) != reference_frames:
            raise ConfigError(f"reference_frames must be an integer, got {reference_frames!r}")
        if not 1 <= reference_frames <= largest:
            raise ConfigError(
                f"reference_frames={reference_frames} must lie in [1, {largest}] for {c.name} (the kept frames plus "
                f"one new frame must fit in {c.max_position_embeddings} positions)"
            )
        return int(reference_frames)

    # --- tokens ----------------------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.transformer.lm_head.weight.device

    def tokenize(self, frames: torch.Tensor) -> torch.Tensor:
        """``uint8[B, H, W, 3]`` RGB frames -> ``int64[B, h, w]`` image token ids."""
        return self.tokenizer.tokenize(frames)

    def detokenize(self, ids: torch.Tensor) -> torch.Tensor:
        """``int64[B, h, w]`` image token ids -> ``uint8[B, H, W, 3]`` RGB frames (see ``compile`` for the call
        size)."""
        if self.compile:
            return self.tokenizer.detokenize(ids, chunk=min(len(ids), FAST_VQ_FRAMES), channels_last=True)
        return self.tokenizer.detokenize(ids)

    def action_tokens(self, actions: Any, batch_shape: tuple[int, ...]) -> torch.Tensor:
        """Actions -> token ids ``int64[*batch_shape, tokens_per_action]`` on the model's device.

        ``actions``: compact integer arrays/tensors ``[*batch_shape, *compact_shape]``, or for the Minecraft
        domain MineRL dicts nested as ``batch_shape`` lists.
        """
        tokens = self.config.domain.encode(actions, batch_shape, offset=self.config.action_vocab_offset)
        return torch.as_tensor(tokens, dtype=torch.long, device=self.device)

    def logits(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits ``float[B, L, vocab_size]`` of ``int64[B, L]`` at positions ``0..L-1``."""
        if token_ids.ndim != 2:
            raise ValueError(f"token_ids must be int64[B, L], got shape {tuple(token_ids.shape)}")
        if token_ids.shape[1] > self.config.max_position_embeddings:
            raise ConfigError(
                f"{token_ids.shape[1]} tokens exceed max_position_embeddings={self.config.max_position_embeddings}"
            )
        if token_ids.numel() and (int(token_ids.min()) < 0 or int(token_ids.max()) >= self.config.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.config.vocab_size}), got {int(token_ids.max())}")
        return self.transformer(token_ids.to(self.device))

    # --- rollout state ---------------------------------------------------------------------------------------

    def _decoder(self, sampling: SamplingConfig) -> FrameDecoder:
        key = (sampling, self.compile)
        if key not in self._decoders:
            self._decoders[key] = FrameDecoder(
                self.transformer, self.config.image_grid, self.config.image_vocab_size, sampling, compile=self.compile
            )
        return self._decoders[key]

    def _frame_ids(self, frames: torch.Tensor, what: str) -> torch.Tensor:
        """``uint8[n, T, H, W, 3]`` -> ``int64[n, T, h*w]``."""
        if not isinstance(frames, torch.Tensor):
            frames = torch.as_tensor(np.asarray(frames))
        H, W = self.config.frame_size
        if frames.ndim != 5 or tuple(frames.shape[2:]) != (H, W, 3) or frames.shape[1] < 1:
            raise FrameError(
                f"{what} must be uint8[B, T, {H}, {W}, 3] with T >= 1 context frames, got {tuple(frames.shape)}"
            )
        n, t = frames.shape[:2]
        ids = self.tokenize(frames.reshape(n * t, H, W, 3))
        return ids.reshape(n, t, -1)

    def _context_actions(self, actions: Any, n: int, t: int) -> torch.Tensor:
        if t == 1 and _is_empty(actions):
            return torch.empty(n, 0, self.config.tokens_per_action, dtype=torch.long, device=self.device)
        if actions is None:
            raise ActionError(f"a context of {t} frames needs the {t - 1} actions between them, got None")
        return self.action_tokens(actions, (n, t - 1))

    def _load_context(
        self, state: MineWorldState, rows: list[int], frame_ids: torch.Tensor, action_tokens: torch.Tensor
    ) -> None:
        """Write contexts (``frame_ids [n, T, hw]``, ``action_tokens [n, T-1, A]``) into slots ``rows``."""
        n, t, hw = frame_ids.shape
        c = self.config
        length = t * hw + (t - 1) * c.tokens_per_action
        if length > c.max_position_embeddings:
            largest = (c.max_position_embeddings + c.tokens_per_action) // c.tokens_per_pair
            raise FrameError(
                f"a context of {t} frames needs {length} positions but {c.name} has {c.max_position_embeddings}; "
                f"pass at most {largest} frames"
            )
        frame_ids = frame_ids.to(self.device)
        pairs = torch.cat([frame_ids[:, :-1], action_tokens], dim=-1).reshape(n, -1)
        sequence = torch.cat([pairs, frame_ids[:, -1]], dim=-1)
        index = torch.as_tensor(rows, device=self.device)
        state.seq[index, :length] = sequence
        state.seq[index, length:] = 0
        state.lengths[rows] = length
        self._prefill(state, rows)

    @torch.no_grad()
    def _prefill(self, state: MineWorldState, rows: list[int]) -> None:
        """Rebuild the cache of ``rows`` (same length) from their sequences, all but the pending last token."""
        length = int(state.lengths[rows[0]])
        assert all(int(state.lengths[r]) == length for r in rows)
        index = torch.as_tensor(rows, device=self.device)
        state.cache.zero_(index)
        if length > 1:
            self.transformer.hidden_states(state.seq[index, : length - 1], state.cache, index)

    def _slide_full_slots(self, state: MineWorldState) -> None:
        c = self.config
        a, hw, pair = c.tokens_per_action, c.tokens_per_frame, c.tokens_per_pair
        full = np.nonzero(state.lengths + a + hw > c.max_position_embeddings)[0]
        if len(full) == 0:
            return
        groups: dict[int, list[int]] = {}
        for b in full.tolist():
            length = int(state.lengths[b])
            frames = (length + a) // pair
            drop = (frames - state.reference_frames) * pair
            new_length = length - drop
            state.seq[b, :new_length] = state.seq[b, drop:length].clone()
            state.seq[b, new_length:] = 0
            state.lengths[b] = new_length
            state.slides[b] += 1
            groups.setdefault(new_length, []).append(b)
        for rows in groups.values():
            self._prefill(state, rows)

    def _new_state(
        self,
        batch: int,
        generators: Sequence[torch.Generator] | None,
        sampling: SamplingConfig | None,
        reference_frames: int | None,
    ) -> MineWorldState:
        sampling = sampling if sampling is not None else self.sampling
        if sampling.decoding == "diagonal" and not 1 <= sampling.window <= self.config.image_grid[1]:
            raise ConfigError(
                f"diagonal decoding window must lie in [1, {self.config.image_grid[1]}], got {sampling.window}"
            )
        return MineWorldState(
            cache=self.transformer.new_cache(batch),
            seq=torch.zeros(batch, self.config.max_position_embeddings, dtype=torch.long, device=self.device),
            lengths=np.zeros(batch, dtype=np.int64),
            generators=check_generators(generators, batch, required=not sampling.greedy),
            sampling=sampling,
            reference_frames=(
                self.reference_frames if reference_frames is None else self._check_reference_frames(reference_frames)
            ),
            slides=np.zeros(batch, dtype=np.int64),
        )

    # --- WorldModel protocol ---------------------------------------------------------------------------------

    def start(
        self,
        frames: torch.Tensor,
        actions: Any = None,
        generators: Sequence[torch.Generator] | None = None,
        *,
        sampling: SamplingConfig | None = None,
        reference_frames: int | None = None,
    ) -> MineWorldState:
        """Prefill ``B`` environment slots.

        Args:
            frames: ``uint8[B, T, H, W, 3]`` context frames.
            actions: the ``T - 1`` actions between them (compact ``[B, T-1, ...]`` or MineRL dicts); may be
                ``None`` when ``T == 1``.
            generators: one ``torch.Generator`` per slot (may be ``None`` for greedy sampling).
            sampling: overrides the model's default :class:`SamplingConfig`.
            reference_frames: overrides the frames kept when a context slides.
        """
        frame_ids = self._frame_ids(frames, "frames")
        return self._start_from_ids(frame_ids, actions, generators, sampling, reference_frames)

    def _start_from_ids(self, frame_ids, actions, generators, sampling, reference_frames) -> MineWorldState:
        n, t, _ = frame_ids.shape
        action_tokens = self._context_actions(actions, n, t)
        state = self._new_state(n, generators, sampling, reference_frames)
        self._load_context(state, list(range(n)), frame_ids, action_tokens)
        return state

    def step(self, state: MineWorldState, actions: Any) -> torch.Tensor:
        """Advance every slot by one action (compact ``[B, ...]``); returns the new frames ``uint8[B, H, W, 3]``."""
        ids, _ = self.step_tokens(state, actions)
        return self.detokenize(ids)

    def step_tokens(
        self, state: MineWorldState, actions: Any, *, return_logprobs: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Like :meth:`step` but returns the image token grid ``int64[B, h, w]`` and, with ``return_logprobs``,
        each sampled token's log-probability under the sampling distribution ``float32[B, h, w]`` (0 for greedy;
        computed without gradients, e.g. as GRPO's old log-probs)."""
        tokens = self.action_tokens(actions, (state.batch_size,))
        return self._step_ids(state, tokens, return_logprobs)

    @torch.no_grad()
    def _step_ids(self, state: MineWorldState, action_tokens: torch.Tensor, return_logprobs: bool):
        c = self.config
        b, hw, a = state.batch_size, c.tokens_per_frame, c.tokens_per_action
        self._slide_full_slots(state)
        device = self.device
        lengths = torch.as_tensor(state.lengths, device=device)
        pending = state.seq.gather(1, (lengths - 1)[:, None])
        chunk_ids = torch.cat([pending, action_tokens], dim=1)
        prompt = state.seq[:, :hw]
        decoder = self._decoder(state.sampling)
        draft = None
        if decoder.verifies_drafts(b):  # the newest frame of each context (its last token pending)
            draft = state.seq.gather(1, (lengths - hw)[:, None] + torch.arange(hw, device=device))
        uniforms = None
        if not state.sampling.greedy:
            uniforms = draw_uniforms(state.generators, hw, device)
        tokens, logprobs = decoder.decode(
            state.cache, chunk_ids, lengths - 1, prompt, uniforms, draft=draft, return_logprobs=return_logprobs,
            frame_label=f"the frame of step call {state.steps}", stats=state.decode_stats,
        )  # fmt: skip
        index = lengths[:, None] + torch.arange(a + hw, device=device)
        state.seq.scatter_(1, index, torch.cat([action_tokens, tokens], dim=1))
        state.lengths += a + hw
        state.steps += 1
        grid = (b, *c.image_grid)
        return tokens.reshape(grid), (None if logprobs is None else logprobs.reshape(grid))

    def reset_slots(
        self,
        state: MineWorldState,
        env_ids: Sequence[int],
        frames: torch.Tensor,
        actions: Any = None,
        generators: Sequence[torch.Generator] | None = None,
    ) -> None:
        """Restart slots ``env_ids`` from new contexts ``frames [len(env_ids), T, H, W, 3]`` (and the ``T - 1``
        actions between them); other slots are untouched. ``generators`` (one per reset slot) replace theirs."""
        rows = self._check_slots(state, env_ids, "env_ids")
        frame_ids = self._frame_ids(frames, "frames")
        if frame_ids.shape[0] != len(rows):
            raise FrameError(f"got {frame_ids.shape[0]} contexts for {len(rows)} env_ids")
        action_tokens = self._context_actions(actions, len(rows), frame_ids.shape[1])
        if generators is not None:
            generators = check_generators(generators, len(rows), required=False)
            if state.generators is None:
                state.generators = [torch.Generator(device=self.device) for _ in range(state.batch_size)]
            for r, g in zip(rows, generators):
                state.generators[r] = g
        self._load_context(state, rows, frame_ids, action_tokens)

    def copy_slots(self, state: MineWorldState, src_ids: Sequence[int], dst_ids: Sequence[int]) -> None:
        """Copy slots ``src_ids[i] -> dst_ids[i]`` (KV cache, sequence, length; not the generators), e.g. to
        prefill a shared context once and fan it out to a GRPO group."""
        src = self._check_slots(state, src_ids, "src_ids", unique=False)
        dst = self._check_slots(state, dst_ids, "dst_ids")
        if len(src) != len(dst):
            raise ValueError(f"src_ids and dst_ids must have the same length, got {len(src)} and {len(dst)}")
        src_t = torch.as_tensor(src, device=self.device)
        dst_t = torch.as_tensor(dst, device=self.device)
        state.cache.copy_(src_t, dst_t)
        state.seq[dst_t] = state.seq[src_t]
        state.lengths[dst] = state.lengths[src]
        state.slides[dst] = state.slides[src]

    # --- group rollouts (post-training) ------------------------------------------------------------------------

    def token_sampling(self, **options: Any) -> SamplingConfig:
        """A :class:`SamplingConfig` from keyword options (``decoding``, ``window``, ``temperature``, ``top_p``,
        ``top_k``, ...: the vector env's autoregressive options); an option that is None keeps the model's default
        (:attr:`sampling`). A ``top_p`` or ``top_k`` given replaces the default's truncation (they are exclusive);
        ``top_p=1`` samples from the whole distribution."""
        given = {name: value for name, value in options.items() if value is not None}
        if "top_p" in given or "top_k" in given:
            given = {"top_p": None, "top_k": None, **given}
        if given.get("top_p") == 1:
            given["top_p"] = None  # keeping every token, exactly (a cumulative sum can round past 1)
        return dataclasses.replace(self.sampling, **given)

    def frame_tokens(self, frames: torch.Tensor) -> torch.Tensor:
        """Context frames ``uint8[n, T, H, W, 3]`` -> their image tokens ``int64[n, T, h*w]`` (what
        :meth:`start_group_tokens` takes, and what a teacher-forced replay of the rollout needs)."""
        return self._frame_ids(frames, "frames")

    def start_group(
        self,
        frames: torch.Tensor,
        actions: Any,
        generators: Sequence[torch.Generator] | None,
        *,
        group_size: int,
        sampling: SamplingConfig | None = None,
        reference_frames: int | None = None,
        share_prefix: bool = True,
    ) -> MineWorldState:
        """:meth:`start` for ``n`` contexts, each run by a group of ``group_size`` slots (``n * group_size`` in all):
        slot ``p * group_size + g`` is member ``g`` of context ``p``. See :meth:`start_group_tokens`."""
        return self.start_group_tokens(
            self.frame_tokens(frames), actions, generators, group_size=group_size, sampling=sampling,
            reference_frames=reference_frames, share_prefix=share_prefix,
        )  # fmt: skip

    def start_group_tokens(
        self,
        frame_ids: torch.Tensor,
        actions: Any,
        generators: Sequence[torch.Generator] | None,
        *,
        group_size: int,
        sampling: SamplingConfig | None = None,
        reference_frames: int | None = None,
        share_prefix: bool = True,
    ) -> MineWorldState:
        """Prefill each of ``n`` contexts (image tokens ``int64[n, T, h*w]`` and the ``T - 1`` actions between
        them) **once** and copy its cache to the other slots of its group (:meth:`copy_slots`).

        Args:
            frame_ids: the contexts' tokens (:meth:`frame_tokens`).
            actions: compact actions ``[n, T - 1, ...]`` (``None`` when ``T == 1``).
            generators: one per slot, ``n * group_size`` in slot order (may be ``None`` for greedy sampling).
            group_size: slots per context.
            sampling, reference_frames: as for :meth:`start`.
            share_prefix: ``False`` prefills every slot from its context instead (the same state, ``group_size``
                times the prefill work; for tests and benchmarks).
        """
        if isinstance(group_size, bool) or int(group_size) != group_size or group_size < 1:
            raise ConfigError(f"group_size must be an integer >= 1, got {group_size!r}")
        n, t, _ = frame_ids.shape
        rows = n * group_size
        state = self._new_state(rows, generators, sampling, reference_frames)
        action_tokens = self._context_actions(actions, n, t)
        if share_prefix:
            leaders = [p * group_size for p in range(n)]
            self._load_context(state, leaders, frame_ids, action_tokens)
            if group_size > 1:
                for leader in leaders:
                    self.copy_slots(state, [leader] * (group_size - 1), range(leader + 1, leader + group_size))
        else:
            self._load_context(state, list(range(rows)), frame_ids.repeat_interleave(group_size, 0),
                               action_tokens.repeat_interleave(group_size, 0))  # fmt: skip
        return state

    def context_windows(
        self, n_context: int, n_frames: int, reference_frames: int | None = None
    ) -> tuple[ContextWindow, ...]:
        """The context windows of a rollout of ``n_frames`` after ``n_context`` context frames (see
        :func:`context_windows`); ``reference_frames`` as for :meth:`start`."""
        keep = self.reference_frames if reference_frames is None else self._check_reference_frames(reference_frames)
        return context_windows(self.config, n_context, n_frames, keep)

    @staticmethod
    def _check_slots(state: MineWorldState, ids: Sequence[int], what: str, *, unique: bool = True) -> list[int]:
        ids = [int(i) for i in np.asarray(ids, dtype=np.int64).reshape(-1)]
        if not ids:
            raise ValueError(f"{what} is empty")
        bad = [i for i in ids if not 0 <= i < state.batch_size]
        if bad:
            raise ValueError(f"{what} {bad} out of range for {state.batch_size} slots")
        if unique and len(set(ids)) != len(ids):
            raise ValueError(f"{what} must not repeat a slot, got {ids}")
        return ids

    # --- batch generation ------------------------------------------------------------------------------------

    def generate_tokens(
        self,
        first_frame_ids: torch.Tensor,
        actions: Any,
        *,
        decoding: str = "naive",
        window: int = 2,
        draft_len: int = DEFAULT_DRAFT_LEN,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generators: Sequence[torch.Generator] | None = None,
        reference_frames: int | None = None,
        return_logprobs: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The official evaluation protocol: frame 0 plus ``n`` actions -> ``n`` generated frames.

        Prompt = frame 0's tokens + action 1's tokens; action ``k + 1`` follows generated frame ``k``. Rollouts
        longer than the context slide (see the module docstring).

        Args:
            first_frame_ids: ``int64[B, h, w]`` tokens of the conditioning frame.
            actions: ``n`` actions per environment: compact ``[B, n, ...]`` or, for Minecraft, MineRL dicts
                (a list over ``B`` of lists over ``n``).
            decoding, window, draft_len, temperature, top_k, top_p: see :class:`SamplingConfig`.
            generators: one per environment; required unless greedy (``temperature=0`` or ``top_k=1``).
            return_logprobs: also return the log-probability of every sampled token.

        Returns:
            ``int64[B, n, h, w]`` (and ``float32[B, n, h, w]`` log-probs with ``return_logprobs``).
        """
        sampling = SamplingConfig(
            temperature=temperature, top_k=top_k, top_p=top_p, decoding=decoding, window=window, draft_len=draft_len
        )
        if first_frame_ids.ndim != 3 or tuple(first_frame_ids.shape[1:]) != self.config.image_grid:
            raise FrameError(
                f"first_frame_ids must be int64[B, {self.config.image_grid[0]}, {self.config.image_grid[1]}], got "
                f"{tuple(first_frame_ids.shape)}"
            )
        ids = first_frame_ids.to(self.device, torch.long)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.config.image_vocab_size):
            raise FrameError(f"image token ids must lie in [0, {self.config.image_vocab_size})")
        b = ids.shape[0]
        if isinstance(actions, torch.Tensor):
            n = actions.shape[1] if actions.ndim >= 2 else -1
        elif isinstance(actions, np.ndarray):
            n = actions.shape[1] if actions.ndim >= 2 else -1
        else:
            n = len(actions[0]) if len(actions) else 0
        if n < 1:
            raise ActionError(f"generate_tokens needs actions of shape [B, n, ...] with n >= 1 (B={b})")
        action_tokens = self.action_tokens(actions, (b, n))
        state = self._start_from_ids(ids.reshape(b, 1, -1), None, generators, sampling, reference_frames)
        frames, logprobs = [], []
        for k in range(n):
            tokens, lp = self._step_ids(state, action_tokens[:, k], return_logprobs)
            frames.append(tokens)
            logprobs.append(lp)
        out = torch.stack(frames, dim=1)
        if return_logprobs:
            return out, torch.stack(logprobs, dim=1)
        return out
