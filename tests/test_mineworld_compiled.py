"""The static decode step (``static_decode_step``) and its compiled form (``MineWorld(compile=True)``): the same
tokens as the eager reference, one graph per shape, and a fallback to eager when compilation fails."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from worldmodels.actions.minecraft import COMPACT_NVEC
from worldmodels.errors import ConfigError
from worldmodels.mineworld import TINY_VQ_CONFIG, MineWorld, get_preset
from worldmodels.mineworld.decoding import StaticStep
from worldmodels.mineworld.sampling import SamplingConfig
from worldmodels.mineworld.transformer import static_decode_step

TINY = get_preset("tiny")
ROWS, COLS = TINY.image_grid
V = TINY.image_vocab_size


def tiny(compile: bool, config=TINY) -> MineWorld:
    torch.manual_seed(0)
    model = MineWorld.from_config(config, TINY_VQ_CONFIG, compile=compile).eval()
    with torch.no_grad():  # peaked logits: no near-ties for float rounding to flip
        model.transformer.lm_head.weight.mul_(20.0)
    return model


@pytest.fixture(scope="module")
def eager() -> MineWorld:
    return tiny(False)


@pytest.fixture(scope="module")
def compiled() -> MineWorld:
    return tiny(True)


def first_frames(model: MineWorld, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (n, *TINY.frame_size, 3), generator=g, dtype=torch.uint8)
    return model.tokenize(frames)


def actions(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, COMPACT_NVEC, size=(*shape, len(COMPACT_NVEC)))


def gens(n: int, offset: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(offset + i) for i in range(n)]


def test_static_step_equals_the_module_decode_and_writes_the_same_cache(eager):
    tf = eager.transformer
    c = tf.config
    step = functools.partial(
        static_decode_step, n_heads=c.num_attention_heads, n_kv_heads=c.num_key_value_heads, eps=c.rms_norm_eps
    )
    g = torch.Generator().manual_seed(0)
    for width in (1, 4):
        cache, static_cache = tf.new_cache(3), tf.new_cache(3)
        cache.kv.normal_(generator=g)
        static_cache.kv.copy_(cache.kv)
        ids = torch.randint(0, c.vocab_size, (3, width), generator=g)
        positions = torch.tensor([[5], [17], [40]]) + torch.arange(width)
        kv_len = int(positions.max()) + 1
        with torch.no_grad():
            reference = tf.decode(ids, positions, cache, kv_len, vocab_limit=V)
            logits = step(tf.step_weights(V), static_cache.kv.unbind(0), ids, positions, torch.arange(kv_len))
        torch.testing.assert_close(logits, reference, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(static_cache.kv, cache.kv, rtol=1e-6, atol=1e-6)


def test_step_weights_follow_in_place_updates(eager):
    tf = tiny(False).transformer
    before = tf.step_weights(V)
    assert tf.step_weights(V) is before  # cached while nothing changes
    with torch.no_grad():
        tf.model.layers[0].self_attn.k_proj.weight.add_(1.0)  # in place, as an optimizer step
    after = tf.step_weights(V)
    assert after is not before
    q, k = TINY.num_attention_heads * TINY.head_dim, TINY.num_key_value_heads * TINY.head_dim
    torch.testing.assert_close(after.layers[0][1][q : q + k], tf.model.layers[0].self_attn.k_proj.weight)


def test_compiled_greedy_naive_equals_eager_token_for_token_including_slides(eager, compiled):
    first = first_frames(eager, 2, seed=1)
    acts = actions((2, 6), seed=2)  # 7 frames > 4 of context: the slots slide and re-prefill twice
    reference = eager.generate_tokens(first, acts, temperature=0)
    out = compiled.generate_tokens(first, acts, temperature=0)
    assert torch.equal(out, reference)
    decoder = compiled._decoders[(SamplingConfig(temperature=0), True)]
    assert decoder._static_step.fallback_reason is None  # it really ran compiled


def test_compiled_seeded_sampling_draws_the_eager_tokens_and_logprobs(eager, compiled):
    first = first_frames(eager, 3, seed=3)
    acts = actions((3, 3), seed=4)
    ref_tokens, ref_logprobs = eager.generate_tokens(first, acts, top_p=0.9, generators=gens(3), return_logprobs=True)
    tokens, logprobs = compiled.generate_tokens(first, acts, top_p=0.9, generators=gens(3), return_logprobs=True)
    assert torch.equal(tokens, ref_tokens)
    torch.testing.assert_close(logprobs, ref_logprobs, rtol=1e-4, atol=1e-4)
    other = compiled.generate_tokens(first, acts, top_p=0.9, generators=gens(3, offset=10))
    assert not torch.equal(other, tokens)  # the seeds matter: equality above is not a constant output


@pytest.mark.parametrize("sampling", [dict(temperature=0), dict(top_p=0.9)])
def test_compiled_naive_decoding_of_one_env_verifies_drafts_and_draws_the_eager_tokens(eager, compiled, sampling):
    """One env is bound by reading the weights once per token, so compiled naive decoding verifies the previous
    frame's tokens as drafts (speculatively): the eager one-token-per-forward tokens in fewer forwards."""
    frames = eager.detokenize(first_frames(eager, 1, seed=9))[:, None]
    acts = actions((1, 6), seed=10)
    runs = []
    for model in (eager, compiled):
        seeded = "top_p" in sampling
        state = model.start(frames, None, gens(1, offset=4) if seeded else None, sampling=SamplingConfig(**sampling))
        steps = [model.step_tokens(state, acts[:, k], return_logprobs=True) for k in range(acts.shape[1])]
        runs.append((torch.stack([t for t, _ in steps]), torch.stack([lp for _, lp in steps]), state.decode_stats))
    (ref_tokens, ref_logprobs, eager_stats), (tokens, logprobs, stats) = runs
    assert torch.equal(tokens, ref_tokens)
    torch.testing.assert_close(logprobs, ref_logprobs, rtol=1e-4, atol=1e-4)
    assert eager_stats.forwards_per_frame == ROWS * COLS and eager_stats.accepted == 0
    assert stats.forwards_per_frame < ROWS * COLS and stats.accepted > 0


@pytest.mark.parametrize("decoding", ["diagonal", "speculative"])
def test_compiled_diagonal_and_speculative_decoding_keep_their_semantics(eager, compiled, decoding):
    first = first_frames(eager, 2, seed=5)
    acts = actions((2, 3), seed=6)
    kw = dict(decoding=decoding, window=2, top_p=0.9, return_logprobs=True)
    ref_tokens, ref_logprobs = eager.generate_tokens(first, acts, generators=gens(2), **kw)
    tokens, logprobs = compiled.generate_tokens(first, acts, generators=gens(2), **kw)
    assert torch.equal(tokens, ref_tokens)
    torch.testing.assert_close(logprobs, ref_logprobs, rtol=1e-4, atol=1e-4)


FALLBACK_SCRIPT = """
import warnings
import torch._inductor.config as inductor_config
from tests.test_mineworld_compiled import TINY, SamplingConfig, actions, first_frames, tiny

inductor_config.fx_graph_cache = False
inductor_config.cpp.cxx = (None, {cxx!r})
config = TINY.__class__(**(TINY.to_dict() | {{"hidden_size": 40, "intermediate_size": 72, "name": "other"}}))
model, reference = tiny(True, config), tiny(False, config)
first, acts = first_frames(reference, 1, seed=7), actions((1, 2), seed=8)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    out = model.generate_tokens(first, acts, temperature=0)
messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
assert len(messages) == 1 and "decoding eagerly" in messages[0] and "C++ compiler" in messages[0], messages
assert (out == reference.generate_tokens(first, acts, temperature=0)).all()
assert model._decoders[(SamplingConfig(temperature=0), True)]._static_step.fallback_reason
print("fell back")
"""


def test_a_compile_failure_falls_back_to_eager_with_one_warning(tmp_path):
    # a real failure (no C++ compiler, fresh caches), in its own process: Inductor remembers the compiler it found
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"), PYTHONPATH=str(root))
    script = FALLBACK_SCRIPT.format(cxx=str(tmp_path / "no-such-c++"))
    done = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "fell back" in done.stdout, done.stderr[-3000:]


def test_compiling_for_a_device_without_a_compiler_is_a_config_error():
    transformer = tiny(False).transformer.to("meta")
    with pytest.raises(ConfigError, match="compile=False"):
        StaticStep(transformer, V, SamplingConfig(temperature=0))


def test_envs_take_compile_and_refuse_it_where_it_cannot_apply():
    import gymnasium as gym

    import rlir_env  # noqa: F401
    from rlir_env.vector import WorldModelVectorEnv

    env = gym.make("RLIR-Crafter-v0", compile=True)
    assert env.unwrapped.model.compile is True
    env.close()
    with pytest.raises(ConfigError, match="compile=True"):
        WorldModelVectorEnv(1, model=tiny(False), compile=True)
    with pytest.raises(ConfigError, match="NFD"):
        gym.make("RLIR-CrafterNFD-v0", compile=True)


def test_compiled_step_frames_differ_from_eager_only_by_vq_rounding(eager, compiled):
    g = torch.Generator().manual_seed(9)
    frames = torch.randint(0, 256, (3, 1, *TINY.frame_size, 3), generator=g, dtype=torch.uint8)
    acts = actions((3,), seed=10)
    sampling = SamplingConfig(temperature=0)
    reference = eager.step(eager.start(frames, sampling=sampling), acts)
    out = compiled.step(compiled.start(frames, sampling=sampling), acts)
    assert out.dtype == torch.uint8 and out.shape == reference.shape
    difference = (out.int() - reference.int()).abs()
    assert int(difference.max()) <= 1 and float((difference > 0).float().mean()) < 1e-3


def test_larger_batches_share_one_graph(compiled):
    from torch._dynamo.utils import counters

    acts = actions((7, 1), seed=11)
    first = first_frames(compiled, 7, seed=12)
    compiled.generate_tokens(first[:5], acts[:5], temperature=0)  # compiles the graphs of batches > 4 slots
    graphs = counters["stats"]["unique_graphs"]
    compiled.generate_tokens(first, acts, temperature=0)
    assert counters["stats"]["unique_graphs"] == graphs  # 7 envs: no recompilation
    compiled.generate_tokens(first[:1], acts[:1], temperature=0, top_p=0.5)  # another sampler: new graphs, counted
    assert counters["stats"]["unique_graphs"] > graphs
