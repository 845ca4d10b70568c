"""NFD's diffusion transformer: block-causal attention over frames, 3-D RoPE, actions and time by adaLN-Zero.

Architecture (DiT blocks with NFD's changes, ``mineworld.md`` §12):

* **tokens**: each frame's latent ``[C, h, w]`` is cut into ``p x p`` patches, one token each (row-major), linearly
  embedded; a window of ``F`` frames is one sequence of ``F * tokens_per_frame`` tokens.
* **attention**: bidirectional inside a frame, causal across frames (a token of frame ``i`` attends to every token
  of frames ``<= i``); optional RMSNorm on queries and keys; 3-D rotary embeddings following HunyuanVideo: the head
  dimension is split into ``[n_t, n_h, n_w]`` parts, each rotated by its own axis' position (frame index, patch row,
  patch column) with frequencies ``theta ** (-2k / n_axis)``, pairs of adjacent channels rotating together
  (``(x_2k, x_2k+1) -> (x_2k cos - x_2k+1 sin, x_2k sin + x_2k+1 cos)``).
* **conditioning** (per frame): ``c = MLP(sinusoid(1000 t)) + Linear(one_hot(action))``; every block maps
  ``SiLU(c)`` linearly to shift/scale/gate of its attention and MLP branches (adaLN-Zero: the map starts at zero, so
  every block starts as the identity). A frame without an action (a window's first frame) sets only the "no action"
  input of the action layer. Each frame has its own flow time ``t`` (diffusion forcing).
* **MLP**: SwiGLU (``w2(silu(w1 x) * w3 x)``); LayerNorms without affine parameters (the modulation replaces them).
* **output**: final adaLN (shift, scale; zero-initialised) and a zero-initialised linear layer to the patch values:
  the predicted flow velocity ``v = eps - z``.

Batch invariance: the per-frame layers (timestep MLP, adaLN maps) see only ``batch x frames`` rows, and a CPU GEMM
with that few rows picks kernels by the row count, so a slot's numbers would depend on how many other slots share
its batch. They run on fixed blocks of :data:`CONDITIONING_ROWS` rows instead (:func:`fixed_rows_linear`; the
autoencoder pads its calls the same way), which keeps a seeded rollout bit-identical whatever else is in the batch.
Token-level layers have hundreds of rows, where the kernels no longer depend on the count.

Two entry points, both running the same layers:

* :meth:`NFDTransformer.forward` - a whole window (or any packed set of frames with an explicit frame mask), no cache,
  differentiable: training and the Flow-GRPO replay.
* :meth:`NFDTransformer.decode` - a chunk of frames per cache slot at per-slot frame positions, writing their keys and
  values into a static :class:`KVCache` and attending to the slot's earlier frames there: sampling.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from worldmodels.nfd.autoencoder import fixed_size_parts
from worldmodels.nfd.config import NFDConfig

CONDITIONING_ROWS = 16
"""Rows per call of the per-frame linear layers (see the module docstring)."""


def fixed_rows_linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` computed on blocks of exactly :data:`CONDITIONING_ROWS` rows (the last padded), so a row's
    result does not depend on how many rows ``x`` has."""
    flat = x.reshape(-1, x.shape[-1])
    out = torch.cat([layer(part)[:n] for part, n in fixed_size_parts(flat, CONDITIONING_ROWS)])
    return out.reshape(*x.shape[:-1], out.shape[-1])


class KVCache:
    """Static key/value cache, one row ("slot") per environment: ``kv[n_layers, slots, 2 * heads, tokens, head_dim]``
    (keys in the first ``heads`` heads, values in the rest). Slots are written at their own positions and can be
    zeroed or copied independently."""

    def __init__(self, n_layers: int, slots: int, heads: int, tokens: int, head_dim: int, *, dtype, device):
        self.kv = torch.zeros((n_layers, slots, 2 * heads, tokens, head_dim), dtype=dtype, device=device)
        self.heads = heads
        self.slots = slots
        self.tokens = tokens

    def zero_(self, rows: torch.Tensor) -> None:
        self.kv[:, rows] = 0

    def copy_(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        self.kv[:, dst] = self.kv[:, src]


def rope_inverse_frequencies(axis_dim: int, theta: float) -> torch.Tensor:
    """``theta ** (-2k / axis_dim)`` for ``k = 0 .. axis_dim/2 - 1`` (float64)."""
    return 1.0 / theta ** (torch.arange(0, axis_dim, 2, dtype=torch.float64) / axis_dim)


def rope_angles(positions: torch.Tensor, axes: tuple[int, int, int], theta: float) -> torch.Tensor:
    """Rotation angles ``[..., head_dim / 2]`` of 3-D positions ``[..., 3]`` (frame, row, column): the angles of
    each axis over its own part of the head dimension, concatenated in (t, h, w) order."""
    parts = [
        positions[..., i : i + 1].double() * rope_inverse_frequencies(dim, theta).to(positions.device)
        for i, dim in enumerate(axes)
    ]
    return torch.cat(parts, dim=-1)


def apply_rope(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs of ``x [..., head_dim]`` by unit complex numbers ``rotation [..., head_dim / 2]``
    (``cos + i sin``): ``(x_2k, x_2k+1) -> (x_2k cos - x_2k+1 sin, x_2k sin + x_2k+1 cos)``, one complex product."""
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)).contiguous())
    return torch.view_as_real(pairs * rotation).flatten(-2).to(x.dtype)


def timestep_features(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """DiT's sinusoidal features of flow times ``t`` in ``[0, 1]`` (scaled to ``[0, 1000]``): ``[cos, sin]``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = (t.float() * 1000.0)[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden: int, frequency_dim: int):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        features = timestep_features(t, self.frequency_dim).to(self.mlp[0].weight.dtype)
        return fixed_rows_linear(self.mlp[2], F.silu(fixed_rows_linear(self.mlp[0], features)))


class ActionEmbedder(nn.Module):
    """A linear layer on the concatenated one-hot encodings of the compact action slots, plus one "no action" input.

    ``weight`` is ``[hidden, sum(nvec) + 1]``: column ``offset_k + a_k`` is slot ``k``'s choice ``a_k``; the last
    column stands for "no action". Computed as a sum of gathered columns (the same numbers as the matrix product).
    """

    def __init__(self, nvec: tuple[int, ...], hidden: int):
        super().__init__()
        self.nvec = tuple(nvec)
        self.linear = nn.Linear(sum(self.nvec) + 1, hidden)
        self.register_buffer("offsets", torch.zeros(len(self.nvec), dtype=torch.long), persistent=False)

    def forward(self, actions: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """``actions int64[..., slots]`` (ignored where ``present`` is False), ``present bool[...]`` -> ``[..., d]``."""
        columns = self.linear.weight.t()  # [inputs, hidden]
        index = (actions.clamp(min=0) + self.offsets).where(present[..., None], 0)
        chosen = columns[index].sum(-2)
        none = columns[-1].expand_as(chosen)
        return torch.where(present[..., None], chosen, none) + self.linear.bias


class Attention(nn.Module):
    def __init__(self, config: NFDConfig):
        super().__init__()
        d = config.hidden_size
        self.heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=config.norm_eps) if config.qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(self.head_dim, eps=config.norm_eps) if config.qk_norm else nn.Identity()

    def _qkv(self, x: torch.Tensor, rotation: torch.Tensor):
        b, s, _ = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.heads, self.head_dim).unbind(2)
        q = apply_rope(self.q_norm(q), rotation)
        k = apply_rope(self.k_norm(k), rotation)
        return q, k, v  # [b, s, heads, hd]

    def forward(self, x, rotation, mask, cache_kv=None, write_index=None, read_rows=None, kv_len=None):
        """Without ``cache_kv``: attention over ``x`` itself with ``mask`` (bool ``[s, s]``, True = visible). With it:
        the chunk's keys/values are written at ``write_index = (rows [b, 1], token positions [b, s])`` and the queries
        attend to the cache's first ``kv_len`` tokens of ``read_rows`` with the additive ``mask [b, 1, s, kv_len]``."""
        b, s, _ = x.shape
        q, k, v = self._qkv(x, rotation)
        q = q.transpose(1, 2)
        if cache_kv is None:
            out = F.scaled_dot_product_attention(q, k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
        else:
            cache_kv[write_index[0], :, write_index[1]] = torch.cat([k, v], dim=2)
            cached = cache_kv[read_rows, :, :kv_len]
            out = F.scaled_dot_product_attention(q, cached[:, : self.heads], cached[:, self.heads :], attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(b, s, -1))


class SwiGLU(nn.Module):
    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.w1 = nn.Linear(hidden, intermediate, bias=False)
        self.w3 = nn.Linear(hidden, intermediate, bias=False)
        self.w2 = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x * (1 + scale) + shift`` (one fused op)."""
    return torch.addcmul(shift, x, 1 + scale)


class Block(nn.Module):
    """DiT block with adaLN-Zero; ``x [b, frames, tokens, d]`` and per-frame conditioning ``c [b, frames, d]``."""

    def __init__(self, config: NFDConfig):
        super().__init__()
        d = config.hidden_size
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=config.norm_eps)
        self.attn = Attention(config)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=config.norm_eps)
        self.mlp = SwiGLU(d, config.intermediate_size)
        self.adaLN = nn.Linear(d, 6 * d)

    def forward(self, x, c, rotation, mask, **cache):
        b, f, n, d = x.shape
        modulation = fixed_rows_linear(self.adaLN, c).unsqueeze(2)
        shift1, scale1, gate1, shift2, scale2, gate2 = modulation.chunk(6, dim=-1)
        h = modulate(self.norm1(x), shift1, scale1).reshape(b, f * n, d)
        x = torch.addcmul(x, gate1, self.attn(h, rotation, mask, **cache).view(b, f, n, d))
        return torch.addcmul(x, gate2, self.mlp(modulate(self.norm2(x), shift2, scale2)))


class NFDTransformer(nn.Module):
    """The diffusion transformer (see the module docstring). Key names: ``patch_embed``, ``time_embed.mlp.{0,2}``,
    ``action_embed.linear``, ``blocks.{i}.{attn.qkv, attn.proj, attn.q_norm, attn.k_norm, mlp.w1, mlp.w2, mlp.w3,
    adaLN}``, ``final_adaLN``, ``final_proj``."""

    def __init__(self, config: NFDConfig):
        super().__init__()
        self.config = config
        d = config.hidden_size
        self.patch_embed = nn.Linear(config.patch_dim, d)
        self.time_embed = TimestepEmbedder(d, config.frequency_embedding_size)
        self.action_embed = ActionEmbedder(config.action_nvec, d)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers))
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=config.norm_eps)
        self.final_adaLN = nn.Linear(d, 2 * d)
        self.final_proj = nn.Linear(d, config.patch_dim)
        self.register_buffer("grid_positions", torch.zeros(0, 2, dtype=torch.long), persistent=False)
        self.reset_buffers()

    def reset_buffers(self) -> None:
        """(Re)compute the non-persistent index buffers (after ``to_empty``)."""
        rows, cols = self.config.token_grid
        device = self.patch_embed.weight.device
        grid = torch.stack(torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij"), -1).reshape(-1, 2)
        self.grid_positions = grid.to(device)
        nvec = torch.tensor(self.action_embed.nvec)
        self.action_embed.offsets = torch.cat([torch.zeros(1, dtype=torch.long), nvec.cumsum(0)[:-1]]).to(device)

    # --- initialisation ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """DiT's initialisation: Xavier-uniform linear layers with zero biases, N(0, 0.02) timestep MLP and action
        layer, and zero adaLN maps and output layer (adaLN-Zero: every block starts as the identity, the output
        at 0)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for layer in (self.time_embed.mlp[0], self.time_embed.mlp[2], self.action_embed.linear):
            nn.init.normal_(layer.weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN.weight)
            nn.init.zeros_(block.adaLN.bias)
        for layer in (self.final_adaLN, self.final_proj):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        for module in self.modules():
            if isinstance(module, nn.RMSNorm):
                nn.init.ones_(module.weight)

    # --- pieces --------------------------------------------------------------------------------------------------

    def patchify(self, z: torch.Tensor) -> torch.Tensor:
        """Latents ``[..., C, h, w]`` -> tokens ``[..., (h/p)(w/p), C p p]`` (row-major patches, channel-major inside
        a patch)."""
        p = self.config.patch_size
        *lead, c, h, w = z.shape
        n = len(lead)
        z = z.reshape(*lead, c, h // p, p, w // p, p).permute(*range(n), n + 1, n + 3, n, n + 2, n + 4)
        return z.reshape(*lead, (h // p) * (w // p), c * p * p)

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`patchify`."""
        p, c = self.config.patch_size, self.config.latent_channels
        rows, cols = self.config.token_grid
        lead = tokens.shape[:-2]
        n = len(lead)
        z = tokens.reshape(*lead, rows, cols, c, p, p).permute(*range(n), n + 2, n, n + 3, n + 1, n + 4)
        return z.reshape(*lead, c, rows * p, cols * p)

    def conditioning(self, t: torch.Tensor, actions: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """``SiLU(time embedding + action embedding)`` per frame: ``t [b, f]`` -> ``[b, f, d]``."""
        if actions.ndim == t.ndim:  # Crafter: one slot
            actions = actions.unsqueeze(-1)
        return F.silu(self.time_embed(t) + self.action_embed(actions, present))

    def rope(self, frame_positions: torch.Tensor) -> torch.Tensor:
        """Rotations ``complex64[..., tokens, 1, head_dim / 2]`` of the tokens of frames at ``frame_positions [...]``
        (angles computed in float64)."""
        grid = self.grid_positions
        n = grid.shape[0]
        t = frame_positions[..., None, None].expand(*frame_positions.shape, n, 1)
        hw = grid.expand(*frame_positions.shape, n, 2)
        angles = rope_angles(torch.cat([t, hw], dim=-1), self.config.rope_axes, self.config.rope_theta)
        return torch.polar(torch.ones_like(angles), angles).to(torch.complex64).flatten(-3, -2).unsqueeze(-2)

    def _output(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = fixed_rows_linear(self.final_adaLN, c).unsqueeze(2).chunk(2, dim=-1)
        return self.unpatchify(self.final_proj(modulate(self.final_norm(x), shift, scale)))

    # --- entry points --------------------------------------------------------------------------------------------

    def forward(
        self,
        z: torch.Tensor,
        t: torch.Tensor,
        actions: torch.Tensor,
        present: torch.Tensor,
        *,
        frame_positions: torch.Tensor | None = None,
        frame_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Velocity of every frame of ``z [b, f, C, h, w]`` at flow times ``t [b, f]``.

        Args:
            actions: compact actions ``int64[b, f, *A]`` of the frames (the action that led to each frame).
            present: ``bool[b, f]``, False for frames without an action (a window's first frame).
            frame_positions: ``int64[f]`` RoPE frame index of each frame block; default ``0 .. f-1``.
            frame_mask: ``bool[f, f]``, ``frame_mask[i, j]`` = block ``i`` attends to block ``j``; default block-causal
                on ``frame_positions`` (``pos_j <= pos_i``). Packed layouts (several noisy versions of one frame next
                to a clean context) pass their own.
        """
        b, f = z.shape[:2]
        n = self.config.tokens_per_frame
        if frame_positions is None:
            frame_positions = torch.arange(f, device=z.device)
        if frame_mask is None:
            frame_mask = frame_positions[None, :] <= frame_positions[:, None]
        mask = frame_mask.repeat_interleave(n, 0).repeat_interleave(n, 1)
        x = self.patch_embed(self.patchify(z))
        c = self.conditioning(t, actions, present)
        rotation = self.rope(frame_positions)
        for block in self.blocks:
            x = block(x, c, rotation, mask)
        return self._output(x, c)

    def decode(
        self,
        z: torch.Tensor,
        t: torch.Tensor,
        actions: torch.Tensor,
        present: torch.Tensor,
        start: torch.Tensor,
        cache: KVCache,
        *,
        rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Velocity of a chunk of ``k`` frames per slot, ``z [b, k, C, h, w]``, placed at frames ``start_b ..
        start_b + k - 1`` of cache slots ``rows`` (default ``0 .. b-1``).

        Their keys and values are written into the cache there; each frame attends to the slot's cached frames
        before it and, block-causally, to the chunk. Cache content at later frames is ignored (masked).
        """
        b, k = z.shape[:2]
        n = self.config.tokens_per_frame
        device = z.device
        if rows is None:
            rows = torch.arange(b, device=device)
        frame_positions = start[:, None] + torch.arange(k, device=device)  # [b, k]
        token_positions = (frame_positions[:, :, None] * n + torch.arange(n, device=device)).reshape(b, k * n)
        kv_len = int(frame_positions.max().item() + 1) * n
        key_frame = torch.arange(kv_len, device=device) // n
        visible = key_frame[None, None, :] <= frame_positions.repeat_interleave(n, 1)[:, :, None]  # [b, k n, kv]
        x = self.patch_embed(self.patchify(z))
        mask = torch.zeros(visible.shape, dtype=x.dtype, device=device).masked_fill_(~visible, float("-inf"))
        mask = mask.unsqueeze(1)
        c = self.conditioning(t, actions, present)
        rotation = self.rope(frame_positions)  # [b, k n, 1, hd/2]
        write_index = (rows[:, None], token_positions)
        for i, block in enumerate(self.blocks):
            x = block(x, c, rotation, mask, cache_kv=cache.kv[i], write_index=write_index, read_rows=rows,
                      kv_len=kv_len)  # fmt: skip
        return self._output(x, c)

    def new_cache(self, slots: int) -> KVCache:
        c = self.config
        weight = self.patch_embed.weight
        return KVCache(c.num_hidden_layers, slots, c.num_attention_heads, c.context_frames * c.tokens_per_frame,
                       c.head_dim, dtype=weight.dtype, device=weight.device)  # fmt: skip
