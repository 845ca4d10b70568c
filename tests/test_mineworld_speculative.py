"""Speculative decoding with a copy draft: the tokens of naive decoding, in fewer forwards on static video.

The references are independent of the code under test: greedy naive decoding (itself pinned against a no-cache
decoder in test_mineworld_model.py), exact distributions enumerated from teacher-forced logits with the sampling
rules written out here, and fresh prefills of the generated sequences.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats

from worldmodels.actions.crafter import compact_to_tokens as crafter_tokens
from worldmodels.actions.minecraft import COMPACT_NVEC, compact_to_tokens
from worldmodels.errors import ConfigError, NumericalError
from worldmodels.mineworld import TINY_VQ_CONFIG, MineWorld, MineWorldConfig, SamplingConfig, get_preset
from worldmodels.mineworld.decoding import FrameDecoder
from worldmodels.mineworld.sampling import DEFAULT_DRAFT_LEN

TINY = get_preset("tiny")
HW = TINY.tokens_per_frame  # 24 (4x6 grid), 64 codes, Minecraft actions (11 tokens)


@torch.no_grad()
def make_copy_biased(
    model: MineWorld, strength: float, *, noise: float = 0.0, perturb: float = 0.0, seed: int = 0
) -> None:
    """Rewrite ``model``'s transformer so that it predicts "the previous frame's token at this grid index".

    Residual stream: ``[1 | code of the input token | code of the copied token | 0 ...]`` with unit-norm token
    codes (one-hot when the image vocabulary fits in a head). Layer 0's first attention head has a constant rotary
    query/key pair whose score peaks exactly ``tokens_per_pair - 1`` positions back (the same grid index one frame
    earlier; margin 40 over every other offset) and copies that token's code; every other block is the identity.
    Image logits are ``strength * <code_t, copied code>`` plus ``noise``-scaled random terms that depend on the copied
    and the input token, so acceptance can be tuned from ~0 to ~1. ``perturb`` adds that much Gaussian noise to
    every weight matrix, so that every layer and head reads the whole context (cache errors then show).
    """
    tf, c = model.transformer, model.config
    g = torch.Generator().manual_seed(seed)
    hidden, hd, pair, v_img = c.hidden_size, c.head_dim, c.tokens_per_pair, c.image_vocab_size
    if hidden < 1 + 2 * hd:
        raise ValueError(f"the copy construction needs hidden_size >= 1 + 2 * head_dim, got {hidden} and {hd}")
    f64 = torch.float64
    for name, p in tf.named_parameters():
        p.fill_(1.0 if name.endswith("norm.weight") else 0.0)
    codes = torch.randn(c.vocab_size, hd, generator=g, dtype=f64)
    if v_img <= hd:
        codes[:v_img] = torch.eye(hd, dtype=f64)[:v_img]
    codes /= codes.norm(dim=-1, keepdim=True)
    embedding = torch.zeros(c.vocab_size, hidden, dtype=f64)
    embedding[:, 0] = 1.0
    embedding[:, 1 : 1 + hd] = codes
    tf.model.embed_tokens.weight.copy_(embedding)
    normed = (hidden / 2) ** 0.5  # RMSNorm maps a coordinate 1 of a norm-sqrt(2) vector to this
    cos, sin = tf.model.rope_cos.double(), tf.model.rope_sin.double()

    def rotate(x: torch.Tensor, by: int) -> torch.Tensor:  # rotary embedding at position `by` (may be negative)
        half = torch.cat([-x[hd // 2 :], x[: hd // 2]])
        return x * cos[abs(by)] + half * sin[abs(by)] * (1 if by >= 0 else -1)

    query = torch.zeros(hd, dtype=f64)
    query[: hd // 2] = 1.0
    key = rotate(query, pair - 1)  # q . rot(k, -t) = sum_j cos(w_j (pair - 1 - t)): largest at t = pair - 1
    scores = torch.stack([query @ rotate(key, -t) for t in range(c.max_position_embeddings)]) / hd**0.5
    gap = float(scores[pair - 1] - torch.cat([scores[: pair - 1], scores[pair:]]).max())
    scale = (40.0 / gap) ** 0.5
    attn = tf.model.layers[0].self_attn
    attn.q_proj.weight[:hd, 0] = query * scale / normed
    attn.k_proj.weight[:hd, 0] = key * scale / normed
    attn.v_proj.weight[:hd, 1 : 1 + hd] = torch.eye(hd, dtype=f64) / normed
    attn.o_proj.weight[1 + hd : 1 + 2 * hd, :hd] = torch.eye(hd, dtype=f64)
    head = torch.zeros(c.vocab_size, hidden, dtype=f64)
    head[:v_img, 1 + hd : 1 + 2 * hd] = strength * codes[:v_img]
    if noise:
        head[:v_img, 1 : 1 + 2 * hd] += noise * torch.randn(v_img, 2 * hd, generator=g, dtype=f64)
    tf.lm_head.weight.copy_(head * (3 / hidden) ** 0.5)  # the final RMSNorm sees a norm-sqrt(3) vector
    if perturb:
        for name, p in tf.named_parameters():
            if not name.endswith("norm.weight"):
                p.add_(perturb * torch.randn(p.shape, generator=g, dtype=f64))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def copy_model(dtype, strength: float, noise: float, perturb: float = 0.0, config: MineWorldConfig = TINY, vq=None):
    torch.manual_seed(0)  # the VQ tokenizer's initialisation
    model = MineWorld.from_config(config, vq or TINY_VQ_CONFIG, dtype=dtype).eval()
    make_copy_biased(model, strength, noise=noise, perturb=perturb)
    return model


@pytest.fixture(scope="module")
def mixed64() -> MineWorld:
    """float64 (token-exact comparisons across computation orders); drafts are kept about half of the time."""
    return copy_model(torch.float64, strength=4.0, noise=1.5, perturb=0.05)


@pytest.fixture(scope="module")
def mixed32() -> MineWorld:
    return copy_model(torch.float32, strength=4.0, noise=1.5, perturb=0.05)


def gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def random_frames(n: int, t: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, t, *TINY.frame_size, 3), generator=g, dtype=torch.uint8)


def random_actions(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, COMPACT_NVEC, size=(*shape, len(COMPACT_NVEC)))


def first_ids(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, TINY.image_vocab_size, (n, *TINY.image_grid), generator=torch.Generator().manual_seed(seed))


# --- configuration ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("draft_len", [0, -2, 1.5, True, "4"])
def test_bad_draft_lengths_are_refused(draft_len):
    with pytest.raises(ConfigError, match="draft_len"):
        SamplingConfig(decoding="speculative", draft_len=draft_len)


def test_speculative_config_defaults():
    config = SamplingConfig(decoding="speculative", top_p=0.8)
    assert config.draft_len == DEFAULT_DRAFT_LEN >= 2
    assert SamplingConfig(decoding="speculative", draft_len=1).draft_len == 1


def test_decoder_needs_drafts(mixed64):
    decoder = FrameDecoder(mixed64.transformer, TINY.image_grid, 64, SamplingConfig(decoding="speculative"))
    assert decoder.verifies_drafts(1) and decoder.schedule is None
    cache = mixed64.transformer.new_cache(1)
    with pytest.raises(ConfigError, match="draft"):
        decoder.decode(cache, torch.zeros(1, 12, dtype=torch.long), torch.zeros(1, dtype=torch.long),
                       torch.zeros(1, HW, dtype=torch.long), None)  # fmt: skip


# --- whole frames --------------------------------------------------------------------------------------------------


def rollout(model, decoding: str, draft_len: int = 1, **sampling):
    """Three slots over 8 steps: contexts of different lengths (slides at different steps), slot 2 reset before the
    first step and slot 1 at step 3 (with new generators when seeded). Greedy unless ``sampling`` says otherwise."""
    sampling = SamplingConfig(**({"temperature": 0} | sampling), decoding=decoding, draft_len=draft_len)
    seeded = not sampling.greedy
    state = model.start(random_frames(3, 2, seed=1), random_actions((3, 1), 2), gens(1, 2, 3) if seeded else None,
                        sampling=sampling)  # fmt: skip
    model.reset_slots(state, [2], random_frames(1, 3, seed=3), random_actions((1, 2), 4), gens(4) if seeded else None)
    actions = random_actions((3, 8), 5)
    out, logprobs = [], []
    for k in range(8):
        if k == 3:
            model.reset_slots(state, [1], random_frames(1, 1, seed=6), generators=gens(5) if seeded else None)
        tokens, lp = model.step_tokens(state, actions[:, k], return_logprobs=True)
        out.append(tokens)
        logprobs.append(lp)
    return torch.stack(out, 1), torch.stack(logprobs, 1), state


def greedy_rollout(model, decoding: str, draft_len: int = 1):
    tokens, _, state = rollout(model, decoding, draft_len)
    return tokens, state


@pytest.mark.parametrize("draft_len", [1, 3, 8, HW])
def test_greedy_speculative_equals_greedy_naive(mixed64, draft_len):
    naive, naive_state = greedy_rollout(mixed64, "naive")
    spec, state = greedy_rollout(mixed64, "speculative", draft_len)
    assert torch.equal(spec, naive)
    assert (state.slides >= 1).all() and len(set(state.slides.tolist())) > 1  # every slot slid, at other steps
    s = state.decode_stats
    assert s.frames == 24 and s.tokens == 24 * HW
    assert 0.2 < s.acceptance_rate < 0.9  # some drafts kept, some rejected
    assert naive_state.decode_stats.forwards_per_frame == HW
    if draft_len > 1:
        assert s.forwards_per_frame < HW
        assert s.slot_forwards < 3 * s.forwards  # slots finished at different forwards (per-slot positions)
    else:
        assert s.forwards_per_frame == HW


@pytest.mark.parametrize("sampling", [dict(temperature=1.0), dict(temperature=0.6, top_p=0.7),
                                      dict(temperature=1.5, top_k=3)])  # fmt: skip
@pytest.mark.parametrize("draft_len", [2, 8, HW])
def test_seeded_speculative_draws_the_naive_tokens(mixed64, sampling, draft_len):
    """Each token is drawn by naive decoding's sampler from naive decoding's uniform, and a draft is kept iff it was
    drawn: the same tokens and log-probabilities as naive decoding, in fewer forwards."""
    naive, naive_logprobs, naive_state = rollout(mixed64, "naive", **sampling)
    spec, spec_logprobs, state = rollout(mixed64, "speculative", draft_len, **sampling)
    assert torch.equal(spec, naive)
    torch.testing.assert_close(spec_logprobs, naive_logprobs, rtol=0, atol=1e-9)
    assert (naive_logprobs < 0).any()
    assert (state.slides >= 1).all()
    s = state.decode_stats
    assert 0.2 < s.acceptance_rate < 0.9  # some drafts kept, some rejected
    assert s.forwards_per_frame < naive_state.decode_stats.forwards_per_frame == HW


@torch.no_grad()
def test_cache_holds_exactly_the_generated_sequence(mixed64):
    """Rejected drafts and finished slots' no-ops leave no trace: every cached position equals a fresh prefill."""
    _, state = greedy_rollout(mixed64, "speculative", 5)
    tf = mixed64.transformer
    for b in range(3):
        length = int(state.lengths[b]) - 1  # the pending last token is not cached
        fresh = tf.new_cache(1)
        tf.hidden_states(state.seq[b : b + 1, :length], fresh, torch.tensor([0]))
        torch.testing.assert_close(state.cache.kv[:, b, :, :length], fresh.kv[:, 0, :, :length], rtol=0, atol=1e-9)


def test_tokens_depend_only_on_the_slot_generator_not_on_draft_len(mixed64, monkeypatch):
    """Each grid index is decided once from its own uniform: draft_len, the adaptive width and the refreshed drafts
    only regroup forwards."""
    ids, actions = first_ids(2, 7), random_actions((2, 5), 8)
    sampling = dict(temperature=0.8, top_p=0.9, decoding="speculative", return_logprobs=True)
    runs = [mixed64.generate_tokens(ids, actions, draft_len=k, generators=gens(3, 4), **sampling) for k in (1, 4, HW)]
    monkeypatch.setattr(FrameDecoder, "adaptive_width", False)
    runs += [mixed64.generate_tokens(ids, actions, draft_len=k, generators=gens(3, 4), **sampling) for k in (3, HW)]
    monkeypatch.setattr(FrameDecoder, "refresh_drafts", False)
    runs += [mixed64.generate_tokens(ids, actions, draft_len=k, generators=gens(3, 4), **sampling) for k in (3, HW)]
    for tokens, logprobs in runs[1:]:
        assert torch.equal(tokens, runs[0][0])
        torch.testing.assert_close(logprobs, runs[0][1], rtol=0, atol=1e-9)
    assert not torch.equal(runs[0][0], mixed64.generate_tokens(ids, actions, decoding="speculative", top_p=0.9,
                                                               temperature=0.8, generators=gens(3, 5)))  # fmt: skip


def test_seeded_rollouts_are_reproducible_and_independent_of_the_batch(mixed32):
    sampling = SamplingConfig(top_p=0.9, decoding="speculative", draft_len=6)
    ids, actions = first_ids(3, 9), random_actions((3, 6), 10)

    def run(rows, seeds):
        state = mixed32.start(mixed32.detokenize(ids[rows])[:, None], None, gens(*seeds), sampling=sampling)
        return torch.stack([mixed32.step_tokens(state, actions[rows, k])[0] for k in range(6)], 1)

    batch = run([0, 1, 2], (5, 6, 7))
    assert torch.equal(batch, run([0, 1, 2], (5, 6, 7)))
    for i, seed in enumerate((5, 6, 7)):
        assert torch.equal(run([i], (seed,))[0], batch[i])
    assert torch.equal(run([2, 0], (7, 5)), batch[[2, 0]])
    assert not torch.equal(run([0], (99,))[0], batch[0])


def test_logprobs_equal_teacher_forced_logprobs(mixed32):
    ids, actions = first_ids(2, 11), random_actions((2, 2), 12)
    out, logprobs = mixed32.generate_tokens(ids, actions, temperature=0.7, top_p=0.8, decoding="speculative",
                                            draft_len=4, generators=gens(1, 2), return_logprobs=True)  # fmt: skip
    act = torch.as_tensor(compact_to_tokens(actions, offset=TINY.image_vocab_size))
    a = act.shape[-1]
    seq = torch.cat([ids.reshape(2, -1), act[:, 0], out[:, 0].reshape(2, -1), act[:, 1], out[:, 1].reshape(2, -1)], 1)
    with torch.no_grad():
        logits = mixed32.logits(seq)[..., : TINY.image_vocab_size]
    targets = [HW + a - 1 + i for i in range(HW)] + [2 * HW + 2 * a - 1 + i for i in range(HW)]
    probs = torch.softmax(logits[:, targets].double() / 0.7, -1)  # top-p written out, independently of the code
    sorted_probs, order = probs.sort(-1, descending=True)
    before = sorted_probs.cumsum(-1) - sorted_probs  # mass before each token in descending order
    dropped = torch.zeros_like(probs, dtype=torch.bool).scatter_(-1, order, before > 0.8)
    probs = probs.masked_fill(dropped, 0)
    probs /= probs.sum(-1, keepdim=True)
    reference = probs.gather(-1, seq[:, [t + 1 for t in targets], None])[..., 0].log()
    torch.testing.assert_close(logprobs.reshape(2, -1).double(), reference, rtol=1e-4, atol=1e-4)
    assert (logprobs < 0).any() and (logprobs == 0).any()  # some tokens were certain after top-p, some not


def test_copy_friendly_model_needs_few_forwards_per_frame():
    """The drafts are the newest context frame: a model that copies it keeps almost every draft."""
    model = copy_model(torch.float32, strength=12.0, noise=0.0)
    frames = random_frames(4, 2, seed=13)
    context = model.tokenize(frames.flatten(0, 1)).unflatten(0, (4, 2))
    actions = random_actions((4, 4), 15)
    forwards = {}
    for decoding in ("naive", "speculative"):
        state = model.start(frames, random_actions((4, 1), 16), gens(1, 2, 3, 4),
                            sampling=SamplingConfig(decoding=decoding, draft_len=8))  # fmt: skip
        out = torch.stack([model.step_tokens(state, actions[:, k])[0] for k in range(4)], 1)
        assert (out == context[:, 1:]).double().mean() > 0.9  # the model copies the newest frame
        forwards[decoding] = state.decode_stats.forwards_per_frame
        if decoding == "speculative":
            assert state.decode_stats.acceptance_rate > 0.9
            assert state.decode_stats.tokens_per_forward > 4  # naive: 1
    assert (context[:, 0] != context[:, 1]).double().mean() > 0.5  # copying the older frame would not do
    assert forwards["naive"] == HW
    assert forwards["speculative"] <= HW / 4  # 8 tokens per forward when every draft is kept: 3 forwards


@pytest.mark.parametrize("sampling", [dict(temperature=0), dict(top_p=0.9)])
def test_nan_logits_raise_a_numerical_error(sampling):
    model = copy_model(torch.float32, strength=3.0, noise=1.0)
    with torch.no_grad():
        model.transformer.lm_head.weight[5] = float("nan")
    with pytest.raises(NumericalError, match="step"):
        model.generate_tokens(first_ids(2, 0), random_actions((2, 1), 0), decoding="speculative", generators=gens(1, 2),
                              **sampling)  # fmt: skip


# --- the sampled distribution, against exact enumeration ---------------------------------------------------------

SMALL = MineWorldConfig(
    hidden_size=48, intermediate_size=8, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
    max_position_embeddings=3 * 6, vocab_size=4 + 19, image_grid=(1, 3), image_vocab_size=4, frame_size=(8, 24),
    action_domain="crafter", name="mineworld-1x3",
)  # fmt: skip
"""A 1x3 grid of 4 codes: a frame has 64 possible values, enumerable exactly."""


def exact_probs(logits: torch.Tensor, temperature: float, top_p: float | None) -> torch.Tensor:
    """The sampling distribution written out from MineWorld's rules (temperature, then top-p)."""
    p = torch.softmax(logits.double() / temperature, -1)
    if top_p is not None:
        sorted_p, order = p.sort(-1, descending=True)
        drop = torch.zeros_like(p, dtype=torch.bool).scatter_(-1, order, sorted_p.cumsum(-1) - sorted_p > top_p)
        p = p.masked_fill(drop, 0)
        p = p / p.sum(-1, keepdim=True)
    return p


@torch.no_grad()
def frame_distributions(model, prefixes: torch.Tensor, temperature, top_p, bug: bool = False) -> torch.Tensor:
    """``P(frame | prefix)`` for every prefix ``[n, L]`` and each of the 64 frames, from teacher-forced logits:
    ``[n, 64]``. ``bug`` gives the distribution of a wrong sampler that redraws a rejected draft from ``p`` instead of
    the residual (the power check). Drafts are the prefix's newest frame."""
    frames = torch.tensor(list(itertools.product(range(4), repeat=3)))  # [64, 3], row-major = bincount index
    n, length = prefixes.shape
    seqs = torch.cat([prefixes.repeat_interleave(64, 0), frames.repeat(n, 1)], 1)
    p = exact_probs(model.logits(seqs)[:, length - 1 : -1, :4], temperature, top_p)  # [n*64, 3, 4]
    if bug:
        drafts = prefixes[:, length - 3 - 3 : length - 3].repeat_interleave(64, 0)  # newest frame, before the action
        q = p.gather(-1, drafts[..., None])
        p = (1 - q) * p + q * torch.nn.functional.one_hot(drafts, 4)
    chosen = p.gather(-1, frames.repeat(n, 1)[..., None])[..., 0]
    return chosen.prod(-1).reshape(n, 64)


def chi_square_pvalue(counts: np.ndarray, expected: np.ndarray) -> float:
    """Pearson's test, pooling the cells expected below 5 into one."""
    small = expected < 5
    observed = np.append(counts[~small], counts[small].sum())
    wanted = np.append(expected[~small], expected[small].sum())
    if wanted[-1] == 0:
        observed, wanted = observed[:-1], wanted[:-1]
    return float(scipy_stats.chisquare(observed, wanted * observed.sum() / wanted.sum()).pvalue)


@pytest.mark.slow
@pytest.mark.parametrize("temperature, top_p, draft_len", [(1.0, None, 2), (0.7, 0.8, 3), (1.4, 0.95, 2)])
def test_sampled_frames_follow_the_exact_joint_distribution(temperature, top_p, draft_len):
    torch.manual_seed(0)
    model = copy_model(torch.float64, strength=1.5, noise=1.0, config=SMALL,
                       vq=TINY_VQ_CONFIG | {"num_vq_embeddings": 4})  # fmt: skip
    n = 6000
    first = torch.tensor([[[2, 0, 3]]]).expand(n, 1, 3)
    actions = np.array([[4, 11]]).repeat(n, 0)
    out, logprobs = model.generate_tokens(
        first, actions, temperature=temperature, top_p=top_p, decoding="speculative", draft_len=draft_len,
        generators=gens(*range(n)), return_logprobs=True,
    )  # fmt: skip
    codes = out.reshape(n, 2, 3) @ torch.tensor([16, 4, 1])  # frame -> index in product order
    act = torch.as_tensor(crafter_tokens(np.array([4, 11]), offset=4))  # [2, 3]
    prefix1 = torch.cat([first[:1, 0], act[:1]], 1)  # [1, 6]
    p1 = frame_distributions(model, prefix1, temperature, top_p)[0]
    counts1 = np.bincount(codes[:, 0].numpy(), minlength=64)
    assert chi_square_pvalue(counts1, n * p1.numpy()) > 1e-3
    # frame 2: each slot has its own frame 1; the expected counts add up the slots' conditional distributions
    frames1 = torch.tensor(list(itertools.product(range(4), repeat=3)))
    prefix2 = torch.cat([prefix1.expand(64, -1), frames1, act[1:].expand(64, -1)], 1)  # [64, 12]
    p2 = frame_distributions(model, prefix2, temperature, top_p)  # [64 frame-1 values, 64]
    expected2 = p2[codes[:, 0]].sum(0).numpy()
    counts2 = np.bincount(codes[:, 1].numpy(), minlength=64)
    assert chi_square_pvalue(counts2, expected2) > 1e-3
    # the test can fail: the classic bug (redraw from p after a rejection) is rejected with these samples
    wrong = frame_distributions(model, prefix1, temperature, top_p, bug=True)[0]
    assert chi_square_pvalue(counts1, n * wrong.numpy()) < 1e-6
    # log-probs are those of the exact per-token conditionals (their sum is the frame's log-probability)
    torch.testing.assert_close(logprobs[:, 0].reshape(n, 3).sum(-1).double(), p1[codes[:, 0]].log(), rtol=0, atol=1e-5)
