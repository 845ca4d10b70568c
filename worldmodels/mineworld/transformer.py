"""MineWorld's Llama decoder (``microsoft/mineworld: lvm.py``) with a static, per-slot KV cache.

Architecture: pre-norm decoder layers ``x + attn(norm(x))``, ``x + mlp(norm(x))``; RMSNorm in fp32; SwiGLU MLP;
grouped-query attention (KV heads shared by consecutive query heads, as ``repeat_interleave``); 1-D rotary
embeddings (``rotate_half`` convention, theta 10000) over absolute positions; untied ``lm_head``; no biases.

Module names reproduce the official state-dict keys (``model.embed_tokens.weight``,
``model.layers.{i}.self_attn.q_proj.weight``, ..., ``model.norm.weight``, ``lm_head.weight``); the rotary tables
are non-persistent buffers and the KV cache lives outside the module (:class:`KVCache`), so ``state_dict()`` holds
exactly the official keys.

Three entry points:

* :meth:`Transformer.forward` - teacher forcing over positions ``0..S-1`` (no cache; differentiable).
* :meth:`Transformer.prefill` - the same, also writing K/V of every position into chosen cache slots.
* :meth:`Transformer.decode` - a few new tokens per slot at arbitrary per-slot positions, attending to the slot's
  cache at key positions ``<=`` the query position (the official mask: plain causal by position, over whatever the
  cache holds there).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from worldmodels.mineworld.config import MineWorldConfig


class RMSNorm(nn.Module):
    """``weight * x * rsqrt(mean(x^2) + eps)``, normalised in fp32 and cast back before the weight (official)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _rms_norm(x, self.weight, self.eps)


class _Fusable(nn.Module):
    """Runs several projections of the same input as one matmul at inference time.

    The concatenated weight is a cache, rebuilt whenever a source weight is replaced or modified in place (its
    version counter moves), so training and ``load_state_dict`` keep it correct. With gradients enabled, or when
    ``fused`` is off (large models: the copy would cost memory), the projections run separately.
    """

    fused: bool = True

    def _project(self, x: torch.Tensor, layers: tuple[nn.Linear, ...]) -> torch.Tensor:
        weights = tuple(layer.weight for layer in layers)
        if not self.fused or torch.is_grad_enabled():
            return torch.cat([F.linear(x, w) for w in weights], dim=-1)
        key = tuple((id(w), w.data_ptr(), w._version, w.dtype, w.device) for w in weights)
        cached = self.__dict__.get("_fused_cache")
        if cached is None or cached[0] != key:
            cached = (key, torch.cat(weights).detach())
            self.__dict__["_fused_cache"] = cached
        return F.linear(x, cached[1])

    def clear_fused(self) -> None:
        self.__dict__.pop("_fused_cache", None)


class MLP(_Fusable):
    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self._project(x, (self.gate_proj, self.up_proj)).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class KVCache:
    """Static key/value cache, one row ("slot") per environment.

    ``kv`` has shape ``[n_layers, slots, 2 * n_kv_heads, length, head_dim]``: keys in the first ``n_kv_heads``
    heads, values in the rest (one write per layer and step). Slots are independent: each is written at its own
    positions, and can be zeroed, re-prefilled or copied without touching the others.
    """

    def __init__(
        self,
        n_layers: int,
        slots: int,
        n_kv_heads: int,
        length: int,
        head_dim: int,
        *,
        dtype: torch.dtype,
        device: torch.device | str,
    ):
        self.kv = torch.zeros((n_layers, slots, 2 * n_kv_heads, length, head_dim), dtype=dtype, device=device)
        self.n_kv_heads = n_kv_heads
        self.slots = slots
        self.length = length
        self.row_index = torch.arange(slots, device=device)[:, None]  # broadcast index for per-slot writes

    @property
    def k(self) -> torch.Tensor:
        """Keys ``[n_layers, slots, n_kv_heads, length, head_dim]`` (a view)."""
        return self.kv[:, :, : self.n_kv_heads]

    @property
    def v(self) -> torch.Tensor:
        """Values ``[n_layers, slots, n_kv_heads, length, head_dim]`` (a view)."""
        return self.kv[:, :, self.n_kv_heads :]

    def zero_(self, rows: torch.Tensor) -> None:
        """Forget everything stored in ``rows`` (unwritten positions read as zeros, like a fresh official cache)."""
        self.kv[:, rows] = 0

    def copy_(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        """Copy whole slots ``src[i] -> dst[i]``."""
        self.kv[:, dst] = self.kv[:, src]


class Attention(_Fusable):
    def __init__(self, config: MineWorldConfig):
        super().__init__()
        self.n_heads = config.num_attention_heads
        self.n_kv = config.num_key_value_heads
        self.head_dim = config.head_dim
        hidden = config.hidden_size
        self.q_proj = nn.Linear(hidden, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, self.n_kv * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, self.n_kv * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, hidden, bias=False)

    def _qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """Rotated queries ``[b, s, heads, hd]`` and keys|values ``[b, s, 2 * kv_heads, hd]``."""
        b, s, _ = x.shape
        qkv = self._project(x, (self.q_proj, self.k_proj, self.v_proj)).view(b, s, -1, self.head_dim)
        rotated = self.n_heads + self.n_kv
        qk = qkv[:, :, :rotated]
        qk = qk * cos + _rotate_half(qk) * sin  # cos, sin: [b|1, s, 1, hd]
        kv = torch.cat([qk[:, :, self.n_heads :], qkv[:, :, rotated:]], dim=2)
        return qk[:, :, : self.n_heads], kv

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        layer_kv: torch.Tensor | None = None,
        rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Causal self-attention over the chunk itself (positions ``0..S-1``); with ``layer_kv`` the chunk's keys
        and values are also stored in cache ``rows`` at positions ``0..S-1``."""
        b, s, _ = x.shape
        q, kv = self._qkv(x, cos, sin)
        kv = kv.transpose(1, 2)  # [b, 2 * kv_heads, s, hd]
        if layer_kv is not None:
            layer_kv[rows, :, :s] = kv
        k, v = kv[:, : self.n_kv], kv[:, self.n_kv :]
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k, v, is_causal=True, enable_gqa=self.n_kv != self.n_heads
        )
        return self.o_proj(out.transpose(1, 2).reshape(b, s, -1))

    def decode(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        layer_kv: torch.Tensor,
        write_index: tuple[torch.Tensor, torch.Tensor],
        read_rows: torch.Tensor | None,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        """Write the chunk's K/V at ``write_index = (rows [b, 1], positions [b, s])`` and attend to the cache.

        ``mask`` is ``[b, 1, groups * s, kv_len]``: query heads are folded onto their KV head (head ``h`` uses
        KV head ``h // groups``, as ``repeat_interleave``) so the cache is never expanded.
        """
        b, s, _ = x.shape
        q, kv = self._qkv(x, cos, sin)
        layer_kv[write_index[0], :, write_index[1]] = kv
        kv_len = mask.shape[-1]
        cached = layer_kv[:b, :, :kv_len] if read_rows is None else layer_kv[read_rows, :, :kv_len]
        q = q.transpose(1, 2).reshape(b, self.n_kv, (self.n_heads // self.n_kv) * s, self.head_dim)
        out = F.scaled_dot_product_attention(q, cached[:, : self.n_kv], cached[:, self.n_kv :], attn_mask=mask)
        out = out.view(b, self.n_heads, s, self.head_dim).transpose(1, 2).reshape(b, s, -1)
        return self.o_proj(out)


class DecoderLayer(nn.Module):
    def __init__(self, config: MineWorldConfig):
        super().__init__()
        self.self_attn = Attention(config)
        self.mlp = MLP(config.hidden_size, config.intermediate_size)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x, cos, sin, layer_kv=None, rows=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, layer_kv, rows)
        return x + self.mlp(self.post_attention_layernorm(x))

    def decode(self, x, cos, sin, layer_kv, write_index, read_rows, mask):
        x = x + self.self_attn.decode(self.input_layernorm(x), cos, sin, layer_kv, write_index, read_rows, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    """Embedding, decoder layers and final norm (the official ``transformer.model``)."""

    def __init__(self, config: MineWorldConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.register_buffer("rope_cos", torch.empty(0), persistent=False)
        self.register_buffer("rope_sin", torch.empty(0), persistent=False)
        self.register_buffer("key_positions", torch.empty(0, dtype=torch.long), persistent=False)
        self.reset_rope()

    @torch.no_grad()
    def reset_rope(self) -> None:
        """(Re)compute the rotary tables (after ``to_empty``); fp32, like transformers' default rope init."""
        config = self.config
        device = self.embed_tokens.weight.device
        dim = config.head_dim
        exponents = torch.arange(0, dim, 2, dtype=torch.int64, device=device).float() / dim
        inv_freq = 1.0 / (config.rope_theta**exponents)
        t = torch.arange(config.max_position_embeddings, device=device, dtype=torch.float32)
        emb = torch.cat([torch.outer(t, inv_freq)] * 2, dim=-1)
        dtype = self.embed_tokens.weight.dtype
        self.rope_cos = emb.cos().to(dtype)
        self.rope_sin = emb.sin().to(dtype)
        self.key_positions = torch.arange(config.max_position_embeddings, device=device)


class Transformer(nn.Module):
    """The official ``LlamaForCausalLM`` of ``lvm.py``: ``model`` (embeddings, layers, norm) and ``lm_head``.

    Args:
        config: the architecture.
        fused_projections: at inference, run q/k/v and gate/up as one matmul each from cached concatenated weights
            (fewer, larger kernels: the per-token step of small models is overhead-bound). The cache doubles those
            weights in memory, so the default (``None``) enables it only up to 100M parameters.
    """

    def __init__(self, config: MineWorldConfig, *, fused_projections: bool | None = None):
        super().__init__()
        self.config = config
        self.model = LlamaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if fused_projections is None:
            fused_projections = sum(p.numel() for p in self.parameters()) <= 100_000_000
        self.set_fused_projections(fused_projections)

    def set_fused_projections(self, enabled: bool) -> None:
        """Turn the inference-time fused q/k/v and gate/up matmuls on or off (see the class docstring)."""
        for module in self.modules():
            if isinstance(module, _Fusable):
                module.fused = bool(enabled)
                module.clear_fused()

    def _apply(self, fn, recurse=True):
        for module in self.modules():
            if isinstance(module, _Fusable):
                module.clear_fused()
        self.__dict__.pop("_step_weights", None)
        return super()._apply(fn, recurse)

    def new_cache(self, slots: int) -> KVCache:
        """An all-zero cache with ``slots`` rows covering ``max_position_embeddings`` positions."""
        c = self.config
        weight = self.lm_head.weight
        return KVCache(
            c.num_hidden_layers, slots, c.num_key_value_heads, c.max_position_embeddings, c.head_dim,
            dtype=weight.dtype, device=weight.device,
        )  # fmt: skip

    def head(self, hidden: torch.Tensor, vocab_limit: int | None = None) -> torch.Tensor:
        """Final norm and ``lm_head``; ``vocab_limit`` computes only the first ``vocab_limit`` logits."""
        hidden = self.model.norm(hidden)
        if vocab_limit is None:
            return self.lm_head(hidden)
        return F.linear(hidden, self.lm_head.weight[:vocab_limit])

    def step_weights(self, vocab_limit: int | None = None) -> StepWeights:
        """The weights of :func:`static_decode_step` (cached; rebuilt when a weight is replaced or changed in place,
        as its version counter moves). ``vocab_limit`` keeps only the first logits (e.g. the image vocabulary)."""
        sources = [self.model.embed_tokens.weight, self.model.norm.weight, self.lm_head.weight]
        for layer in self.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            sources += [layer.input_layernorm.weight, layer.post_attention_layernorm.weight]
            sources += [attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight, attn.o_proj.weight]
            sources += [mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight]
        key = (vocab_limit, tuple((id(w), w.data_ptr(), w._version, w.dtype, w.device) for w in sources))
        cached = self.__dict__.get("_step_weights")
        if cached is not None and cached[0] == key:
            return cached[1]
        with torch.no_grad():
            layers = tuple(
                (
                    layer.input_layernorm.weight.detach(),
                    torch.cat([layer.self_attn.q_proj.weight, layer.self_attn.k_proj.weight, layer.self_attn.v_proj.weight]),
                    layer.self_attn.o_proj.weight.detach(),
                    layer.post_attention_layernorm.weight.detach(),
                    torch.cat([layer.mlp.gate_proj.weight, layer.mlp.up_proj.weight]),
                    layer.mlp.down_proj.weight.detach(),
                )
                for layer in self.model.layers
            )
            head = self.lm_head.weight.detach()
            weights = StepWeights(
                embed=self.model.embed_tokens.weight.detach(),
                layers=layers,
                norm=self.model.norm.weight.detach(),
                head=head if vocab_limit is None else head[:vocab_limit],
                rope_cos=self.model.rope_cos,
                rope_sin=self.model.rope_sin,
            )
        self.__dict__["_step_weights"] = (key, weights)
        return weights

    def _rope(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.rope_cos[positions].to(dtype), self.model.rope_sin[positions].to(dtype)

    def _check_length(self, s: int) -> None:
        if s > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence of {s} tokens exceeds max_position_embeddings={self.config.max_position_embeddings}"
            )

    def hidden_states(
        self,
        ids: torch.Tensor,
        cache: KVCache | None = None,
        rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states (before the final norm) of ``ids [B, S]`` at positions ``0..S-1``; with ``cache``, K/V
        are stored in slots ``rows`` (default ``0..B-1``)."""
        b, s = ids.shape
        self._check_length(s)
        x = self.model.embed_tokens(ids)
        cos, sin = self._rope(torch.arange(s, device=ids.device), x.dtype)
        cos, sin = cos[None, :, None], sin[None, :, None]  # [1, s, 1, hd]
        if cache is not None and rows is None:
            rows = torch.arange(b, device=ids.device)
        for i, layer in enumerate(self.model.layers):
            if cache is None:
                x = layer(x, cos, sin)
            else:
                x = layer(x, cos, sin, cache.kv[i], rows)
        return x

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits ``[B, S, vocab]`` of ``ids [B, S]`` at positions ``0..S-1`` (no cache)."""
        return self.head(self.hidden_states(ids))

    def prefill(
        self, ids: torch.Tensor, cache: KVCache, rows: torch.Tensor, *, vocab_limit: int | None = None
    ) -> torch.Tensor:
        """Store K/V of ``ids [B, S]`` (positions ``0..S-1``) in cache slots ``rows``; returns the last logits
        ``[B, vocab_limit or vocab]``."""
        hidden = self.hidden_states(ids, cache, rows)
        return self.head(hidden[:, -1], vocab_limit)

    def decode(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor,
        cache: KVCache,
        kv_len: int,
        *,
        rows: torch.Tensor | None = None,
        vocab_limit: int | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """Logits of ``ids [B, S]`` placed at ``positions [B, S]`` of cache slots ``rows`` (default ``0..B-1``).

        Each query attends to its slot's cache at key positions ``<= `` its own position (keys beyond ``kv_len``,
        which must exceed every position, are skipped: they are masked anyway). Returns ``[B, S, V]`` or, with
        ``last_only``, ``[B, V]``; ``V = vocab_limit or vocab_size``.
        """
        b, s = ids.shape
        x = self.model.embed_tokens(ids)
        cos, sin = self._rope(positions, x.dtype)
        cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)  # [b, s, 1, hd]
        visible = self.model.key_positions[:kv_len] <= positions[:, None, :, None]  # [b, 1, s, kv_len]
        # additive mask (0 / -inf), built once per step: SDPA would convert a boolean mask in every layer
        mask = visible.to(x.dtype).log_()
        groups = self.config.num_attention_heads // self.config.num_key_value_heads
        mask = mask.unsqueeze(2).expand(b, 1, groups, s, kv_len).reshape(b, 1, groups * s, kv_len)
        write_rows = cache.row_index[:b] if rows is None else rows[:, None]
        write_index = (write_rows, positions)
        for i, layer in enumerate(self.model.layers):
            x = layer.decode(x, cos, sin, cache.kv[i], write_index, rows, mask)
        if last_only:
            x = x[:, -1]
        return self.head(x, vocab_limit)


# --- the static decode step ------------------------------------------------------------------------------------------


class StepWeights(NamedTuple):
    """The weights one decode step reads, with q/k/v and gate/up concatenated (one matmul each).

    A snapshot of plain tensors rather than modules, so that :func:`static_decode_step` is a pure function of its
    tensor arguments: ``torch.compile`` traces it once per shape and guards on shapes only, never on weight
    identities. :meth:`Transformer.step_weights` rebuilds the snapshot when any source weight changes.
    """

    embed: torch.Tensor
    layers: tuple[tuple[torch.Tensor, ...], ...]
    """Per layer ``(input_norm, qkv, o, post_attention_norm, gate_up, down)``."""
    norm: torch.Tensor
    head: torch.Tensor
    """``lm_head.weight[:vocab_limit]``."""
    rope_cos: torch.Tensor
    rope_sin: torch.Tensor


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """:class:`RMSNorm` as a function (normalised in fp32, cast back before the weight)."""
    if x.dtype == torch.float32:  # same ops without the no-op casts (the eager decode step is dispatch-bound)
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(x.dtype)


MATVEC_BATCH = 4
"""Decode steps of at most this many slots compute their projections as broadcast multiply-and-sum, which Inductor
fuses into one vectorised loop per projection: at that size a BLAS call costs more than its arithmetic (measured on
the 2-core dev CPU, docs/benchmarks.md)."""


def _linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.linear`` for :func:`static_decode_step`. The branch is on the rows (slots x tokens per slot), taken at
    trace time: a fused loop re-reads the weight for every row, so wide steps (speculative decoding's drafts) go to
    BLAS; a dynamic width compiles one graph on each side of the threshold."""
    if x.shape[0] * x.shape[1] <= MATVEC_BATCH:
        return (x.unsqueeze(-2) * weight).sum(-1)
    return F.linear(x, weight)


def static_decode_step(
    weights: StepWeights,
    kv: Sequence[torch.Tensor],
    ids: torch.Tensor,
    positions: torch.Tensor,
    key_positions: torch.Tensor,
    *,
    n_heads: int,
    n_kv_heads: int,
    eps: float,
) -> torch.Tensor:
    """Logits ``[B, S, V]`` of ``ids [B, S]`` at ``positions [B, S]`` of cache slots ``0..B-1`` (``kv``: one
    tensor ``[B, 2 * n_kv_heads, length, head_dim]`` per layer, e.g. ``KVCache.kv.unbind(0)``), writing their K/V
    first. Attention reads the cache prefix ``key_positions = arange(kv_len)`` (``kv_len`` beyond every position).

    The same arithmetic as :meth:`Transformer.decode`, written for ``torch.compile`` as gpt-fast writes its step:
    shapes are static but for the prefix length, which the caller marks dynamic (one graph serves every length;
    masks by position: a query at position ``p`` sees its slot's keys at positions ``<= p``), positions are tensors,
    and nothing branches on data or syncs with the host.
    """
    b, s = ids.shape
    length, head_dim = key_positions.shape[0], kv[0].shape[-1]
    groups = n_heads // n_kv_heads
    x = F.embedding(ids, weights.embed)
    cos = weights.rope_cos[positions].to(x.dtype).unsqueeze(2)  # [b, s, 1, hd]
    sin = weights.rope_sin[positions].to(x.dtype).unsqueeze(2)
    visible = key_positions <= positions[:, None, :, None]  # [b, 1, s, length]
    mask = torch.zeros(visible.shape, dtype=x.dtype, device=ids.device).masked_fill_(~visible, float("-inf"))
    mask = mask.unsqueeze(2).expand(b, 1, groups, s, length).reshape(b, 1, groups * s, length)
    rows = torch.arange(b, device=ids.device)[:, None]
    rotated = n_heads + n_kv_heads
    for layer_kv, (input_norm, w_qkv, w_o, post_norm, w_gate_up, w_down) in zip(kv, weights.layers):
        qkv = _linear(_rms_norm(x, input_norm, eps), w_qkv).view(b, s, -1, head_dim)
        qk = qkv[:, :, :rotated]
        qk = qk * cos + _rotate_half(qk) * sin
        layer_kv[rows, :, positions] = torch.cat([qk[:, :, n_heads:], qkv[:, :, rotated:]], dim=2)
        q = qk[:, :, :n_heads].transpose(1, 2).reshape(b, n_kv_heads, groups * s, head_dim)
        keys, values = layer_kv[:, :n_kv_heads, :length], layer_kv[:, n_kv_heads:, :length]
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        x = x + _linear(out.view(b, n_heads, s, head_dim).transpose(1, 2).reshape(b, s, -1), w_o)
        gate, up = _linear(_rms_norm(x, post_norm, eps), w_gate_up).chunk(2, dim=-1)
        x = x + _linear(F.silu(gate) * up, w_down)
    return _linear(_rms_norm(x, weights.norm, eps), weights.head)
