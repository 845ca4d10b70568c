"""MineWorld model: official key names, VQ semantics, cache exactness, decoding orders, WorldModel protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldmodels.actions.minecraft import COMPACT_NVEC
from worldmodels.errors import ActionError, ConfigError, FrameError, NumericalError
from worldmodels.mineworld import AMUSED_VQ_CONFIG, PRESETS, TINY_VQ_CONFIG, MineWorld, SamplingConfig, get_preset
from worldmodels.mineworld.model import context_windows
from worldmodels.protocol import AutoregressiveModel, DiffusionModel, WorldModel

TINY = get_preset("tiny")
HW = TINY.tokens_per_frame  # 24
A = 11
ROWS, COLS = TINY.image_grid
V = TINY.image_vocab_size
L = TINY.max_position_embeddings


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matmuls are dominated by OpenMP synchronisation when the 2 cores are shared (pytest -n 2)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(dtype: torch.dtype) -> MineWorld:
    torch.manual_seed(0)
    model = MineWorld.from_config(TINY, TINY_VQ_CONFIG, dtype=dtype).eval()
    with torch.no_grad():  # larger output weights: peaked, clearly ordered logits
        model.transformer.lm_head.weight.mul_(20.0)
    return model


@pytest.fixture(scope="module")
def model() -> MineWorld:
    return _model(torch.float32)


@pytest.fixture(scope="module")
def model64() -> MineWorld:
    """float64 for token-exact comparisons between different computation orders."""
    return _model(torch.float64)


def random_frames(n: int, t: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, t, *TINY.frame_size, 3), generator=g, dtype=torch.uint8)


def random_actions(shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, COMPACT_NVEC, size=(*shape, len(COMPACT_NVEC)))


def gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def official_action_tokens(compact: np.ndarray) -> np.ndarray:
    from worldmodels.actions.minecraft import compact_to_tokens

    return compact_to_tokens(compact, offset=V)


# --- structure ---------------------------------------------------------------------------------------------------


def test_300m_state_dict_keys_and_shapes_match_the_official_table():
    config = PRESETS["300M_16f"]
    model = MineWorld.from_config(config, AMUSED_VQ_CONFIG, device="meta")
    state = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    H, I, kv = 1024, 4096, 4 * 64
    expected = {"transformer.model.embed_tokens.weight": (8262, H), "transformer.model.norm.weight": (H,),
                "transformer.lm_head.weight": (8262, H)}  # fmt: skip
    for i in range(20):
        p = f"transformer.model.layers.{i}."
        expected |= {
            p + "self_attn.q_proj.weight": (H, H), p + "self_attn.k_proj.weight": (kv, H),
            p + "self_attn.v_proj.weight": (kv, H), p + "self_attn.o_proj.weight": (H, H),
            p + "mlp.gate_proj.weight": (I, H), p + "mlp.up_proj.weight": (I, H), p + "mlp.down_proj.weight": (H, I),
            p + "input_layernorm.weight": (H,), p + "post_attention_layernorm.weight": (H,),
        }  # fmt: skip
    transformer = {k: v for k, v in state.items() if k.startswith("transformer.")}
    assert transformer == expected
    assert round(sum(np.prod(s) for s in transformer.values()) / 1e6, 1) == 321.0  # mineworld.md §2
    tokenizer = {k for k in state if not k.startswith("transformer.")}
    assert all(k.startswith("tokenizer.model.") for k in tokenizer)
    assert state["tokenizer.model.quantize.embedding.weight"] == (8192, 64)
    assert {k.split(".")[2] for k in tokenizer} == {"encoder", "quant_conv", "quantize", "post_quant_conv", "decoder"}
    assert not any(k for k, _ in model.named_buffers() if k in state)  # rotary tables are not saved


@pytest.mark.parametrize(
    "stem, hidden, inter, heads, frames",
    [("300M_16f", 1024, 4096, 16, 16), ("700M_16f", 2048, 4096, 32, 16), ("700M_32f", 2048, 4096, 32, 32),
     ("1200M_16f", 2048, 8192, 32, 16), ("1200M_32f", 2048, 8192, 32, 32)],
)  # fmt: skip
def test_official_presets(stem, hidden, inter, heads, frames):
    c = get_preset(stem)
    assert (c.hidden_size, c.intermediate_size, c.num_attention_heads) == (hidden, inter, heads)
    assert (c.num_key_value_heads, c.num_hidden_layers, c.head_dim, c.vocab_size) == (4, 20, 64, 8262)
    assert c.max_position_embeddings == frames * 347 and c.context_frames == frames
    assert (c.tokens_per_frame, c.tokens_per_action, c.tokens_per_pair) == (336, 11, 347)
    assert (c.rope_theta, c.rms_norm_eps, c.frame_size, c.image_grid) == (10000.0, 1e-5, (224, 384), (14, 24))
    assert get_preset(c.name) is c


def test_config_validation_and_crafter_layout():
    with pytest.raises(ConfigError, match="vocab_size"):
        TINY.__class__(**(TINY.to_dict() | {"vocab_size": 100}))
    with pytest.raises(ConfigError, match="num_key_value_heads"):
        TINY.__class__(**(TINY.to_dict() | {"num_key_value_heads": 3}))
    with pytest.raises(ConfigError, match="image_grid"):
        TINY.__class__(**(TINY.to_dict() | {"frame_size": [32, 40]}))
    with pytest.raises(ConfigError, match="domain"):
        TINY.__class__(**(TINY.to_dict() | {"action_domain": "doom"}))
    crafter = TINY.__class__(**(TINY.to_dict() | {"action_domain": "crafter", "vocab_size": 64 + 19}))
    assert (crafter.tokens_per_action, crafter.tokens_per_pair, crafter.context_frames) == (3, 27, 5)


def test_model_satisfies_protocol_and_spec(model):
    assert isinstance(model, WorldModel)
    assert model.spec.domain == "minecraft" and model.spec.frame_size == (32, 48)
    assert model.spec.context_frames == 4 and model.reference_frames == 2
    prefixed = [k for k in model.state_dict() if k.startswith("transformer.")]
    assert list(model.transformer.state_dict()) == [k[len("transformer.") :] for k in prefixed]


# --- VQ tokenizer ------------------------------------------------------------------------------------------------


def test_tokenize_matches_an_independent_computation(model):
    frames = random_frames(3, 1, seed=1)[:, 0]
    ids = model.tokenize(frames)
    assert ids.dtype == torch.int64 and ids.shape == (3, ROWS, COLS)
    vq = model.tokenizer.model
    with torch.no_grad():
        x = torch.from_numpy(frames.numpy().astype(np.float32) / 255.0).permute(0, 3, 1, 2)
        x = (x - 0.5) / 0.5
        z = vq.quant_conv(vq.encoder(x)).permute(0, 2, 3, 1)  # [B, h, w, C]
        distances = ((z[..., None, :].double() - vq.quantize.embedding.weight.double()) ** 2).sum(-1)
    assert torch.equal(ids, distances.argmin(-1))
    assert len(ids.unique()) > 1


def test_detokenize_matches_an_independent_computation_and_truncates(model):
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, V, (2, ROWS, COLS), generator=g)
    frames = model.tokenizer.detokenize(ids, chunk=2)  # the reference below runs the same batch of 2
    assert frames.dtype == torch.uint8 and frames.shape == (2, 32, 48, 3)
    vq = model.tokenizer.model
    with torch.no_grad():
        quant = vq.quantize.embedding.weight[ids].permute(0, 3, 1, 2).contiguous()  # as get_codebook_entry
        dec = vq.decoder(vq.post_quant_conv(quant)).permute(0, 2, 3, 1).numpy()
    scaled = (np.clip(dec, -1, 1) + 1) / 2 * 255
    assert np.array_equal(frames.numpy(), scaled.astype(np.uint8))
    assert (np.round(scaled) != np.floor(scaled)).any()  # rounding would have given other pixels
    # compile mode's layout: the same frames up to float rounding, i.e. at most one level on few pixels
    nhwc = model.tokenizer.detokenize(ids, chunk=2, channels_last=True)
    assert nhwc.shape == frames.shape and nhwc.dtype == torch.uint8 and nhwc.is_contiguous()
    off = (nhwc.int() - frames.int()).abs()
    assert int(off.max()) <= 1 and float((off > 0).float().mean()) < 1e-2


def test_frames_of_the_wrong_size_or_dtype_are_refused(model):
    with pytest.raises(FrameError, match="uint8"):
        model.tokenize(torch.zeros(1, 32, 48, 3))
    with pytest.raises(FrameError, match=r"\[B, 32, 48, 3\]"):
        model.tokenize(torch.zeros(1, 48, 32, 3, dtype=torch.uint8))
    with pytest.raises(FrameError):
        model.start(torch.zeros(1, 32, 48, 3, dtype=torch.uint8))
    with pytest.raises(FrameError, match="image token ids"):
        model.detokenize(torch.full((1, ROWS, COLS), V))


# --- transformer / cache exactness --------------------------------------------------------------------------------


def test_cached_prefill_and_decode_equal_teacher_forced_logits(model):
    tf = model.transformer
    g = torch.Generator().manual_seed(3)
    seq = torch.randint(0, TINY.vocab_size, (2, 90), generator=g)
    full = model.logits(seq)
    assert full.shape == (2, 90, TINY.vocab_size)
    cache = tf.new_cache(3)
    rows = torch.tensor([2, 0])  # slots need not be 0..B-1
    with torch.no_grad():
        tf.hidden_states(seq[:, :40], cache, rows)
        # slot 2 (seq 0) continues one token at a time, then with a chunk of 12
        for p in range(40, 50):
            out = tf.decode(seq[:1, p : p + 1], torch.tensor([[p]]), cache, p + 1, rows=rows[:1])
            torch.testing.assert_close(out[0, 0], full[0, p], rtol=1e-4, atol=1e-4)
        pos = torch.arange(50, 62)[None]
        out = tf.decode(seq[:1, 50:62], pos, cache, 62, rows=rows[:1])
        torch.testing.assert_close(out[0], full[0, 50:62], rtol=1e-4, atol=1e-4)
        # both slots in one call at different positions (slot 2 at 62, slot 0 at 40)
        ids = torch.stack([seq[0, 62:64], seq[1, 40:42]])
        pos = torch.tensor([[62, 63], [40, 41]])
        out = tf.decode(ids, pos, cache, 64, rows=rows, vocab_limit=V)
    torch.testing.assert_close(out[0], full[0, 62:64, :V], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out[1], full[1, 40:42, :V], rtol=1e-4, atol=1e-4)


def test_gqa_heads_share_kv_like_repeat_interleave(model):
    """Attention of query head h uses KV head h // groups (official ``repeat_interleave``)."""
    tf = model.transformer
    attn = tf.model.layers[0].self_attn
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 7, TINY.hidden_size, generator=g)
    cos, sin = tf.model.rope_cos[:7][None, :, None], tf.model.rope_sin[:7][None, :, None]  # [1, s, 1, hd]
    with torch.no_grad():
        out = attn(x, cos, sin)
        hd = TINY.head_dim

        def project(linear, heads, rotate=True):
            t = (x @ linear.weight.T).view(1, 7, heads, hd)
            if not rotate:
                return t
            rotated_half = torch.cat([-t[..., hd // 2 :], t[..., : hd // 2]], -1)  # official rotate_half
            return t * cos + rotated_half * sin

        q = project(attn.q_proj, TINY.num_attention_heads)
        k = project(attn.k_proj, TINY.num_key_value_heads)
        v = project(attn.v_proj, TINY.num_key_value_heads, rotate=False)
        groups = TINY.num_attention_heads // TINY.num_key_value_heads
        k, v = k.repeat_interleave(groups, dim=2), v.repeat_interleave(groups, dim=2)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / TINY.head_dim**0.5
        scores = scores.masked_fill(torch.ones(7, 7, dtype=torch.bool).triu(1), float("-inf"))
        ref = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(1, 7, -1)
        torch.testing.assert_close(out, attn.o_proj(ref), rtol=1e-5, atol=1e-5)


def test_rotary_and_rmsnorm_follow_the_official_formulas(model):
    m = model.transformer.model
    d = TINY.head_dim
    inv = 1.0 / (10000.0 ** (np.arange(0, d, 2) / d))
    angles = np.arange(L)[:, None] * inv[None]
    torch.testing.assert_close(m.rope_cos, torch.from_numpy(np.cos(np.concatenate([angles, angles], 1))).float())
    norm = m.layers[0].input_layernorm
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 1.5, TINY.hidden_size))
        x = torch.randn(3, TINY.hidden_size)
        ref = norm.weight * (x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-5))
        torch.testing.assert_close(norm(x), ref)
        norm.weight.fill_(1.0)


# --- decoding vs independent references ---------------------------------------------------------------------------


def no_cache_greedy(model: MineWorld, first: torch.Tensor, actions: np.ndarray, reference_frames: int) -> torch.Tensor:
    """Argmax decoding by re-running the whole (slid) sequence for every token, one environment at a time."""
    tokens = torch.as_tensor(official_action_tokens(actions))
    out = []
    for b in range(first.shape[0]):
        seq = first[b].reshape(-1).tolist()
        frames = []
        for k in range(actions.shape[1]):
            if len(seq) + A + HW > L:  # keep the latest reference_frames frames
                n_frames = (len(seq) + A) // (HW + A)
                seq = seq[(n_frames - reference_frames) * (HW + A) :]
            seq += tokens[b, k].tolist()
            frame = []
            for _ in range(HW):
                logits = model.logits(torch.tensor([seq]))[0, -1, :V]
                frame.append(int(logits.argmax()))
                seq.append(frame[-1])
            frames.append(frame)
        out.append(frames)
    return torch.tensor(out).reshape(first.shape[0], -1, ROWS, COLS)


@torch.no_grad()
def official_diagonal_greedy(model: MineWorld, first: torch.Tensor, actions: np.ndarray, window: int) -> torch.Tensor:
    """A transcription of ``img_diagd_generate`` / ``img_diagd_decode_n_tokens`` (microsoft/mineworld
    ``diagonal_decoding.py``) with argmax sampling, for one environment, on a fresh cache."""
    tf = model.transformer
    cache = tf.new_cache(1)
    act = [torch.as_tensor(a) for a in official_action_tokens(actions)]
    prompt = torch.cat([first.reshape(-1), act[0]])
    promptlen, pixnum, actnum = len(prompt), HW, A

    def forward(ids, positions):
        positions = torch.as_tensor(positions)
        logits = tf.decode(torch.stack(ids)[None], positions[None], cache, int(positions.max()) + 1)
        return logits[0, :, :V].argmax(-1)

    next_token = forward(list(prompt), range(promptlen))[-1]
    n_generate = pixnum * actions.shape[0]
    new_tokens, cur_len, imagenum = [next_token], 1, 1
    row_token_num = [0] * ROWS
    row_token_num[0] = 1
    ongoing_rows, ongoing_input = [0], [next_token]
    while cur_len < n_generate:
        if cur_len % pixnum == 0:
            imagenum += 1
            ongoing_input += list(act[cur_len // pixnum])
            input_ids = ongoing_input
            positions = range(imagenum * (pixnum + actnum) - actnum - 1, imagenum * (pixnum + actnum))
        if cur_len % pixnum == 1 and row_token_num[0] == window:
            ongoing_rows.append(1)
        if cur_len % pixnum >= 1:
            positions = [
                promptlen + r * COLS + row_token_num[r] - 1 + (imagenum - 1) * (pixnum + actnum) for r in ongoing_rows
            ]
            if row_token_num[ongoing_rows[-1]] == 0:
                ongoing_input.append(prompt[ongoing_rows[-1] * COLS - 1])
            input_ids = ongoing_input
        next_tokens = forward(input_ids, positions)
        ongoing_input = []
        if not ongoing_rows:
            cur_len += 1
            ongoing_input.append(next_tokens[-1])
            new_tokens.append(next_tokens[-1])
            ongoing_rows.append(0)
            row_token_num[0] += 1
            continue
        remove = None
        cur_len += len(input_ids)
        for i in range(len(input_ids)):
            r = ongoing_rows[i]
            new_tokens.insert(sum(row_token_num[: r + 1]) + (imagenum - 1) * pixnum, next_tokens[i])
            ongoing_input.append(next_tokens[i])
            row_token_num[r] += 1
            if row_token_num[r] == window and r < ROWS - 1:
                ongoing_rows.append(r + 1)
            elif r == ROWS - 1 and row_token_num[r] == COLS:
                row_token_num, ongoing_rows, ongoing_input, remove = [0] * ROWS, [], [next_tokens[i]], None
                break
            if row_token_num[r] == COLS:
                ongoing_input.pop()
                remove = r
        if remove is not None:
            ongoing_rows.remove(remove)
    return torch.stack(new_tokens).reshape(-1, ROWS, COLS)


def test_greedy_naive_equals_a_no_cache_decoder_including_context_slides(model64):
    first = model64.tokenize(random_frames(2, 1, seed=5)[:, 0])
    actions = random_actions((2, 6), seed=6)  # 7 frames > 4 of context: slides twice
    out = model64.generate_tokens(first, actions, temperature=0)
    assert out.shape == (2, 6, ROWS, COLS)
    assert torch.equal(out, no_cache_greedy(model64, first, actions, model64.reference_frames))
    assert torch.equal(out, model64.generate_tokens(first, actions, top_k=1))


@pytest.mark.parametrize("window", [1, 2, 4, COLS])
def test_greedy_diagonal_equals_the_official_schedule(model64, window):
    first = model64.tokenize(random_frames(2, 1, seed=7)[:, 0])
    actions = random_actions((2, 3), seed=8)
    out = model64.generate_tokens(first, actions, decoding="diagonal", window=window, temperature=0)
    for b in range(2):
        ref = official_diagonal_greedy(model64, first[b], actions[b], window)
        assert torch.equal(out[b], ref), f"env {b}"


def test_diagonal_differs_from_naive_and_rejects_bad_windows(model64):
    first = model64.tokenize(random_frames(1, 1, seed=9)[:, 0])
    actions = random_actions((1, 2), seed=10)
    naive = model64.generate_tokens(first, actions, temperature=0)
    diagonal = model64.generate_tokens(first, actions, decoding="diagonal", window=2, temperature=0)
    assert torch.equal(naive[0, 0, 0, :2], diagonal[0, 0, 0, :2])  # identical contexts for the first tokens
    assert not torch.equal(naive, diagonal)  # later contexts differ (stand-ins, unwritten slots)
    with pytest.raises(ConfigError, match="window"):
        model64.generate_tokens(first, actions, decoding="diagonal", window=COLS + 1, temperature=0)


# --- WorldModel protocol -------------------------------------------------------------------------------------------


@pytest.fixture
def per_frame_vq(model, monkeypatch):
    """One frame per VQ call: conv kernels depend on the batch size, which can flip a truncated pixel (or, rarely,
    a nearest code) between a batch of 3 and a batch of 1. The token streams do not depend on it."""
    monkeypatch.setattr(model.tokenizer, "chunk", 1)


def rollout(model, frames, context_actions, step_actions, seeds, **kw):
    """Token grids ``[B, n, h, w]`` of a rollout (``step_tokens``; ``step`` only adds ``detokenize``)."""
    state = model.start(frames, context_actions, gens(*seeds), **kw)
    steps = [model.step_tokens(state, step_actions[:, k])[0] for k in range(step_actions.shape[1])]
    return torch.stack(steps, 1), state


@pytest.mark.parametrize("decoding", ["naive", "diagonal"])
def test_seeded_rollouts_are_reproducible_and_independent_of_the_batch(model, decoding, per_frame_vq):
    sampling = SamplingConfig(top_p=0.9, decoding=decoding)
    frames = random_frames(3, 2, seed=11)
    ctx, acts = random_actions((3, 1), 12), random_actions((3, 4), 13)
    batch, _ = rollout(model, frames, ctx, acts, (5, 6, 7), sampling=sampling)
    again, _ = rollout(model, frames, ctx, acts, (5, 6, 7), sampling=sampling)
    assert torch.equal(batch, again)
    for i, seed in enumerate((5, 6, 7)):
        alone, _ = rollout(model, frames[i : i + 1], ctx[i : i + 1], acts[i : i + 1], (seed,), sampling=sampling)
        assert torch.equal(alone[0], batch[i])
    other_seed, _ = rollout(model, frames[:1], ctx[:1], acts[:1], (99,), sampling=sampling)
    assert not torch.equal(other_seed[0], batch[0])
    pixels = model.detokenize(batch[:, -1])
    assert torch.equal(model.detokenize(alone[:, -1])[0], pixels[2])


def test_partial_reset_leaves_other_slots_bit_identical(model, per_frame_vq):
    frames, new_frames = random_frames(3, 1, seed=14), random_frames(1, 2, seed=15)
    acts = random_actions((3, 6), 16)
    new_ctx = random_actions((1, 1), 17)

    def run(reset: bool):
        state = model.start(frames, None, gens(1, 2, 3))
        out = []
        for k in range(6):
            if reset and k == 3:
                model.reset_slots(state, [1], new_frames, new_ctx, gens(42))
            out.append(model.step(state, acts[:, k]) if k == 5 else model.step_tokens(state, acts[:, k])[0])
        return out

    def same(a, b):
        return all(torch.equal(x, y) for x, y in zip(a, b))

    plain, with_reset = run(False), run(True)
    assert same([x[[0, 2]] for x in plain], [x[[0, 2]] for x in with_reset])  # tokens, and pixels at the end
    assert not same([x[1] for x in plain[3:5]], [x[1] for x in with_reset[3:5]])
    fresh, _ = rollout(model, new_frames, new_ctx, acts[1:2, 3:5], (42,))
    assert torch.equal(torch.stack([x[1] for x in with_reset[3:5]]), fresh[0])


def test_context_slides_to_the_reference_frames(model64):
    state = model64.start(random_frames(1, 3, seed=18), random_actions((1, 2), 19), None,
                          sampling=SamplingConfig(temperature=0), reference_frames=1)  # fmt: skip
    acts = random_actions((1, 4), 20)
    lengths, slides = [], []
    for k in range(4):
        model64.step_tokens(state, acts[:, k])
        lengths.append(int(state.lengths[0]))
        slides.append(int(state.slides[0]))
    # 3 frames -> 4 (full: 4*24 + 3*11 = 129) -> slide to 1 frame, + 1 -> 2 -> 3
    assert lengths == [129, 2 * HW + A, 3 * HW + 2 * A, 4 * HW + 3 * A] and slides == [0, 1, 1, 1]
    with pytest.raises(ConfigError, match="reference_frames"):
        model64.start(random_frames(1, 1, 0), None, None, sampling=SamplingConfig(temperature=0), reference_frames=4)


def test_copy_slots_fans_out_a_prefilled_context(model, per_frame_vq):
    frames = torch.cat([random_frames(1, 2, seed=21), random_frames(2, 2, seed=22)])
    ctx = random_actions((3, 1), 23)
    ctx[1:] = ctx[0]
    acts = np.repeat(random_actions((1, 3), 24), 3, axis=0)
    state = model.start(frames, ctx, gens(8, 8, 8))
    model.copy_slots(state, [0, 0], [1, 2])
    out = torch.stack([model.step_tokens(state, acts[:, k])[0] for k in range(3)], 1)
    assert torch.equal(out[0], out[1]) and torch.equal(out[0], out[2])
    alone, _ = rollout(model, frames[:1], ctx[:1], acts[:1], (8,))
    assert torch.equal(out[0], alone[0])


def test_start_group_fans_out_one_prefill_per_context_like_separate_starts(model, per_frame_vq):
    """Two contexts x three members: each context prefilled once and copied to its group decodes the same tokens as
    every slot started from its own copy of the context (with the same generators)."""
    frames = torch.cat([random_frames(1, 2, seed=31), random_frames(1, 2, seed=32)])
    ctx = random_actions((2, 1), 33)
    acts = np.repeat(random_actions((2, 3), 34), 3, axis=0)
    seeds = (5, 6, 7, 8, 9, 10)
    calls = []
    real = model._prefill
    model._prefill = lambda state, rows: (calls.append(len(rows)), real(state, rows))[1]
    try:
        grouped = model.start_group(frames, ctx, gens(*seeds), group_size=3)
    finally:
        del model._prefill
    assert calls == [2]  # one prefill of the two contexts; the members are copies
    unshared = model.start_group(frames, ctx, gens(*seeds), group_size=3, share_prefix=False)
    separate = model.start(frames.repeat_interleave(3, 0), np.repeat(ctx, 3, axis=0), gens(*seeds))
    states = (grouped, unshared, separate)
    out = [torch.stack([model.step_tokens(s, acts[:, k])[0] for k in range(3)], 1) for s in states]
    assert torch.equal(out[0], out[2]) and torch.equal(out[1], out[2])
    assert not torch.equal(out[0][0], out[0][1])  # members sample with their own generators
    with pytest.raises(ConfigError, match="group_size"):
        model.start_group(frames, ctx, gens(*seeds), group_size=0)


def test_context_windows_plan_the_slides_the_model_makes(model):
    """The plan a replay relies on (``context_windows``) names exactly the steps before which ``step`` slides."""
    assert isinstance(model, AutoregressiveModel) and not isinstance(model, DiffusionModel)
    windows = model.context_windows(1, 6, reference_frames=2)
    assert windows == context_windows(model.config, 1, 6, 2)
    planned = [w.first_scored - 1 for w in windows if w.first > 0]
    state = model.start(random_frames(1, 1, seed=35), None, gens(3), reference_frames=2)
    slid = []
    for k, action in enumerate(random_actions((6, 1), 36)):
        before = int(state.slides[0])
        model.step_tokens(state, action)
        if state.slides[0] > before:
            slid.append(k)
    assert slid == planned and planned


def test_logprobs_are_those_of_the_sampling_distribution(model):
    """Naive decoding conditions on the true sequence, so teacher-forced logits give the same log-probs."""
    first = model.tokenize(random_frames(2, 1, seed=25)[:, 0])
    actions = random_actions((2, 2), 26)
    sampling = SamplingConfig(temperature=0.7, top_p=0.8)
    out, logprobs = model.generate_tokens(first, actions, temperature=0.7, top_p=0.8, generators=gens(1, 2),
                                          return_logprobs=True)  # fmt: skip
    from worldmodels.mineworld.sampling import filtered_logprobs

    tokens = torch.as_tensor(official_action_tokens(actions))
    seq = torch.cat([first.reshape(2, -1), tokens[:, 0], out[:, 0].reshape(2, -1), tokens[:, 1],
                     out[:, 1].reshape(2, -1)], 1)  # fmt: skip
    with torch.no_grad():
        logits = model.logits(seq)[..., :V]
    targets = [HW + A - 1 + i for i in range(HW)] + [2 * HW + 2 * A - 1 + i for i in range(HW)]
    ref = filtered_logprobs(logits[:, targets], sampling).gather(-1, seq[:, [t + 1 for t in targets], None])[..., 0]
    torch.testing.assert_close(logprobs.reshape(2, -1), ref, rtol=1e-4, atol=1e-4)
    assert (logprobs <= 0).all() and (logprobs < 0).any()


def test_nan_logits_raise_a_numerical_error_naming_the_step():
    model = _model(torch.float32)
    with torch.no_grad():
        model.transformer.lm_head.weight[3] = float("nan")
    first = torch.zeros(1, ROWS, COLS, dtype=torch.long)
    with pytest.raises(NumericalError, match="step"):
        model.generate_tokens(first, random_actions((1, 1), 0), temperature=0)


def test_bad_actions_and_generators_are_refused(model):
    frames = random_frames(2, 1, seed=0)
    with pytest.raises(ConfigError, match="generators"):
        model.start(frames, None, None)
    state = model.start(frames, None, gens(1, 2))
    with pytest.raises(ActionError, match=r"\[2, 9\]"):
        model.step(state, random_actions((3,), 0))
    with pytest.raises(ActionError):
        model.step(state, np.full((2, 9), 30))
    with pytest.raises(ValueError, match="out of range"):
        model.reset_slots(state, [2], frames[:1])


def test_minerl_dict_actions_equal_their_compact_form(model64):
    from worldmodels.actions.minecraft import from_compact

    first = model64.tokenize(random_frames(1, 1, seed=27)[:, 0])
    compact = random_actions((1, 2), 28)
    dicts = [from_compact(compact[0])]
    assert torch.equal(model64.generate_tokens(first, compact, temperature=0),
                       model64.generate_tokens(first, dicts, temperature=0))  # fmt: skip


def test_crafter_domain_model_runs():
    config = TINY.__class__(**(TINY.to_dict() | {"action_domain": "crafter", "vocab_size": 64 + 19, "name": "c"}))
    model = MineWorld.from_config(config, TINY_VQ_CONFIG).eval()
    state = model.start(random_frames(2, 2, seed=0), np.array([[1], [5]]), gens(0, 1))
    frames = model.step(state, np.array([3, 16]))
    assert frames.shape == (2, 32, 48, 3)
    with pytest.raises(ActionError):
        model.step(state, np.array([3, 17]))


def test_fused_inference_projections_follow_weight_updates():
    model = _model(torch.float32)
    tf = model.transformer
    assert tf.model.layers[0].mlp.fused  # small model: fused q/k/v and gate/up matmuls at inference
    ids = torch.randint(0, V, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = tf(ids)
        tf.model.layers[0].self_attn.k_proj.weight.mul_(2.0)  # in place, as an optimizer step
        tf.model.layers[1].mlp.up_proj.weight.add_(0.01)
        fused = tf(ids)
    separate = tf(ids)  # gradients enabled: separate projections
    assert not torch.allclose(before, fused)
    torch.testing.assert_close(fused, separate.detach(), rtol=1e-5, atol=1e-5)
    assert separate.requires_grad
