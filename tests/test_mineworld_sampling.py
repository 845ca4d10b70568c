"""MineWorld sampling semantics (top-p / top-k / temperature), per-environment generators, decode schedules."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from worldmodels.errors import ConfigError
from worldmodels.mineworld.decoding import diagonal_schedule, naive_schedule
from worldmodels.mineworld.sampling import NUCLEUS_CANDIDATES, SamplingConfig, draw_uniforms, filtered_logprobs, sample


def grid_uniforms(n: int) -> torch.Tensor:
    return (torch.arange(n, dtype=torch.float32) + 0.5) / n


def draw_counts(logits: torch.Tensor, config: SamplingConfig, n: int = 1000) -> list[int]:
    """Tokens drawn for ``n`` evenly spaced uniforms: the inverse CDF makes counts = n * probability (+-1)."""
    tokens, _ = sample(logits.expand(n, -1), grid_uniforms(n), config)
    return torch.bincount(tokens, minlength=logits.shape[-1]).tolist()


def test_top_p_drops_tokens_whose_preceding_mass_exceeds_p():
    probs = torch.tensor([0.5, 0.25, 0.15, 0.1])
    logits = probs.log()[[2, 0, 3, 1]]  # shuffled: the rule works on the sorted order, ids are kept
    config = SamplingConfig(top_p=0.6)
    # mass before each sorted token: 0, 0.5, 0.75, 0.9 -> keep the first two (0.5 <= 0.6), renormalise by 0.75.
    # (A "cumsum <= p" rule would keep only the first.)
    expected = torch.tensor([0.0, 0.5, 0.0, 0.25]) / 0.75
    torch.testing.assert_close(filtered_logprobs(logits, config).exp(), expected)
    assert draw_counts(logits, config) == [0, 667, 0, 333]
    tokens, logprobs = sample(logits.expand(2, -1), torch.tensor([0.6, 0.7]), config, return_logprobs=True)
    assert tokens.tolist() == [1, 3]  # 0.6 * 0.75 = 0.45 < 0.5; 0.7 * 0.75 = 0.525 >= 0.5
    torch.testing.assert_close(logprobs, torch.tensor([math.log(0.5 / 0.75), math.log(0.25 / 0.75)]))


def test_top_p_applies_temperature_first():
    logits = torch.tensor([2.0, 1.0, 0.0])
    config = SamplingConfig(temperature=0.5, top_p=0.9)
    p = torch.softmax(logits / 0.5, -1)  # 0.867, 0.117, 0.016: mass before token 2 = 0.984 > 0.9
    expected = torch.tensor([p[0], p[1], 0.0]) / (p[0] + p[1])
    torch.testing.assert_close(filtered_logprobs(logits, config).exp(), expected)
    assert draw_counts(logits, config)[2] == 0


def test_top_k_keeps_ties_with_the_kth_logit():
    logits = torch.tensor([1.0, 3.0, 2.0, 2.0, 0.0])
    config = SamplingConfig(top_k=2)  # the 2nd largest is 2.0, shared by ids 2 and 3: all three stay
    e = torch.tensor([0.0, math.exp(3), math.exp(2), math.exp(2), 0.0])
    torch.testing.assert_close(filtered_logprobs(logits, config).exp(), e / e.sum())
    counts = draw_counts(logits, config)
    assert counts[0] == counts[4] == 0
    assert [abs(c - 1000 * float(p)) <= 1 for c, p in zip(counts, e / e.sum())] == [True] * 5


def test_plain_temperature_sampling_matches_the_softmax():
    logits = torch.tensor([0.3, -1.0, 2.0, 0.0])
    config = SamplingConfig(temperature=1.7)
    p = torch.softmax(logits / 1.7, -1)
    counts = draw_counts(logits, config, n=2000)
    assert all(abs(c - 2000 * float(q)) <= 1 for c, q in zip(counts, p))


def test_zero_probability_tokens_are_never_drawn():
    logits = torch.tensor([0.0, 0.0, float("-inf")])
    top = torch.tensor([1 - 2**-24, 0.0])
    assert sample(logits.expand(2, -1), top, SamplingConfig())[0].tolist() == [1, 0]
    p_logits = torch.tensor([5.0, 0.0, -5.0])  # top-p 0.5 keeps only id 0
    assert sample(p_logits.expand(2, -1), top, SamplingConfig(top_p=0.5))[0].tolist() == [0, 0]


def test_greedy_is_argmax_and_needs_no_uniforms():
    logits = torch.randn(3, 5, 17, generator=torch.Generator().manual_seed(0))
    for config in (SamplingConfig(temperature=0), SamplingConfig(top_k=1), SamplingConfig(temperature=0, top_p=0.8)):
        assert config.greedy
        tokens, logprobs = sample(logits, None, config, return_logprobs=True)
        assert torch.equal(tokens, logits.argmax(-1)) and not logprobs.any()


@pytest.mark.parametrize(
    "config", [SamplingConfig(), SamplingConfig(top_p=0.7), SamplingConfig(top_k=5, temperature=2)]
)
def test_sampled_logprobs_equal_the_filtered_distribution(config):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 3, 50, generator=g) * 3
    tokens, logprobs = sample(logits, torch.rand(4, 3, generator=g), config, return_logprobs=True)
    reference = filtered_logprobs(logits, config).gather(-1, tokens[..., None])[..., 0]
    torch.testing.assert_close(logprobs, reference)
    assert torch.isfinite(logprobs).all()


def full_sort_top_p(logits: torch.Tensor, u: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-p by inverse CDF over the whole sorted vocabulary, written out: ``(tokens, nucleus sizes)``."""
    probs = torch.softmax(logits, -1)
    sorted_probs, order = probs.sort(-1, descending=True)
    cdf = sorted_probs.cumsum(-1)
    n_kept = (cdf - sorted_probs <= top_p).sum(-1)
    kept_mass = cdf.gather(-1, (n_kept - 1)[:, None])
    index = (cdf <= u[:, None] * kept_mass).sum(-1).clamp(max=n_kept - 1)
    return order.gather(-1, index[:, None])[:, 0], n_kept


@pytest.mark.parametrize("compiled", [False, True])
def test_top_p_ranks_a_few_candidates_and_sorts_the_vocabulary_when_a_nucleus_needs_it(compiled):
    """The 64 candidates hold a peaked row's nucleus; a flat row's does not, and then the whole vocabulary is
    ranked: either way the tokens of the full sort."""
    g = torch.Generator().manual_seed(2)
    peaked, flat = torch.randn(200, 1024, generator=g) * 4, torch.randn(200, 1024, generator=g) * 0.3
    u = torch.rand(200, generator=g)
    config = SamplingConfig(top_p=0.9)
    draw = torch.compile(functools.partial(sample, config=config, return_logprobs=True), fullgraph=True) if compiled \
        else functools.partial(sample, config=config, return_logprobs=True)  # fmt: skip
    for logits in (peaked, flat, torch.cat([peaked[:100], flat[:1], peaked[101:]])):
        reference, n_kept = full_sort_top_p(logits, u[: len(logits)], 0.9)
        tokens, logprobs = draw(logits, u[: len(logits)])
        assert torch.equal(tokens, reference)
        torch.testing.assert_close(logprobs, filtered_logprobs(logits, config).gather(-1, tokens[:, None])[:, 0])
    assert full_sort_top_p(peaked, u, 0.9)[1].max() < NUCLEUS_CANDIDATES < full_sort_top_p(flat, u, 0.9)[1].min()


def test_uniforms_of_a_row_depend_only_on_its_generator():
    alone = draw_uniforms([torch.Generator().manual_seed(7)], 10, torch.device("cpu"))
    batch = draw_uniforms([torch.Generator().manual_seed(s) for s in (3, 7, 9)], 10, torch.device("cpu"))
    assert torch.equal(batch[1], alone[0])
    assert torch.equal(alone[0], torch.rand(10, generator=torch.Generator().manual_seed(7)))


@pytest.mark.parametrize(
    "kwargs, match",
    [({"top_k": 5, "top_p": 0.9}, "mutually exclusive"), ({"temperature": -1}, "temperature"),
     ({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p"), ({"top_k": 0}, "top_k"),
     ({"decoding": "beam"}, "decoding"), ({"window": 0}, "window")],
)  # fmt: skip
def test_bad_sampling_configs_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SamplingConfig(**kwargs)


# --- schedules ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("window, steps", [(1, 37), (2, 50), (4, 76)])
def test_diagonal_schedule_step_counts_match_the_official_scheduler(window, steps):
    # mineworld.md §7.3: sequential forwards per 14x24 frame, including the boundary chunk; naive needs 336
    assert diagonal_schedule((14, 24), window).n_steps + 1 == steps
    assert naive_schedule((14, 24)).n_steps + 1 == 336


@pytest.mark.parametrize("grid, window", [((14, 24), 2), ((4, 6), 1), ((4, 6), 6), ((8, 8), 3), ((1, 5), 2)])
def test_diagonal_schedule_invariants(grid, window):
    rows, cols = grid
    n = rows * cols
    schedule = diagonal_schedule(grid, window)
    predicted = [0]  # the boundary chunk predicts token 0
    count = [1] + [0] * (rows - 1)
    for src, pos, out in zip(schedule.src, schedule.pos, schedule.out):
        for s, p, o in zip(src, pos, out):
            r, c = divmod(o, cols)
            assert p == o - 1  # every input sits right before the token it predicts
            if c == 0:  # a row starts: the prompt frame's token at the same position stands in
                assert s == n + o - 1 and count[r - 1] >= window
            else:
                assert s == o - 1 and (o - 1) in predicted  # the row's previous, already generated token
            assert count[r] == c
        for o in out:
            count[o // cols] += 1
        predicted += list(out)
    assert sorted(predicted) == list(range(n))
    # row r+1 starts in the step right after row r reaches `window` tokens
    first_step = {}
    for k, out in enumerate(schedule.out):
        for o in out:
            first_step.setdefault(o // cols, k)
    for r in range(1, rows):
        reaches_window = (r - 1) * cols + window - 1  # the token that gives row r - 1 `window` tokens
        if reaches_window == 0:  # predicted by the boundary chunk
            assert first_step[r] == 0
        else:
            assert first_step[r] == 1 + min(k for k, out in enumerate(schedule.out) if reaches_window in out)
