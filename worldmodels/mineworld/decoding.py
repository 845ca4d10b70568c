"""Decoding one frame of image tokens: naive raster order and MineWorld's diagonal decoding.

Every frame starts with one *boundary chunk*: the previous frame's last image token (not yet in the cache) plus
the action's tokens, at consecutive positions; the logits at the last action token give the frame's first token.
The remaining tokens follow a :class:`Schedule` of decode steps, each feeding one input token per active row:

* **naive**: ``h*w - 1`` steps, token ``k - 1`` in, token ``k`` out (``naive_generate`` of ``lvm.py``).
* **diagonal** (``img_diagd_generate`` in ``microsoft/mineworld: diagonal_decoding.py``, arXiv 2503.14070): row
  ``r + 1`` starts once row ``r`` holds ``window`` tokens, and each step advances every active row by one token.
  A row ``r`` with ``c >= 1`` tokens feeds token ``(r, c - 1)`` at its own position; a row that is just starting
  feeds token ``r*w - 1`` of the *prompt frame* at position ``r*w - 1`` of the current frame (the official
  ``append_policy``), i.e. a stand-in for the unfinished last token of the row above. The last token of every
  row but the final one is therefore never fed to the model (its cache slot keeps the stand-in), and queries see
  the not-yet-written slots of the rows above as zeros: the official mask is plain causal by position. Both are
  reproduced deliberately. Forwards per frame (incl. the chunk) on the official 14x24 grid: 24 + 13*window.

Deviations, documented: the prompt frame is the oldest frame of the environment's context (frame 0 in the
official evaluation, the only case the official code covers); unwritten cache slots read as zeros because a slot is
zeroed whenever it is (re)started, whereas ``inference.py`` never clears its cache between clips (stale values
from the previous clip); the Gradio demo's variant (``img_diagd_prepare_inputs_for_gradio``, which repeats the
row above's newest input as the stand-in) is not implemented.

* **speculative** (Leviathan et al. 2023, Chen et al. 2023, with a copy draft): the draft for grid token ``j`` is
  the previous frame's token ``j`` (consecutive frames are mostly identical token for token). Each forward feeds
  every slot's current token plus the next ``k - 1`` drafts at consecutive positions (``k <= draft_len``, chosen
  from the acceptance so far, see :attr:`FrameDecoder.adaptive_width`), which gives the model's distribution at
  ``k`` consecutive grid indices. Every query draws its token with naive decoding's sampler from naive decoding's
  uniform for that index (:func:`~worldmodels.mineworld.sampling.sample`); walking left to right, a draft is kept
  iff it was drawn (probability ``p(draft)``), and the first drawn token that differs from its draft ends the
  slot's run. Its prefix held only decided tokens, so it is naive decoding's token too: speculative decoding draws
  naive decoding's tokens and log-probabilities, up to float rounding of the logits of a wider forward (equal
  tokens in the tests), and greedy speculative equals greedy naive. The tokens drawn past the first rejection
  become the next drafts (:attr:`FrameDecoder.refresh_drafts`). The boundary chunk carries the first drafts too.
  Slots advance at their own pace (per-slot positions); a slot that is done feeds no-ops until the slowest slot
  finishes. Speculative decoding syncs with the host once per forward (to know when to stop). Compiled naive
  decoding of up to :data:`COMPILED_NAIVE_DRAFT_BATCH` slots runs this way (:meth:`FrameDecoder.verifies_drafts`):
  a step of few envs is bound by reading the weights once per forward, and a forward decides ~7 tokens on Crafter.

  Cache correctness: a query attends to key positions ``<=`` its own, and every forward writes its inputs' K/V
  before attending, so the entries of rejected drafts (positions at or after the slot's first undecided token) are
  never read before the forward that overwrites them with the decided token. No-op inputs (past a slot's last
  grid index) all sit at the frame's last position, which holds no K/V in any decoding (the pending token) and is
  written by the next frame's boundary chunk before anything reads it.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from worldmodels.errors import ConfigError, NumericalError
from worldmodels.mineworld.sampling import SamplingConfig, sample
from worldmodels.mineworld.transformer import MATVEC_BATCH, KVCache, StepWeights, Transformer, static_decode_step


@dataclass(frozen=True)
class Schedule:
    """Decode steps after the boundary chunk, as host lists (see :func:`naive_schedule`)."""

    src: tuple[tuple[int, ...], ...]
    """Per step, the input token of each active row: an index into ``[frame tokens (h*w) | prompt frame (h*w)]``."""
    pos: tuple[tuple[int, ...], ...]
    """Per step, the position of each input relative to the frame's first token."""
    out: tuple[tuple[int, ...], ...]
    """Per step, the flat grid index of the token each active row predicts."""

    @property
    def n_steps(self) -> int:
        return len(self.src)


def naive_schedule(grid: tuple[int, int]) -> Schedule:
    """Raster order: step ``k`` feeds token ``k - 1`` and predicts token ``k`` (``k = 1 .. h*w - 1``)."""
    n = grid[0] * grid[1]
    return Schedule(
        src=tuple((k - 1,) for k in range(1, n)),
        pos=tuple((k - 1,) for k in range(1, n)),
        out=tuple((k,) for k in range(1, n)),
    )


def diagonal_schedule(grid: tuple[int, int], window: int) -> Schedule:
    """MineWorld's image diagonal decoding order for a ``grid = (rows, cols)`` frame."""
    rows, cols = grid
    if not 1 <= window <= cols:
        raise ConfigError(f"diagonal decoding window must lie in [1, {cols}] (the grid width), got {window}")
    n = rows * cols
    counts = [0] * rows
    active: list[int] = []

    def advance(row: int) -> list[int]:
        """Count one more token in ``row``; returns the row to start, if any."""
        counts[row] += 1
        return [row + 1] if counts[row] == window and row < rows - 1 else []

    started = advance(0)  # token (0, 0) comes from the boundary chunk
    active = ([0] if counts[0] < cols else []) + started
    src, pos, out = [], [], []
    while active:
        step_src, step_pos, step_out = [], [], []
        for r in active:
            c = counts[r]
            step_src.append(r * cols + c - 1 if c > 0 else n + r * cols - 1)
            step_pos.append(r * cols + c - 1)
            step_out.append(r * cols + c)
        src.append(tuple(step_src))
        pos.append(tuple(step_pos))
        out.append(tuple(step_out))
        still, started = [], []
        for r in active:
            started += advance(r)
            if counts[r] < cols:
                still.append(r)
        active = still + started
    assert all(c == cols for c in counts), counts
    return Schedule(src=tuple(src), pos=tuple(pos), out=tuple(out))


def make_schedule(grid: tuple[int, int], config: SamplingConfig) -> Schedule | None:
    """The fixed schedule of naive or diagonal decoding; ``None`` for speculative (data-dependent steps)."""
    if config.decoding == "speculative":
        return None
    return naive_schedule(grid) if config.decoding == "naive" else diagonal_schedule(grid, config.window)


@dataclass
class DecodeStats:
    """Counters of frame decoding, accumulated over calls (e.g. ``MineWorldState.decode_stats``)."""

    calls: int = 0
    """Batched frame decodes (one per ``step``)."""
    frames: int = 0
    """Frames decoded, over all slots."""
    forwards: int = 0
    """Sequential transformer forwards, boundary chunks included (one forward serves the whole batch)."""
    slot_forwards: int = 0
    """Forwards summed over slots, counting a slot only while it still had tokens to decide."""
    tokens: int = 0
    """Image tokens decided, over all slots."""
    accepted: int = 0
    """Tokens that kept their speculative draft (the copy or a refreshed one)."""

    @property
    def forwards_per_frame(self) -> float:
        """Sequential forwards per batched frame (what latency scales with)."""
        return self.forwards / max(self.calls, 1)

    @property
    def acceptance_rate(self) -> float:
        """Fraction of tokens that kept their draft (0 for naive and diagonal decoding)."""
        return self.accepted / max(self.tokens, 1)

    @property
    def tokens_per_forward(self) -> float:
        """Tokens a slot decided per forward it took part in."""
        return self.tokens / max(self.slot_forwards, 1)


COMPILED_NAIVE_DRAFT_BATCH = 4
"""Compiled naive decoding of at most this many slots verifies drafts (speculatively, the same tokens): on Crafter
1.6x compiled one-token steps at 1 env, 1.15x at 4, 0.75x at 16 where the slowest slot sets the pace
(docs/benchmarks.md §2)."""

RECOMPILE_LIMIT = 64
"""Graphs Dynamo may keep per compiled function (see :class:`StaticStep`)."""


class StaticStep:
    """One decode step (:func:`static_decode_step`) and its sampling, compiled with ``torch.compile``.

    Graphs: the cache prefix attention reads is dynamic, so a frame's growing context never recompiles; so is the
    batch above :data:`~worldmodels.mineworld.transformer.MATVEC_BATCH` slots (one graph serves 16 envs, 64 envs
    and an evaluation's smaller last batch), while smaller batches compile per size; the boundary chunk has a graph
    of its own. A compile takes seconds to a minute on a CPU, once per process (later processes reuse Inductor's
    on-disk cache). Inside the graph:
    the step (fused q/k/v and gate/up matmuls, K/V written by position, attention masked by position) and
    :func:`~worldmodels.mineworld.sampling.sample`, with no host sync. The logits differ from the eager path's by
    float rounding only (different kernels); greedy tokens and seeded samples agree unless two logits tie within
    that rounding (tests pin equality on the tiny config).

    If compilation fails (an unsupported op, no C++ compiler), the step warns once, naming the cause, and runs
    :func:`static_decode_step` eagerly from then on.
    """

    def __init__(self, transformer: Transformer, image_vocab: int, config: SamplingConfig):
        device = transformer.lm_head.weight.device
        check_compile_device(device)
        self.transformer = transformer
        self.image_vocab = image_vocab
        c = transformer.config
        self._step = functools.partial(
            _step_and_sample, config=config, n_heads=c.num_attention_heads, n_kv_heads=c.num_key_value_heads,
            eps=c.rms_norm_eps,
        )  # fmt: skip
        # every StaticStep compiles the same two functions: graphs of all models, samplers and widths of a process
        # count against one per-function recompile limit (8 by default), which a test run or a sweep exceeds
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
        self._compiled = torch.compile(self._step, fullgraph=True)
        self._logits = functools.partial(
            static_decode_step, n_heads=c.num_attention_heads, n_kv_heads=c.num_key_value_heads, eps=c.rms_norm_eps
        )
        self._compiled_logits = torch.compile(self._logits, fullgraph=True)
        self._key_positions = torch.arange(c.max_position_embeddings, device=device)
        self.fallback_reason: str | None = None
        """Why compilation failed, when the step fell back to eager."""

    def weights(self) -> StepWeights:
        """The current weights (read once per frame: the version checks cost more than a step's dispatch)."""
        return self.transformer.step_weights(self.image_vocab)

    def __call__(
        self,
        weights: StepWeights,
        cache: KVCache,
        ids: torch.Tensor,
        positions: torch.Tensor,
        kv_len: int,
        uniforms: torch.Tensor | None,
        *,
        return_logprobs: bool,
        last_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """``(tokens [B, S], logprobs [B, S] | None, sum of the logits)`` for ``ids`` at ``positions`` of slots
        ``0..B-1`` (the whole cache); ``kv_len`` exceeds every position. With ``last_only`` only the last position
        is sampled (``[B]`` tokens)."""
        key_positions = self._key_positions[:kv_len]
        torch._dynamo.maybe_mark_dynamic(key_positions, 0)
        if not last_only:  # diagonal and speculative steps feed 1..k tokens per slot, in one graph
            for tensor in (ids, positions) if uniforms is None else (ids, positions, uniforms):
                torch._dynamo.maybe_mark_dynamic(tensor, 1)
        kv = cache.kv.unbind(0)
        if ids.shape[0] > MATVEC_BATCH:  # one graph serves every larger batch (an eval's last, smaller batch too)
            for tensor in (ids, positions, *kv) if uniforms is None else (ids, positions, uniforms, *kv):
                torch._dynamo.maybe_mark_dynamic(tensor, 0)
        args = (weights, kv, ids, positions, key_positions, uniforms)
        return self._run(self._compiled, self._step, *args, return_logprobs=return_logprobs, last_only=last_only)

    def logits(
        self, weights: StepWeights, cache: KVCache, ids: torch.Tensor, positions: torch.Tensor, kv_len: int
    ) -> torch.Tensor:
        """The step's logits ``[B, S, image_vocab]`` (speculative decoding samples them itself); ``S`` is dynamic."""
        key_positions = self._key_positions[:kv_len]
        torch._dynamo.maybe_mark_dynamic(key_positions, 0)
        torch._dynamo.maybe_mark_dynamic(ids, 1)
        torch._dynamo.maybe_mark_dynamic(positions, 1)
        return self._run(self._compiled_logits, self._logits, weights, cache.kv.unbind(0), ids, positions, key_positions)

    def _run(self, compiled, eager, *args, **kwargs):
        if self.fallback_reason is None:
            try:
                return compiled(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - any compiler failure falls back; the eager run re-raises
                if not _is_compile_failure(error):
                    raise
                self.fallback_reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}"
                warnings.warn(
                    f"torch.compile of the decode step failed ({self.fallback_reason}); decoding eagerly instead "
                    "(same results, slower). Pass compile=False to skip the attempt.",
                    RuntimeWarning,
                    stacklevel=4,
                )
        return eager(*args, **kwargs)


def _step_and_sample(
    weights, kv, ids, positions, key_positions, uniforms, *, return_logprobs, last_only, config, n_heads, n_kv_heads,
    eps,
):  # fmt: skip
    logits = static_decode_step(
        weights, kv, ids, positions, key_positions, n_heads=n_heads, n_kv_heads=n_kv_heads, eps=eps
    )
    if last_only:
        logits = logits[:, -1]
    tokens, logprobs = sample(logits, uniforms, config, return_logprobs=return_logprobs)
    return tokens, logprobs, logits.sum(dtype=torch.float32)


def _is_compile_failure(error: Exception) -> bool:
    """Errors raised by Dynamo or Inductor (tracing, lowering, the C++ toolchain), not by the inputs."""
    return type(error).__module__.startswith(("torch._dynamo", "torch._inductor"))


def check_compile_device(device: torch.device | str) -> None:
    """Compilation targets CPUs and CUDA GPUs here; any other device is a configuration error."""
    kind = torch.device(device).type
    if kind not in ("cpu", "cuda"):
        raise ConfigError(
            f"compile=True is supported on 'cpu' and 'cuda' devices, got {kind!r}; pass compile=False on this device"
        )


class FrameDecoder:
    """Decodes one frame for a batch of cache slots; holds the schedule as device tensors.

    Args:
        transformer: the model.
        grid: image token grid ``(h, w)``.
        image_vocab: image ids are ``0..image_vocab-1``; only those logits are computed and sampled.
        config: sampling and decoding order.
        compile: run every decode step through :class:`StaticStep` (``torch.compile``; the same tokens as eager
            up to float rounding of the logits, see :class:`StaticStep`).
    """

    adaptive_width: bool = True
    """Speculative decoding: choose each forward's width (tokens per slot, ``1..draft_len``) from the drafts kept so
    far; ``False`` always feeds ``draft_len``. Each slot tracks its acceptance rate ``a`` (an exponential average
    over the drafts it tested this frame, from 0.5); the width ``k`` maximises the expected tokens decided per cost
    under independent acceptance, ``sum over slots of (1 + a + ... + a^(k-1)) / (1 + c * (k - 1))`` (tokens past a
    slot's last grid index not counted), with ``c`` = :meth:`width_cost` of the batch. Static stretches then run
    wide and changing ones narrow. A single slot always feeds ``draft_len``: its forward is bound by reading the
    weights, and with refreshed drafts a rejection rarely starts a run of them (1 env, Crafter: 11 forwards per frame
    at width 16 against 16 adaptive, +12% frames/s; docs/benchmarks.md §2). It only regroups forwards: every token is
    drawn from its own logits and uniform, so the tokens are the same either way."""
    acceptance_memory: float = 0.85
    """Decay of the acceptance average per tested draft (about 1 / (1 - 0.85) ~ 7 drafts of memory)."""
    refresh_drafts: bool = True
    """Speculative decoding: after each forward, the tokens drawn past a slot's first rejected draft (from a prefix
    holding that draft) replace their drafts for the next forward, as in Jacobi decoding: when the frame changes
    (the view moves), a token usually depends on the previous frame more than on its left neighbour, so these draws
    are better drafts than the copy. Only the drafts change, never a token."""

    @staticmethod
    def width_cost(batch: int) -> float:
        """Relative cost of one more token per slot in a forward of ``batch`` slots. Measured on CPU (fp32, Crafter
        sizes, hidden 192-256): ~0.04 at batch 1 (the step is bound by weight reads and dispatch) and ~0.2 at batch
        16; on a GPU it is lower still, which only makes this choice conservative."""
        return min(0.04 * batch**0.6, 1.0)

    def _choose_width(self, acceptance: np.ndarray, remaining: np.ndarray, k_max: int) -> int:
        """The width with the most expected tokens per cost (see :attr:`adaptive_width`)."""
        k = np.arange(k_max)
        # expected tokens decided with width k + 1: 1 + a + ... + a^k, counting only indices left in the frame
        expected = np.where(k[None, :] < remaining[:, None], acceptance[:, None] ** k[None, :], 0.0).cumsum(1)
        score = expected.sum(0) / (1 + self.width_cost(len(acceptance)) * k)
        return int(np.argmax(score)) + 1

    def __init__(
        self,
        transformer: Transformer,
        grid: tuple[int, int],
        image_vocab: int,
        config: SamplingConfig,
        *,
        compile: bool = False,
    ):
        self.transformer = transformer
        self.grid = grid
        self.n = grid[0] * grid[1]
        self.image_vocab = image_vocab
        self.config = config
        self.schedule = make_schedule(grid, config)
        self._decode = transformer.decode
        self._static_step = StaticStep(transformer, image_vocab, config) if compile else None
        if self.schedule is None:
            return
        device = transformer.lm_head.weight.device
        as_tensor = lambda rows: [torch.tensor(r, dtype=torch.long, device=device) for r in rows]  # noqa: E731
        self._src = as_tensor(self.schedule.src)
        self._pos = as_tensor(self.schedule.pos)
        self._out = as_tensor(self.schedule.out)
        self._max_pos = [max(p) for p in self.schedule.pos]

    def verifies_drafts(self, batch: int) -> bool:
        """Whether :meth:`decode` of ``batch`` slots runs speculatively and needs ``draft``: speculative decoding,
        and compiled naive decoding of at most :data:`COMPILED_NAIVE_DRAFT_BATCH` slots, which draws the same tokens
        in fewer forwards that way (see the module docstring)."""
        if self.schedule is None:
            return True
        return self._static_step is not None and self.config.decoding == "naive" and batch <= COMPILED_NAIVE_DRAFT_BATCH

    @torch.no_grad()
    def decode(
        self,
        cache: KVCache,
        chunk_ids: torch.Tensor,
        chunk_start: torch.Tensor,
        prompt: torch.Tensor,
        uniforms: torch.Tensor | None,
        *,
        draft: torch.Tensor | None = None,
        return_logprobs: bool = False,
        frame_label: str = "frame",
        stats: DecodeStats | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Generate one frame in cache slots ``0..B-1``.

        Args:
            cache: the KV cache; slot ``b`` holds environment ``b``'s context up to position ``chunk_start[b] - 1``.
            chunk_ids: ``int64[B, 1 + A]`` previous frame's last token and the action tokens.
            chunk_start: ``int64[B]`` position of ``chunk_ids[:, 0]`` in each slot.
            prompt: ``int64[B, h*w]`` the prompt frame (diagonal decoding's row-start stand-ins).
            uniforms: ``float32[B, h*w]``, token ``j`` drawn from ``uniforms[:, j]`` (``None`` for greedy).
            draft: ``int64[B, h*w]`` the newest frame of each slot's context (the drafts, where
                :meth:`verifies_drafts`).
            return_logprobs: also return each token's log-probability under the sampling distribution.
            frame_label: names the frame in error messages.
            stats: counters to add this frame's forwards and accepted drafts to.

        Returns:
            ``(tokens int64[B, h*w], logprobs float32[B, h*w] | None)``.
        """
        if self.verifies_drafts(chunk_ids.shape[0]):
            if draft is None:
                raise ConfigError("speculative decoding needs the previous frame's tokens as drafts (draft=[B, h*w])")
            return self._decode_speculative(
                cache, chunk_ids, chunk_start, draft, uniforms, return_logprobs, frame_label, stats
            )
        b, chunk_len = chunk_ids.shape
        device = chunk_ids.device
        n, config = self.n, self.config
        start_max = int(chunk_start.max())
        chunk_pos = chunk_start[:, None] + torch.arange(chunk_len, device=device)
        base = chunk_start + chunk_len  # position of the frame's first token
        base_max = start_max + chunk_len
        work = torch.empty(b, 2 * n, dtype=torch.long, device=device)  # [frame being generated | prompt frame]
        work[:, n:] = prompt
        logprobs = torch.empty(b, n, device=device) if return_logprobs else None
        sums = []  # one reduction per step; NaN/inf in any logit makes its sum non-finite (checked once per frame)

        static = self._static_step if self._static_step is not None and cache.slots == b else None
        weights = None if static is None else static.weights()

        def step(ids, positions, kv_len, u, last_only=False):
            """``(tokens, logprobs, logit sum)`` of one forward, compiled or eager."""
            if static is not None:
                return static(weights, cache, ids, positions, kv_len, u, return_logprobs=return_logprobs,
                              last_only=last_only)  # fmt: skip
            logits = self._decode(ids, positions, cache, kv_len, vocab_limit=self.image_vocab, last_only=last_only)
            return (*sample(logits, u, config, return_logprobs=return_logprobs), logits.sum(dtype=torch.float32))

        u = None if uniforms is None else uniforms[:, 0]
        token, lp, logit_sum = step(chunk_ids, chunk_pos, start_max + chunk_len, u, last_only=True)
        sums.append(logit_sum)
        work[:, 0] = token
        if logprobs is not None:
            logprobs[:, 0] = lp
        base_col = base[:, None]
        for index, (src, pos, out) in enumerate(zip(self._src, self._pos, self._out)):
            u = None if uniforms is None else uniforms[:, out]
            token, lp, logit_sum = step(work[:, src], base_col + pos, base_max + self._max_pos[index] + 1, u)
            sums.append(logit_sum)
            work[:, out] = token
            if logprobs is not None:
                logprobs[:, out] = lp
        _check_finite(sums, frame_label)
        if stats is not None:
            steps = self.schedule.n_steps + 1
            stats.calls += 1
            stats.frames += b
            stats.forwards += steps
            stats.slot_forwards += b * steps
            stats.tokens += b * n
        return work[:, :n], logprobs

    def _decode_speculative(self, cache, chunk_ids, chunk_start, draft, uniforms, return_logprobs, frame_label, stats):
        """Speculative decoding of one frame (see the module docstring); arguments as :meth:`decode`.

        The bookkeeping (which drafts were kept, the next inputs) runs on the host in numpy: it handles a few values
        per slot, where each torch op would cost more than its arithmetic (a tenth of a forward for one env), and
        the host sync it needs happens once per forward anyway."""
        b, chunk_len = chunk_ids.shape
        device = chunk_ids.device
        n, config = self.n, self.config
        k_max = min(config.draft_len, n)
        rows = np.arange(b)[:, None]
        offsets = np.arange(k_max)
        # Per slot, indices below `counts` hold decided tokens and the rest their drafts (a kept draft needs no
        # write); the padding past h*w absorbs the writes and reads of slots that are done.
        width = n + k_max + 1
        work = np.zeros((b, width), dtype=np.int64)
        work[:, :n] = draft.cpu().numpy()
        u = None
        if uniforms is not None:
            u = np.zeros((b, width), dtype=np.float32)
            u[:, :n] = uniforms.cpu().numpy()
        logprobs = np.zeros((b, width), dtype=np.float32) if return_logprobs else None
        base = chunk_start.cpu().numpy() + chunk_len  # position of each slot's grid index 0
        last_pos = (base + n - 1)[:, None]  # no-op inputs go here (the pending token's position, unwritten)
        counts = np.zeros(b, dtype=np.int64)
        acceptance = np.full(b, 0.5)  # each slot's running draft acceptance rate (see `adaptive_width`)
        sums = []
        static = self._static_step if self._static_step is not None and cache.slots == b else None
        weights = None if static is None else static.weights()

        def on_device(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(array)).to(device)

        def draw(ids, positions, kv_len, index, skip=0):
            """One forward; every query from ``skip`` on draws naive decoding's token from its own uniform (a draft
            is kept iff it was drawn). Returns ``(tokens, logprobs, sum of the logits)``."""
            u_index = None if u is None else on_device(u[rows, index])
            if static is not None and not skip:  # the compiled step samples in its graph
                return static(weights, cache, ids, positions, kv_len, u_index, return_logprobs=return_logprobs)
            if static is not None:
                logits = static.logits(weights, cache, ids, positions, kv_len)[:, skip:]
            else:
                logits = self._decode(ids, positions, cache, kv_len, vocab_limit=self.image_vocab)[:, skip:]
            return (*sample(logits, u_index, config, return_logprobs=return_logprobs), logits.sum(dtype=torch.float32))

        # the boundary chunk, followed by the first drafts: its last k positions predict grid indices 0..k-1
        k = k_max
        index = np.broadcast_to(offsets, (b, k))  # the grid index each query decides
        ids = torch.cat([chunk_ids, draft[:, : k - 1]], dim=1)
        positions = chunk_start[:, None] + torch.arange(chunk_len + k - 1, device=device)
        drawn, drawn_logp, logit_sum = draw(ids, positions, int(base.max()) + k - 1, index, skip=chunk_len - 1)
        sums.append(logit_sum)
        forwards, slot_forwards, kept_total = 1, b, 0
        while True:
            drawn_host = drawn.cpu().numpy()
            accepted = drawn_host == work[rows, index]
            # decided: the kept drafts up to the first rejection, plus the token drawn there (or the last kept);
            # only that last token can differ from its draft
            kept = accepted.cumprod(-1).sum(-1)
            valid = np.minimum(n - counts, k)
            decided = np.minimum(kept + 1, valid)
            if self.refresh_drafts:  # the undecided queries' draws become their next drafts (Jacobi iteration)
                work[rows, index] = drawn_host
            else:
                last = np.maximum(decided - 1, 0)
                work[rows[:, 0], counts + last] = drawn_host[rows[:, 0], last]
            if logprobs is not None:  # entries past the decided ones are rewritten when they are decided
                logprobs[rows, index] = drawn_logp.cpu().numpy()
            kept = np.minimum(kept, valid)
            counts += decided
            kept_total += int(kept.sum())
            remaining = n - counts
            if remaining.max() <= 0:
                break
            # next forward: each slot's newest decided token, then its drafts; no-ops past the grid
            k = int(min(k_max, remaining.max()))
            if self.adaptive_width and b > 1:  # `kept` ones then (if fewer) a zero enter each slot's average
                r = self.acceptance_memory
                acceptance = r**decided * acceptance + r ** (decided - kept) * (1 - r**kept)
                k = min(k, self._choose_width(acceptance, remaining, k_max))
            index = counts[:, None] + offsets[:k]
            positions = np.minimum(base[:, None] + index - 1, last_pos)
            kv_len = int((base + np.minimum(counts + k - 2, n - 1)).max()) + 1
            drawn, drawn_logp, logit_sum = draw(on_device(work[rows, index - 1]), on_device(positions), kv_len, index)
            sums.append(logit_sum)
            forwards += 1
            slot_forwards += int((remaining > 0).sum())
        _check_finite(sums, frame_label)
        if stats is not None:
            stats.calls += 1
            stats.frames += b
            stats.forwards += forwards
            stats.slot_forwards += slot_forwards
            stats.tokens += b * n
            stats.accepted += kept_total
        return on_device(work[:, :n]), None if logprobs is None else on_device(logprobs[:, :n])


def _check_finite(sums: list[torch.Tensor], frame_label: str) -> None:
    """One sum of logits per forward; NaN or inf anywhere makes it non-finite (checked once per frame)."""
    finite = torch.isfinite(torch.stack(sums))
    if not bool(finite.all()):
        step = int((~finite).nonzero()[0, 0])
        where = "the boundary chunk (action tokens)" if step == 0 else f"decode step {step}"
        raise NumericalError(
            f"non-finite logits (NaN or inf) while decoding {frame_label}, at {where} of {len(sums)}; "
            "check the weights (e.g. fp16 overflow) and the inputs"
        )
