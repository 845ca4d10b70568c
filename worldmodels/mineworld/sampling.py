"""Token sampling with MineWorld's temperature / top-k / top-p semantics and per-environment generators.

Official semantics (``microsoft/mineworld: diagonal_decoding.py``), applied to the image-token logits only:

* top-p (``sample_top_p``): ``probs = softmax(logits / temperature)``; sort descending; zero every token whose
  cumulative probability *before* it exceeds ``top_p`` (``cumsum - p > top_p``); renormalise; sample.
* top-k (``logits_to_probs``): ``logits / max(temperature, 1e-5)``; every logit below the k-th largest becomes
  ``-inf`` (ties with the k-th are kept); softmax; sample.
* temperature 0 -> argmax. top-p and top-k are mutually exclusive.

Sampling itself differs from the official "exponential race" on purpose: each token is drawn by inverse CDF from
one uniform number, and all uniforms of a frame are drawn at once from the environment's own ``torch.Generator``
(``draw_uniforms``). A seed therefore reproduces a rollout on the same device whatever else is in the batch, with
one generator call per environment per frame. The sampled distribution is the same.

``top_k=1`` is treated as greedy (argmax; with exactly tied logits the official sampler would pick among the
ties at random).

Speculative decoding (``decoding="speculative"``) draws every token with :func:`sample` from the same uniform as
naive decoding; a draft token (the previous frame's token at the same grid index) is kept iff the drawn token equals
it, which happens with probability ``p(draft)`` as in Leviathan et al. 2023 / Chen et al. 2023 for a point-mass
draft. Sharing the uniform couples the two decodings: speculative decoding draws naive decoding's own tokens (up to
float rounding of the logits), so it is a way to run naive decoding, not another sampler.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from worldmodels.errors import ConfigError

DECODINGS = ("naive", "diagonal", "speculative")
DEFAULT_DRAFT_LEN = 16


@dataclass(frozen=True)
class SamplingConfig:
    """How image tokens are drawn and in which order they are decoded.

    Args:
        temperature: softmax temperature; 0 means greedy.
        top_k: keep the k most likely tokens (ties with the k-th included); ``1`` means greedy.
        top_p: nucleus sampling threshold in ``(0, 1]``; exclusive with ``top_k``.
        decoding: ``"naive"`` (one token per forward, raster order), ``"diagonal"`` (arXiv 2503.14070; a different
            distribution) or ``"speculative"`` (several tokens per forward, drafted by copying the previous frame;
            the same tokens as naive for the same uniforms, see the module docstring).
        window: diagonal decoding starts row ``r + 1`` once row ``r`` holds ``window`` tokens.
        draft_len: speculative decoding feeds each slot's current token plus up to ``draft_len - 1`` drafts per
            forward (the decoder picks the width from the acceptance so far), so one forward decides between 1 and
            ``draft_len`` tokens per slot.
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    decoding: str = "naive"
    window: int = 2
    draft_len: int = DEFAULT_DRAFT_LEN

    def __post_init__(self) -> None:
        if self.top_k is not None and self.top_p is not None:
            raise ConfigError(
                f"top_k={self.top_k} and top_p={self.top_p} are mutually exclusive (as in MineWorld); pass only one"
            )
        if not self.temperature >= 0 or self.temperature == float("inf"):
            raise ConfigError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if self.top_k is not None and (isinstance(self.top_k, bool) or int(self.top_k) != self.top_k or self.top_k < 1):
            raise ConfigError(f"top_k must be an integer >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must lie in (0, 1], got {self.top_p}")
        if self.decoding not in DECODINGS:
            raise ConfigError(f"decoding must be one of {DECODINGS}, got {self.decoding!r}")
        if isinstance(self.window, bool) or int(self.window) != self.window or self.window < 1:
            raise ConfigError(f"window must be an integer >= 1, got {self.window}")
        if isinstance(self.draft_len, bool) or int(self.draft_len) != self.draft_len or self.draft_len < 1:
            raise ConfigError(f"draft_len must be an integer >= 1 (tokens fed per forward), got {self.draft_len}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1

    @classmethod
    def official_eval(cls) -> SamplingConfig:
        """MineWorld's evaluation setting (``scripts/inference_16f_models.sh``): top-p 0.8, temperature 1, naive."""
        return cls(temperature=1.0, top_p=0.8, decoding="naive")


def check_generators(generators: Sequence[torch.Generator] | None, n: int, *, required: bool) -> list | None:
    """Validate one generator per environment."""
    if generators is None:
        if required:
            raise ConfigError(
                "sampling needs one torch.Generator per environment (generators=[...]); "
                "pass temperature=0 or top_k=1 for greedy decoding without generators"
            )
        return None
    generators = list(generators)
    if len(generators) != n:
        raise ConfigError(f"expected {n} generators (one per environment), got {len(generators)}")
    for g in generators:
        if not isinstance(g, torch.Generator):
            raise ConfigError(f"generators must be torch.Generator objects, got {type(g).__name__}")
    return generators


def draw_uniforms(generators: Sequence[torch.Generator], n: int, device: torch.device) -> torch.Tensor:
    """``float32[len(generators), n]`` uniforms in ``[0, 1)``; row ``i`` comes from ``generators[i]`` alone."""
    rows = [torch.rand(n, generator=g, device=g.device) for g in generators]
    return torch.stack(rows).to(device)


def filtered_logprobs(logits: torch.Tensor, config: SamplingConfig) -> torch.Tensor:
    """Log-probabilities of the sampling distribution (after temperature and top-k / top-p), ``-inf`` where a
    token cannot be drawn. Reference implementation (sorts the whole vocabulary); used for scoring, not speed."""
    x = logits.float()
    if config.greedy:
        best = x.argmax(-1, keepdim=True)
        return torch.full_like(x, float("-inf")).scatter_(-1, best, 0.0)
    if config.top_p is not None:
        probs = torch.softmax(x / config.temperature, dim=-1)
        sorted_probs, order = probs.sort(-1, descending=True)
        drop_sorted = sorted_probs.cumsum(-1) - sorted_probs > config.top_p
        drop = torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted)
        kept = probs.masked_fill(drop, 0.0)
        return (kept / kept.sum(-1, keepdim=True)).log()
    x = x / max(config.temperature, 1e-5)
    if config.top_k is not None:
        pivot = x.topk(min(config.top_k, x.shape[-1]), dim=-1).values[..., -1:]
        x = x.masked_fill(x < pivot, float("-inf"))
    return torch.log_softmax(x, dim=-1)


NUCLEUS_CANDIDATES = 64
"""Top-p sampling ranks only the most likely tokens (``topk``) while every row's nucleus fits among them, instead
of sorting the whole vocabulary (the sort was a tenth of a compiled decode step of 64 envs; docs/benchmarks.md §2);
at top-p 0.9 the bundled Crafter model's nucleus fits in 64 of 1024 tokens for 99.9% of rows."""


def _draw_from_nucleus(
    sorted_probs: torch.Tensor, order: torch.Tensor, probs: torch.Tensor, u: torch.Tensor, top_p: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse-CDF draw from the nucleus of the ranked tokens ``sorted_probs`` (descending; ids ``order``), which
    must hold every row's nucleus. Returns ``(tokens, probability of the token within the nucleus)``. ``probs`` (the
    whole distribution) is unused: both branches of :func:`sample`'s ``torch.cond`` take the same operands."""
    cdf = sorted_probs.cumsum(-1)
    # Tokens whose cumulative probability *before* them exceeds top_p are dropped: the kept set is a prefix
    # of the sorted order, so the kept mass is the cdf at its last element
    # (at least one: NaN logits compare false everywhere and are reported by the decoder after the frame).
    n_kept = (cdf - sorted_probs <= top_p).sum(-1, keepdim=True).clamp_(min=1)
    kept_mass = cdf.gather(-1, n_kept - 1)
    # the first index whose cdf exceeds the target always lies inside the kept prefix (target < kept_mass)
    index = torch.searchsorted(cdf, u * kept_mass, right=True).clamp_(max=n_kept - 1)
    chosen = sorted_probs.gather(-1, index).squeeze(-1) / kept_mass.squeeze(-1)
    return order.gather(-1, index).squeeze(-1), chosen


def _draw_from_sorted_vocabulary(sorted_probs, order, probs, u, top_p):
    """:func:`_draw_from_nucleus` after sorting the whole vocabulary (the candidates did not hold a nucleus)."""
    return _draw_from_nucleus(*probs.sort(-1, descending=True), probs, u, top_p)


def sample(
    logits: torch.Tensor,
    uniforms: torch.Tensor | None,
    config: SamplingConfig,
    *,
    return_logprobs: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Draw one token per row of ``logits [..., V]`` using ``uniforms [...]`` (one per token).

    Returns ``(tokens int64[...], logprobs float32[...] | None)``; the log-probability is that of the drawn
    token under the sampling distribution (0 for greedy).
    """
    x = logits.float()
    if config.greedy:
        tokens = x.argmax(-1)
        return tokens, (torch.zeros(tokens.shape, device=x.device) if return_logprobs else None)
    if config.top_p is not None:
        probs = torch.softmax(x / config.temperature, dim=-1)
        u = uniforms.unsqueeze(-1)
        candidates = min(NUCLEUS_CANDIDATES, probs.shape[-1])
        top_probs, top_order = probs.topk(candidates, dim=-1)
        # every row's nucleus lies among its candidates when the mass before the last one exceeds top_p (that one
        # and all after it are dropped); otherwise the whole vocabulary is sorted, so the draw is always exact
        fits = ((top_probs.cumsum(-1) - top_probs)[..., -1] > config.top_p).all() | (candidates == probs.shape[-1])
        draw = functools.partial(_draw_from_nucleus, top_p=config.top_p)
        fallback = functools.partial(_draw_from_sorted_vocabulary, top_p=config.top_p)
        args = (top_probs, top_order, probs, u)
        if torch.compiler.is_compiling():  # both branches in the graph, no host sync
            tokens, chosen = torch.cond(fits, draw, fallback, args)
        else:
            tokens, chosen = (draw if bool(fits) else fallback)(*args)
        return tokens, (chosen.log() if return_logprobs else None)
    x = x / max(config.temperature, 1e-5)
    if config.top_k is not None and config.top_k < x.shape[-1]:
        pivot = x.topk(config.top_k, dim=-1).values[..., -1:]
        x = x.masked_fill(x < pivot, float("-inf"))
    probs = torch.softmax(x, dim=-1)
    cdf = probs.cumsum(-1)
    target = uniforms.unsqueeze(-1) * cdf[..., -1:]
    # zero-probability tokens never match: the cdf does not rise at them
    index = torch.searchsorted(cdf, target, right=True).clamp_(max=x.shape[-1] - 1)
    tokens = index.squeeze(-1)
    if not return_logprobs:
        return tokens, None
    return tokens, torch.log_softmax(x, dim=-1).gather(-1, index).squeeze(-1)
