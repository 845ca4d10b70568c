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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from worldmodels.errors import ConfigError, NumericalError
from worldmodels.mineworld.sampling import SamplingConfig, sample
from worldmodels.mineworld.transformer import KVCache, Transformer


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


def make_schedule(grid: tuple[int, int], config: SamplingConfig) -> Schedule:
    return naive_schedule(grid) if config.decoding == "naive" else diagonal_schedule(grid, config.window)


class FrameDecoder:
    """Decodes one frame for a batch of cache slots; holds the schedule as device tensors.

    Args:
        transformer: the model.
        grid: image token grid ``(h, w)``.
        image_vocab: image ids are ``0..image_vocab-1``; only those logits are computed and sampled.
        config: sampling and decoding order.
        compile: wrap the per-step decode in ``torch.compile`` (optional speed-up, same results up to float
            rounding).
    """

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
        device = transformer.lm_head.weight.device
        as_tensor = lambda rows: [torch.tensor(r, dtype=torch.long, device=device) for r in rows]  # noqa: E731
        self._src = as_tensor(self.schedule.src)
        self._pos = as_tensor(self.schedule.pos)
        self._out = as_tensor(self.schedule.out)
        self._max_pos = [max(p) for p in self.schedule.pos]
        self._decode = transformer.decode
        if compile:
            self._decode = torch.compile(transformer.decode, dynamic=True)

    @torch.no_grad()
    def decode(
        self,
        cache: KVCache,
        chunk_ids: torch.Tensor,
        chunk_start: torch.Tensor,
        prompt: torch.Tensor,
        uniforms: torch.Tensor | None,
        *,
        return_logprobs: bool = False,
        frame_label: str = "frame",
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Generate one frame in cache slots ``0..B-1``.

        Args:
            cache: the KV cache; slot ``b`` holds environment ``b``'s context up to position ``chunk_start[b] - 1``.
            chunk_ids: ``int64[B, 1 + A]`` previous frame's last token and the action tokens.
            chunk_start: ``int64[B]`` position of ``chunk_ids[:, 0]`` in each slot.
            prompt: ``int64[B, h*w]`` the prompt frame (diagonal decoding's row-start stand-ins).
            uniforms: ``float32[B, h*w]`` one uniform per image token (``None`` for greedy).
            return_logprobs: also return each token's log-probability under the sampling distribution.
            frame_label: names the frame in error messages.

        Returns:
            ``(tokens int64[B, h*w], logprobs float32[B, h*w] | None)``.
        """
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

        logits = self._decode(
            chunk_ids, chunk_pos, cache, start_max + chunk_len, vocab_limit=self.image_vocab, last_only=True
        )
        sums.append(logits.sum(dtype=torch.float32))
        u = None if uniforms is None else uniforms[:, 0]
        token, lp = sample(logits, u, config, return_logprobs=return_logprobs)
        work[:, 0] = token
        if logprobs is not None:
            logprobs[:, 0] = lp
        base_col = base[:, None]
        for step, (src, pos, out) in enumerate(zip(self._src, self._pos, self._out), start=1):
            logits = self._decode(
                work[:, src], base_col + pos, cache, base_max + self._max_pos[step - 1] + 1,
                vocab_limit=self.image_vocab,
            )  # fmt: skip
            sums.append(logits.sum(dtype=torch.float32))
            u = None if uniforms is None else uniforms[:, out]
            token, lp = sample(logits, u, config, return_logprobs=return_logprobs)
            work[:, out] = token
            if logprobs is not None:
                logprobs[:, out] = lp
        finite = torch.isfinite(torch.stack(sums))
        if not bool(finite.all()):
            step = int((~finite).nonzero()[0, 0])
            where = "the boundary chunk (action tokens)" if step == 0 else f"decode step {step}"
            raise NumericalError(
                f"non-finite logits (NaN or inf) while decoding {frame_label}, at {where} of "
                f"{self.schedule.n_steps + 1}; check the weights (e.g. fp16 overflow) and the inputs"
            )
        return work[:, :n], logprobs
