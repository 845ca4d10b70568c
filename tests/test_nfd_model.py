"""worldmodels.nfd: the block-causal mask, 3-D RoPE and samplers checked against independent computations, cached
frame-by-frame generation against an uncached full-window computation, seeding and slot independence, resets,
preset sizes from the architecture formula, strict checkpoints and NaN detection."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from worldmodels.errors import ActionError, CheckpointError, ConfigError, FrameError, MissingFileError, NumericalError
from worldmodels.nfd import (
    PRESETS,
    TINY_AE_CONFIG,
    NFD,
    FlowSolver,
    NFDConfig,
    NFDSampling,
    NFDTransformer,
    get_preset,
    is_nfd_checkpoint,
    save_nfd,
    time_grid,
)
from worldmodels.nfd import transformer as transformer_module
from worldmodels.nfd.config import default_rope_axes
from worldmodels.nfd.transformer import apply_rope
from tests.world_models import tiny_nfd
from worldmodels.protocol import AutoregressiveModel, DiffusionModel, WorldModel

TINY = get_preset("nfd-tiny")  # 16x16 frames, 4x4x4 latents (16 tokens), Crafter actions, 4 frames of context
LATENT = (TINY.latent_channels, *TINY.latent_grid)


def gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def random_frames(n: int, t: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, t, *TINY.frame_size, 3), generator=g, dtype=torch.uint8)


def random_actions(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randint(0, 17, shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def model() -> NFD:
    return tiny_nfd()


def rollout(model: NFD, frames, ctx, actions, seeds, **kwargs) -> torch.Tensor:
    state = model.start(frames, ctx, gens(*seeds), **kwargs)
    return torch.stack([model.step_latents(state, actions[:, k]) for k in range(actions.shape[1])], 1)


# -- architecture -----------------------------------------------------------------------------------------------------


def test_model_satisfies_the_protocol(model):
    assert isinstance(model, WorldModel)
    assert (model.spec.domain, model.spec.frame_size, model.spec.context_frames) == ("crafter", (16, 16), 4)
    assert model.transformer.config.tokens_per_frame == 16 and model.reference_frames == 2


def test_attention_masks_are_block_causal(model, monkeypatch):
    """The masks handed to SDPA equal a dense reference built token by token: a token of frame i sees every token
    of frames j <= i (bidirectional inside a frame, causal across frames), in the uncached and the cached path."""
    seen = []
    original = torch.nn.functional.scaled_dot_product_attention

    def recording(q, k, v, attn_mask=None, **kw):
        seen.append(attn_mask)
        return original(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(transformer_module.F, "scaled_dot_product_attention", recording)
    n, f = TINY.tokens_per_frame, 3
    dense = torch.zeros(f * n, f * n, dtype=torch.bool)
    for i in range(f * n):
        for j in range(f * n):
            dense[i, j] = j // n <= i // n
    z, t = torch.randn(1, f, *LATENT), torch.rand(1, f)
    acts, present = random_actions((1, f), 0), torch.tensor([[False, True, True]])
    with torch.no_grad():
        model.transformer(z, t, acts, present)
    assert len(seen) == TINY.num_hidden_layers and all(torch.equal(m, dense) for m in seen)

    seen.clear()
    cache = model.transformer.new_cache(2)
    with torch.no_grad():  # a chunk of frames 1..2 of slot 0 and 2..3 of slot 1
        model.transformer.decode(torch.randn(2, 2, *LATENT), torch.rand(2, 2), random_actions((2, 2), 1),
                                 torch.ones(2, 2, dtype=torch.bool), torch.tensor([1, 2]), cache)  # fmt: skip
    mask = seen[0]
    assert mask.shape == (2, 1, 2 * n, 4 * n)
    for b, start in enumerate((1, 2)):
        for i in range(2 * n):
            for j in range(4 * n):
                visible = j // n <= start + i // n
                assert (mask[b, 0, i, j] == 0) == visible and (mask[b, 0, i, j] == -math.inf) == (not visible)


def test_outputs_depend_on_the_own_and_earlier_frames_only(model):
    torch.manual_seed(3)
    f = 4
    z, t = torch.randn(1, f, *LATENT), torch.rand(1, f)
    acts, present = random_actions((1, f), 2), torch.tensor([[False, True, True, True]])
    with torch.no_grad():
        base = model.transformer(z, t, acts, present)
        for j in range(f):
            edited = z.clone()
            edited[0, j, :, 1, 2] += 1.0  # one latent position = one token of frame j
            out = model.transformer(edited, t, acts, present)
            for i in range(f):
                changed = (out[0, i] != base[0, i]).flatten(1).any(0)  # per latent position
                if i < j:
                    assert not changed.any(), (i, j)
                else:
                    assert changed.all(), (i, j)  # every token of frames >= j, the whole of frame j included


def test_rope_matches_the_direct_formula(model):
    """Head dim split (n_t, n_h, n_w); channel pair (2k, 2k+1) of axis a rotates by pos_a * theta^(-2k / n_a)."""
    assert default_rope_axes(64) == (16, 24, 24) and default_rope_axes(128) == (32, 48, 48)
    assert TINY.rope_axes == default_rope_axes(16) == (4, 6, 6)
    tr = model.transformer
    frames = torch.tensor([0, 3, 7])
    rotation = tr.rope(frames)  # [3 * 16, 1, 8]
    hd, theta = TINY.head_dim, TINY.rope_theta
    x = torch.randn(len(frames) * TINY.tokens_per_frame, 1, hd, dtype=torch.float64)
    out = apply_rope(x, rotation).double()
    cols = TINY.token_grid[1]
    for token in range(x.shape[0]):
        pos = (int(frames[token // 16]), token % 16 // cols, token % 16 % cols)
        expected = x[token, 0].clone()
        offset = 0
        for axis, dim in enumerate(TINY.rope_axes):
            for k in range(dim // 2):
                angle = pos[axis] * theta ** (-2 * k / dim)
                a, b = x[token, 0, offset + 2 * k], x[token, 0, offset + 2 * k + 1]
                expected[offset + 2 * k] = a * math.cos(angle) - b * math.sin(angle)
                expected[offset + 2 * k + 1] = a * math.sin(angle) + b * math.cos(angle)
            offset += dim
        torch.testing.assert_close(out[token, 0], expected, rtol=1e-5, atol=1e-5)


def test_velocity_head_patches_round_trip():
    config = NFDConfig(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=1,
                       latent_channels=3, latent_grid=(4, 6), patch_size=2, frame_size=(16, 24))  # fmt: skip
    tr = NFDTransformer(config)
    z = torch.randn(2, 3, 3, 4, 6)
    tokens = tr.patchify(z)
    assert tokens.shape == (2, 3, 6, 12)
    # token (r, c) holds channel-major the 2x2 patch at rows 2r.., cols 2c..
    assert torch.equal(tokens[1, 2, 1 * 3 + 2], z[1, 2, :, 2:4, 4:6].reshape(-1))
    assert torch.equal(tr.unpatchify(tokens), z)


def _count(config: NFDConfig) -> int:
    """Parameters of the architecture, from its definition: patch embedding, timestep MLP (sinusoid -> d -> d),
    action layer (one-hot of every slot + "no action" -> d), per block qkv + proj (biases), q/k RMSNorm weights,
    SwiGLU without biases, adaLN (d -> 6d), and the final adaLN (d -> 2d) and output layer."""
    d, i, p = config.hidden_size, config.intermediate_size, config.patch_dim
    actions = sum(config.action_nvec) + 1
    block = (3 * d * d + 3 * d) + (d * d + d) + 2 * config.head_dim + 3 * d * i + (6 * d * d + 6 * d)
    embeddings = (p * d + d) + (config.frequency_embedding_size * d + d + d * d + d) + (actions * d + d)
    return embeddings + config.num_hidden_layers * block + (2 * d * d + 2 * d) + (d * p + p)


@pytest.mark.parametrize("name, size", [("nfd-310m", 310e6), ("nfd-774m", 774e6)])
def test_rlir_presets_have_the_published_sizes(name, size):
    config = get_preset(name)
    hidden, inter, heads, layers = {"nfd-310m": (1024, 2730, 16, 16), "nfd-774m": (1536, 4096, 24, 18)}[name]
    assert (config.hidden_size, config.intermediate_size, config.num_attention_heads,
            config.num_hidden_layers) == (hidden, inter, heads, layers)  # fmt: skip
    assert config.action_nvec == (21, 21, 10, 3, 3, 3, 3, 2, 3) and config.tokens_per_frame == 336
    with torch.device("meta"):
        transformer = NFDTransformer(config)
    counted = sum(p.numel() for p in transformer.parameters())
    assert counted == _count(config)
    assert abs(counted - size) / size < 0.02  # 305.7M and 772.5M: the published sizes to within 2%
    assert set(PRESETS) == {"nfd-310m", "nfd-774m", "nfd-crafter-small", "nfd-tiny"}


def test_config_validation():
    with pytest.raises(ConfigError, match="rope_axes"):
        NFDConfig(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=1,
                  rope_axes=(4, 4, 4))  # fmt: skip
    with pytest.raises(ConfigError, match="divisible by patch_size"):
        NFDConfig(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=1, patch_size=2)
    with pytest.raises(ConfigError, match="unknown NFDConfig fields"):
        NFDConfig.from_dict(TINY.to_dict() | {"colour": "red"})
    assert NFDConfig.from_dict(json.loads(TINY.to_json())) == TINY
    with pytest.raises(ConfigError, match="unknown NFD preset"):
        get_preset("nfd-1b")


# -- samplers ---------------------------------------------------------------------------------------------------------

MU, S0 = 0.7, 0.5


def gaussian_velocity(x: torch.Tensor, t: float) -> torch.Tensor:
    """The exact rectified-flow velocity of data N(MU, S0^2): x_t ~ N((1 - t) MU, S_t^2), S_t^2 = (1-t)^2 S0^2 + t^2,
    and the flow moves quantiles: v = -MU + (dS_t/dt / S_t) (x - (1 - t) MU). Its ODE maps eps to MU + S0 eps."""
    var = (1 - t) ** 2 * S0**2 + t**2
    return -MU + (t - (1 - t) * S0**2) / var * (x - (1 - t) * MU)


def solve(sampling: NFDSampling, x: torch.Tensor, velocity) -> torch.Tensor:
    solver = FlowSolver(sampling)
    for i, t in enumerate(solver.times[:-1]):
        x = solver.step(i, x, velocity(x, t))
    return x


def test_time_grid_is_uniform_then_sd3_shifted():
    assert time_grid(4) == [1.0, 0.75, 0.5, 0.25, 0.0]
    shifted = time_grid(4, 3.0)
    assert shifted[0] == 1.0 and shifted[-1] == 0.0
    assert shifted[1:-1] == pytest.approx([3 * u / (1 + 2 * u) for u in (0.75, 0.5, 0.25)])


@pytest.mark.parametrize("sampler", ["euler", "dpmpp2m"])
def test_samplers_are_exact_for_a_point_mass(sampler):
    """Data at a single point MU: v = (x - MU) / t, and both solvers land on MU from any noise, at any step count."""
    eps = torch.linspace(-3, 3, 13, dtype=torch.float64)
    for steps, shift in ((1, 1.0), (3, 1.0), (7, 2.5)):
        out = solve(NFDSampling(sampler, steps, shift), eps, lambda x, t: (x - MU) / t)
        torch.testing.assert_close(out, torch.full_like(eps, MU), rtol=0, atol=1e-12)


def test_samplers_converge_to_the_exact_gaussian_flow():
    eps = torch.linspace(-3, 3, 61, dtype=torch.float64)
    exact = MU + S0 * eps

    def error(sampler: str, steps: int) -> float:
        return float((solve(NFDSampling(sampler, steps), eps, gaussian_velocity) - exact).abs().max())

    euler = [error("euler", n) for n in (10, 20, 40)]
    assert 1.8 < euler[0] / euler[1] < 2.2 and 1.8 < euler[1] / euler[2] < 2.2  # first order
    dpm = [error("dpmpp2m", n) for n in (10, 20, 40)]
    assert max(dpm) < 0.02 and dpm[2] < dpm[1] and all(d < e / 5 for d, e in zip(dpm, euler))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # diffusers' numpy-2 copy keyword notice
@pytest.mark.parametrize("steps, shift", [(18, 1.0), (18, 3.0), (10, 1.0)])
def test_dpm_solver_matches_diffusers(steps, shift):
    """DPM-Solver++(2M), data-prediction form, lower order at the final step: diffusers' DPMSolverMultistepScheduler
    (flow prediction) on the same grid gives the same trajectory."""
    from diffusers import DPMSolverMultistepScheduler

    eps = torch.linspace(-3, 3, 11, dtype=torch.float64)
    ours = solve(NFDSampling("dpmpp2m", steps, shift), eps, gaussian_velocity)
    scheduler = DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, solver_order=2,
                                            algorithm_type="dpmsolver++", lower_order_final=True,
                                            final_sigmas_type="zero")  # fmt: skip
    scheduler.set_timesteps(steps)
    grid = time_grid(steps, shift)
    scheduler.sigmas = torch.tensor(grid, dtype=torch.float64)
    scheduler.timesteps = torch.tensor(grid[:-1]) * 1000
    x = eps.clone()
    for i in range(steps):
        x = scheduler.step(gaussian_velocity(x, grid[i]), scheduler.timesteps[i], x).prev_sample
    torch.testing.assert_close(ours, x, rtol=0, atol=1e-5)


def test_solver_refuses_steps_out_of_order():
    solver = FlowSolver(NFDSampling("dpmpp2m", 4))
    x = torch.zeros(2)
    solver.step(0, x, x)
    with pytest.raises(ValueError, match="in order"):
        solver.step(2, x, x)
    with pytest.raises(ConfigError, match="sampler"):
        NFDSampling("heun")
    with pytest.raises(ConfigError, match="steps"):
        NFDSampling("euler", 0)


# -- generation -------------------------------------------------------------------------------------------------------


def uncached_rollout(model: NFD, frames, ctx, actions, seed: int, steps: int) -> torch.Tensor:
    """One slot's Euler rollout with a plain forward over its whole window per denoising step (no cache), drawing
    the noise in the model's documented order: context noise at start, then per frame its initial noise and, once
    generated, its context noise. A full window keeps its newest ``reference_frames`` frames; the first loses its
    action."""
    tc, g = TINY.context_noise, torch.Generator().manual_seed(seed)
    clean = model.encode(frames)
    window = list((1 - tc) * clean + tc * torch.randn((len(clean), *LATENT), generator=g))
    acts: list[int | None] = [None] + [int(a) for a in ctx]
    grid = time_grid(steps)
    out = []
    for action in actions.tolist():
        if len(window) + 1 > TINY.context_frames:
            window, acts = window[-model.reference_frames :], [None] + acts[-model.reference_frames + 1 :]
        x = torch.randn(LATENT, generator=g)
        for i in range(steps):
            z = torch.stack([*window, x])[None]
            t = torch.tensor([[tc] * len(window) + [grid[i]]])
            a = torch.tensor([[0 if v is None else v for v in acts] + [action]])
            present = torch.tensor([[v is not None for v in acts] + [True]])
            with torch.no_grad():
                v = model.transformer(z, t, a, present)[0, -1]
            x = x + (grid[i + 1] - grid[i]) * v
        out.append(x)
        window.append((1 - tc) * x + tc * torch.randn(LATENT, generator=g))
        acts.append(action)
    return torch.stack(out)


def test_cached_generation_equals_an_uncached_full_window_computation(model):
    frames, ctx, acts = random_frames(2, 2, seed=4), random_actions((2, 1), 5), random_actions((2, 5), 6)
    cached = rollout(model, frames, ctx, acts, (7, 8), sampling=NFDSampling("euler", 4))
    for b, seed in enumerate((7, 8)):
        reference = uncached_rollout(model, frames[b], ctx[b], acts[b], seed, steps=4)
        torch.testing.assert_close(cached[b], reference, rtol=1e-5, atol=1e-5)
    assert cached.abs().max() > 0.1 and (cached[:, 1:] - cached[:, :-1]).abs().max() > 0.1  # not trivial


def test_same_seed_same_rollout_and_slots_are_independent(model):
    frames, ctx, acts = random_frames(3, 2, seed=9), random_actions((3, 1), 10), random_actions((3, 5), 11)
    kw = {"sampling": NFDSampling("dpmpp2m", 5)}
    batch = rollout(model, frames, ctx, acts, (1, 2, 3), **kw)
    assert torch.equal(batch, rollout(model, frames, ctx, acts, (1, 2, 3), **kw))
    for i, seed in enumerate((1, 2, 3)):
        alone = rollout(model, frames[i : i + 1], ctx[i : i + 1], acts[i : i + 1], (seed,), **kw)
        assert torch.equal(alone[0], batch[i])  # bit for bit, with a context slide on the way
    other = rollout(model, frames[:1], ctx[:1], acts[:1], (99,), **kw)
    assert not torch.allclose(other[0], batch[0])
    state = model.start(frames, ctx, gens(1, 2, 3), **kw)
    pixels = [model.step(state, acts[:, k]) for k in range(2)][-1]
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 16, 16, 3)
    assert torch.equal(pixels, model.decode(batch[:, 1]))


def test_context_slides_keep_the_reference_frames(model):
    state = model.start(random_frames(1, 3, seed=12), random_actions((1, 2), 13), gens(0), reference_frames=1)
    lengths, slides = [], []
    for k in range(3):
        model.step_latents(state, random_actions((1,), k))
        lengths.append(int(state.lengths[0]))
        slides.append(int(state.slides[0]))
    assert lengths == [4, 2, 3] and slides == [0, 1, 1]  # 3 frames + 1 = 4 (full); keep 1, + 1; + 1
    assert not state.present[0, 0] and state.present[0, 1:3].all()
    with pytest.raises(ConfigError, match="reference_frames"):
        model.start(random_frames(1, 1, 0), None, gens(0), reference_frames=4)


def test_reset_slots_leaves_other_slots_bit_identical(model):
    frames, new_frames = random_frames(3, 1, seed=14), random_frames(1, 2, seed=15)
    acts, new_ctx = random_actions((3, 5), 16), random_actions((1, 1), 17)

    def run(reset: bool) -> list[torch.Tensor]:
        state = model.start(frames, None, gens(1, 2, 3))
        out = []
        for k in range(5):
            if reset and k == 2:
                model.reset_slots(state, [1], new_frames, new_ctx, gens(42))
            out.append(model.step_latents(state, acts[:, k]))
        return out

    plain, with_reset = run(False), run(True)
    assert all(torch.equal(a[[0, 2]], b[[0, 2]]) for a, b in zip(plain, with_reset))
    assert not torch.allclose(plain[3][1], with_reset[3][1])
    fresh = rollout(model, new_frames, new_ctx, acts[1:2, 2:], (42,))
    assert torch.equal(torch.stack([x[1] for x in with_reset[2:]]), fresh[0])


def test_copy_slots_fans_out_a_prefilled_context(model):
    frames = torch.cat([random_frames(1, 2, seed=18), random_frames(2, 2, seed=19)])
    ctx = random_actions((3, 1), 20)
    acts = random_actions((1, 3), 21).repeat(3, 1)
    state = model.start(frames, ctx, gens(8, 8, 8))
    model.copy_slots(state, [0, 0], [1, 2])
    out = torch.stack([model.step_latents(state, acts[:, k]) for k in range(3)], 1)
    assert torch.equal(out[0], out[1]) and torch.equal(out[0], out[2])
    assert torch.equal(out[0], rollout(model, frames[:1], ctx[:1], acts[:1], (8,))[0])


def test_start_group_fans_out_one_noised_context_like_separate_starts(model):
    """Two contexts x three members: the group starts from one context-noised prefill (the context generator's
    noise), then every member draws from its own generator - as a slot started alone with that context noise and
    then given the member's generator."""
    assert isinstance(model, DiffusionModel) and not isinstance(model, AutoregressiveModel)
    frames = torch.cat([random_frames(1, 2, seed=31), random_frames(1, 2, seed=32)])
    ctx = random_actions((2, 1), 33)
    acts = random_actions((2, 3), 34).repeat_interleave(3, 0)
    seeds = (1, 2, 3, 4, 5, 6)
    state = model.start_group(frames, ctx, gens(*seeds), group_size=3, context_generators=gens(40, 41))
    window = model.window_latents(state)
    assert model.window_lengths(state).tolist() == [2] * 6
    out = torch.stack([model.step_latents(state, acts[:, k]) for k in range(3)], 1)
    for s, seed in enumerate(seeds):
        p = s // 3
        alone = model.start(frames[p : p + 1], ctx[p : p + 1], gens(40 + p))
        assert torch.equal(window[s], model.window_latents(alone)[0])
        alone.generators[0] = gens(seed)[0]
        ref = torch.stack([model.step_latents(alone, acts[s : s + 1, k]) for k in range(3)], 1)
        assert torch.equal(out[s], ref[0])
    assert not torch.equal(out[0], out[1])  # members denoise with their own noise
    default = model.start_group(frames, ctx, gens(*seeds), group_size=3)  # the leader's generator noises the context
    alone = model.start(frames[:1], ctx[:1], gens(1))
    assert torch.equal(model.window_latents(default)[2], model.window_latents(alone)[0])
    with pytest.raises(ConfigError, match="context_generators"):
        model.start_group(frames, ctx, gens(*seeds), group_size=3, context_generators=gens(40))


def test_bad_inputs_are_refused(model):
    with pytest.raises(FrameError, match=r"uint8\[B, T, 16, 16, 3\]"):
        model.start(torch.zeros(1, 1, 8, 8, 3, dtype=torch.uint8), None, gens(0))
    with pytest.raises(FrameError, match="leaves no room"):
        model.start(random_frames(1, 4, 0), random_actions((1, 3), 0), gens(0))
    with pytest.raises(ConfigError, match="one torch.Generator per environment"):
        model.start(random_frames(1, 1, 0), None, None)
    with pytest.raises(ConfigError, match="expected 2 generators"):
        model.start(random_frames(2, 1, 0), None, gens(0))
    with pytest.raises(ActionError):
        model.start(random_frames(1, 2, 0), torch.tensor([[17]]), gens(0))
    state = model.start(random_frames(1, 1, 0), None, gens(0))
    with pytest.raises(ActionError):
        model.step(state, torch.tensor([-1]))
    with pytest.raises(ActionError, match="shape"):
        model.step(state, torch.tensor([1, 2]))


def test_nan_velocity_raises_a_numerical_error():
    model = tiny_nfd(seed=1)
    with torch.no_grad():
        model.transformer.final_proj.bias[2] = float("nan")
    state = model.start(random_frames(2, 1, 0), None, gens(0, 1))
    with pytest.raises(NumericalError, match=r"NaN/inf velocity for slots \[0, 1\] at denoising call 1 of step 0"):
        model.step(state, torch.tensor([1, 2]))


# -- checkpoints ------------------------------------------------------------------------------------------------------


def test_checkpoint_round_trip(model, tmp_path):
    sampling = NFDSampling("dpmpp2m", 6, 2.0)
    model.sampling, default = sampling, model.sampling
    try:
        path = save_nfd(model, tmp_path / "tiny.safetensors")
    finally:
        model.sampling = default
    assert is_nfd_checkpoint(path) and not is_nfd_checkpoint(tmp_path / "missing.safetensors")
    loaded = NFD.from_checkpoint(path)
    assert loaded.config == model.config and loaded.sampling == sampling
    assert loaded.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    frames, acts = random_frames(2, 1, seed=22), random_actions((2, 3), 23)
    assert torch.equal(rollout(loaded, frames, None, acts, (4, 5), sampling=sampling),
                       rollout(model, frames, None, acts, (4, 5), sampling=sampling))  # fmt: skip
    with pytest.raises(ConfigError, match=".safetensors"):
        save_nfd(model, tmp_path / "tiny.pt")


def test_checkpoint_key_and_shape_mismatches_give_a_readable_error(model, tmp_path):
    path = save_nfd(model, tmp_path / "tiny.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    state = load_file(str(path))
    edited = dict(state)
    del edited["transformer.blocks.1.adaLN.weight"]
    edited["transformer.extra.weight"] = torch.zeros(2)
    edited["transformer.final_proj.bias"] = torch.zeros(5)
    save_file(edited, str(tmp_path / "edited.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError) as info:
        NFD.from_checkpoint(tmp_path / "edited.safetensors")
    message = str(info.value)
    assert "1 missing keys: transformer.blocks.1.adaLN.weight" in message
    assert "1 unexpected keys: transformer.extra.weight" in message
    assert "transformer.final_proj.bias (checkpoint [5], model [4])" in message

    save_file(state, str(tmp_path / "foreign.safetensors"), metadata={"format": "pt"})
    assert not is_nfd_checkpoint(tmp_path / "foreign.safetensors")
    with pytest.raises(CheckpointError, match="not an NFD checkpoint"):
        NFD.from_checkpoint(tmp_path / "foreign.safetensors")
    with pytest.raises(MissingFileError, match="does not exist"):
        NFD.from_checkpoint(tmp_path / "missing.safetensors")
    (tmp_path / "garbage.safetensors").write_bytes(b"not a safetensors file")
    assert not is_nfd_checkpoint(tmp_path / "garbage.safetensors")
    with pytest.raises(CheckpointError, match="cannot read"):
        NFD.from_checkpoint(tmp_path / "garbage.safetensors")


def test_meta_device_builds_the_structure_only():
    model = NFD.from_config(TINY, TINY_AE_CONFIG, device="meta")
    assert next(model.parameters()).device.type == "meta"
    assert np.isclose(sum(p.numel() for p in model.transformer.parameters()), _count(TINY))


def test_minecraft_domain_takes_compact_and_minerl_actions():
    from worldmodels.actions import minecraft

    config = NFDConfig(**(TINY.to_dict() | {"action_domain": "minecraft", "name": "nfd-tiny-mc"}))
    torch.manual_seed(0)
    model = NFD.from_config(config, TINY_AE_CONFIG).eval()
    assert model.transformer.action_embed.linear.weight.shape == (config.hidden_size, sum(minecraft.COMPACT_NVEC) + 1)
    dicts = [[minecraft.noop() | {"forward": 1, "camera": np.array([0.0, 10.0])}], [minecraft.noop() | {"jump": 1}]]
    compact = minecraft.to_compact(dicts)  # [2, 1, 9]
    frames = random_frames(2, 1, seed=30)
    a = rollout(model, frames, None, torch.as_tensor(compact), (1, 2))
    state = model.start(frames, None, gens(1, 2))
    b = model.step_latents(state, [row[0] for row in dicts])  # MineRL dicts, one per env
    assert torch.equal(a[:, 0], b)
    with pytest.raises(ActionError):  # 8 slots instead of MineWorld's 9
        model.step(state, torch.zeros(2, 8, dtype=torch.long))
