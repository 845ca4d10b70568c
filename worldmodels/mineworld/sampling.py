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

Speculative decoding (``decoding="speculative"``) draws each token with :func:`speculative_sample` instead: a
draft token ``d`` (the previous frame's token at the same grid index) is kept with probability ``p(d)``, otherwise
the token is drawn from ``p`` without ``d``, renormalised (the residual ``(p - q)+`` of a point-mass draft ``q``).
Together the two branches draw exactly from ``p`` (Leviathan et al. 2023, Chen et al. 2023), with two uniforms per
token, so the decoder can test several drafts in one forward and still sample naive decoding's distribution.
"""

from __future__ import annotations

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
            the same distribution as naive, see :func:`speculative_sample`).
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
        sorted_probs, order = probs.sort(-1, descending=True)
        cdf = sorted_probs.cumsum(-1)
        # Tokens whose cumulative probability *before* them exceeds top_p are dropped: the kept set is a prefix
        # of the sorted order, so the kept mass is the cdf at its last element.
        n_kept = (cdf - sorted_probs <= config.top_p).sum(-1, keepdim=True)
        kept_mass = cdf.gather(-1, n_kept - 1)
        target = uniforms.unsqueeze(-1) * kept_mass
        # the first index whose cdf exceeds the target always lies inside the kept prefix (target < kept_mass)
        index = torch.searchsorted(cdf, target, right=True).clamp_(max=n_kept - 1)
        tokens = order.gather(-1, index).squeeze(-1)
        if not return_logprobs:
            return tokens, None
        chosen = sorted_probs.gather(-1, index).squeeze(-1)
        return tokens, (chosen / kept_mass.squeeze(-1)).log()
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


def speculative_sample(
    logits: torch.Tensor,
    drafts: torch.Tensor,
    u_accept: torch.Tensor | None,
    u_resample: torch.Tensor | None,
    config: SamplingConfig,
    *,
    return_logprobs: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Decide one token per row of ``logits [..., V]`` given a draft token per row (``drafts int64[...]``).

    The draft is accepted iff ``u_accept < p(draft)`` (:func:`draft_acceptance`); otherwise the token is drawn by
    inverse CDF (``u_resample``) from ``p`` with the draft removed and renormalised (:func:`resample_without_draft`).
    ``p`` is the sampling distribution of :func:`sample` (after temperature and top-k / top-p), so the token is
    distributed exactly as ``sample`` would draw it. Greedy: the argmax, "accepted" when it equals the draft (no
    uniforms needed).

    Returns ``(tokens int64[...], accepted bool[...], logprobs float32[...] | None)``; ``accepted`` is exactly
    ``tokens == drafts``; the log-probability is that of the token under ``p`` (0 for greedy).
    """
    if config.greedy:
        tokens = logits.argmax(-1)
        logprobs = torch.zeros(tokens.shape, device=logits.device) if return_logprobs else None
        return tokens, tokens == drafts, logprobs
    logp = filtered_logprobs(logits, config)
    accepted, draft_logp = draft_acceptance(logp, drafts, u_accept)
    redrawn, redrawn_logp = resample_without_draft(logp, drafts, u_resample)
    tokens = torch.where(accepted, drafts, redrawn)
    accepted = tokens == drafts  # also where nothing but the draft could be drawn
    return tokens, accepted, (torch.where(accepted, draft_logp, redrawn_logp) if return_logprobs else None)


def draft_acceptance(
    logp: torch.Tensor, drafts: torch.Tensor, u_accept: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The accept test of speculative sampling: ``(u_accept < p(draft), log p(draft))`` per row of the sampling
    log-probabilities ``logp [..., V]`` (:func:`filtered_logprobs`)."""
    draft_logp = logp.gather(-1, drafts.unsqueeze(-1)).squeeze(-1)
    return u_accept < draft_logp.exp(), draft_logp


def resample_without_draft(
    logp: torch.Tensor, drafts: torch.Tensor, u_resample: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw from ``p`` with the draft removed and renormalised (the residual ``(p - q)+`` of a point-mass draft),
    by inverse CDF from one uniform per row; where ``p`` holds nothing but the draft, the draft itself.

    Returns ``(tokens int64[...], log p(token) float32[...])``.
    """
    residual = logp.exp().scatter_(-1, drafts.unsqueeze(-1), 0.0)
    cdf = residual.cumsum(-1)
    total = cdf[..., -1:]
    # the first index whose cdf exceeds u * total: never a zero-probability token (the cdf does not rise there), and
    # it exists because u <= 1 - 2^-24 makes the rounded u * total smaller than total
    index = torch.searchsorted(cdf, u_resample.unsqueeze(-1) * total, right=True)
    index = torch.where(total > 0, index, drafts.unsqueeze(-1))
    return index.squeeze(-1), logp.gather(-1, index).squeeze(-1)
