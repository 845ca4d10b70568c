"""worldmodels.training.worldmodel: MineWorld sequences in the official order, a loss over image tokens only (checked
against an independent computation), training that learns, reproducible and bit-exactly resumable runs, a token
cache keyed by the data and the tokenizer, and an output that MineWorld.from_checkpoint loads and rolls out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from rlir_env.crafter.record import record
from worldmodels.data.shards import ShardDataset
from worldmodels.errors import ConfigError, DataError
from worldmodels.hashing import sha256_file
from worldmodels.mineworld import MineWorld, MineWorldConfig, SamplingConfig, save_safetensors
from worldmodels.mineworld.checkpoint import stored_sampling
from worldmodels.mineworld.vq import VQTokenizer
from worldmodels.training.tokenizer import save_tokenizer
from worldmodels.training.worldmodel import (
    build_sequences,
    draw_learning_curves,
    evaluate_windows,
    image_token_loss,
    token_cache_path,
    tokenize_datasets,
    train_worldmodel,
    window_starts,
)

SIZE = 36
CODES = 32
VQ = {
    "_class_name": "VQModel", "act_fn": "silu", "block_out_channels": [8, 8, 16],
    "down_block_types": ["DownEncoderBlock2D"] * 3, "up_block_types": ["UpDecoderBlock2D"] * 3, "in_channels": 3,
    "out_channels": 3, "latent_channels": 4, "layers_per_block": 1, "norm_num_groups": 4, "norm_type": "group",
    "num_vq_embeddings": CODES, "vq_embed_dim": None, "mid_block_add_attention": False, "lookup_from_codebook": True,
    "force_upcast": True, "scaling_factor": 0.18215, "sample_size": SIZE,
}  # fmt: skip
CONFIG = MineWorldConfig(
    hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=1,
    max_position_embeddings=3 * 84, vocab_size=CODES + 19 + 5, image_grid=(9, 9), image_vocab_size=CODES,
    frame_size=(SIZE, SIZE), action_domain="crafter", fps=5.0, name="crafter-test",
)  # fmt: skip
RUN = dict(config=CONFIG, batch_size=4, lr=3e-3, warmup=2, val_windows=8, eval_every=0, log_every=1,
           checkpoint_every=4, progress=False)  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("crafter36")
    record(root, n_frames=200, shard_frames=100, seed=7, size=SIZE, episode_length=50)
    return root


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory) -> Path:
    """A randomly initialised tokenizer: its tokens are a fixed function of the frames, all these tests need."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tok") / "tok.safetensors"
    return save_tokenizer(VQTokenizer(VQ, (SIZE, SIZE)), path)


def test_sequences_follow_the_official_layout():
    frames = torch.arange(2 * 3 * 81).reshape(2, 3, 81) % CODES
    actions = torch.tensor([[5, 16], [0, 3]])
    ids = build_sequences(frames, actions, CONFIG)
    for b in range(2):
        expected: list[int] = []
        for t in range(3):
            expected += frames[b, t].tolist()
            if t < 2:  # [bos, action, eos] with Crafter's local ids bos = 17, eos = 18, offset by the image vocabulary
                expected += [CODES + 17, CODES + int(actions[b, t]), CODES + 18]
        assert ids[b].tolist() == expected
    assert ids.shape[1] == 3 * 81 + 2 * 3 <= CONFIG.max_position_embeddings


def test_loss_is_exactly_the_image_token_cross_entropy():
    torch.manual_seed(1)
    model = MineWorld.from_config(CONFIG, VQ)
    frames = torch.randint(0, CODES, (2, 3, 81))
    ids = build_sequences(frames, torch.tensor([[1, 2], [3, 4]]), CONFIG)
    # the softmax is over the image ids (those the sampler draws from); only image targets count
    logp = torch.log_softmax(model.logits(ids).double()[..., :CODES], dim=-1)
    rows, positions, targets = [], [], []
    for b in range(ids.shape[0]):
        for i in range(ids.shape[1] - 1):
            if int(ids[b, i + 1]) < CODES:
                rows.append(b), positions.append(i), targets.append(int(ids[b, i + 1]))
    terms = list(-logp[rows, positions, targets])
    assert len(terms) == 2 * (3 * 81 - 1)
    expected = torch.stack(terms).mean()
    assert image_token_loss(model.transformer, ids, CODES).item() == pytest.approx(expected.item(), rel=1e-5)
    metrics = evaluate_windows(model.transformer, ids, CONFIG, batch_size=1)
    assert metrics["loss"] == pytest.approx(expected.item(), rel=1e-5)
    later = [t for t, pos in zip(terms, [p for b in range(2) for p in range(1, ids.shape[1]) if ids[b, p] < CODES])
             if pos >= 84]  # fmt: skip
    assert metrics["loss_next"] == pytest.approx(torch.stack(later).mean().item(), rel=1e-5)
    same = (frames[:, 1:] == frames[:, :-1]).double().mean().item()
    assert metrics["copy_acc"] == pytest.approx(same)


def test_windows_stay_inside_episodes():
    lengths = np.array([5, 2, 4])
    starts = window_starts(lengths, np.array([0, 1, 2]), 3)
    assert starts.tolist() == [0, 1, 2, 7, 8]
    assert window_starts(lengths, np.array([2]), 3).tolist() == [7, 8]


def test_training_learns_and_the_output_loads_and_generates(data, tokenizer_file, tmp_path):
    out = tmp_path / "wm.safetensors"
    summary = train_worldmodel(data, tokenizer_file, out, steps=30, seed=0, **RUN)
    first, last = summary["validations"][0], summary["validations"][-1]
    assert first["step"] == 0 and last["step"] == 30
    assert first["loss"] == pytest.approx(np.log(CODES), rel=0.05)  # a fresh model is near uniform
    assert last["loss"] < first["loss"] - 0.5
    log = [json.loads(line) for line in (tmp_path / "wm.run" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r and "val" not in r]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5
    curves = np.asarray(Image.open(summary["curves"]).convert("RGB"))
    assert curves.shape == (840, 720, 3)  # two panels: loss, then token accuracy against the copy baseline
    blue = (curves[..., 2] > 200) & (curves[..., 0] < 120)
    assert blue[:420].sum() > 50 and blue[420:].sum() == 0  # the training loss is drawn in the loss panel only

    model = MineWorld.from_checkpoint(out)
    assert model.config == CONFIG
    stored = load_file(str(out))
    tokenizer = load_file(str(tokenizer_file))
    for key, value in tokenizer.items():
        assert torch.equal(stored[f"tokenizer.model.{key}"], value)
    dataset = ShardDataset(data)
    frames, actions = dataset.window(0, 0, 2)
    state = model.start(torch.from_numpy(frames[None, :2]), actions[None, :1], [torch.Generator().manual_seed(0)])
    generated = model.step(state, actions[None, 1])
    assert generated.shape == (1, SIZE, SIZE, 3) and generated.dtype == torch.uint8
    on_disk = json.loads((tmp_path / "wm.json").read_text())
    assert on_disk["final"] == summary["final"] and on_disk["config"] == CONFIG.to_dict()


def test_same_seed_same_weights_and_resume_is_bit_exact(data, tokenizer_file, tmp_path):
    full = train_worldmodel(data, tokenizer_file, tmp_path / "a.safetensors", steps=10, seed=3, **RUN)
    train_worldmodel(data, tokenizer_file, tmp_path / "b.safetensors", steps=10, seed=3, **RUN)
    stopped = train_worldmodel(data, tokenizer_file, tmp_path / "c.safetensors", steps=10, seed=3, stop_after=6, **RUN)
    assert not stopped["finished"] and not (tmp_path / "c.safetensors").exists()
    resumed = train_worldmodel(data, tokenizer_file, tmp_path / "c.safetensors", steps=10, seed=3, resume=True, **RUN)
    assert resumed["resumed_from"] == 6
    other = train_worldmodel(data, tokenizer_file, tmp_path / "d.safetensors", steps=10, seed=4, **RUN)
    a, b, c, d = (load_file(str(tmp_path / f"{n}.safetensors")) for n in "abcd")
    for key in a:
        assert torch.equal(a[key], b[key]), key
        assert torch.equal(a[key], c[key]), key
    assert any(not torch.equal(a[key], d[key]) for key in a if key.startswith("transformer."))
    assert resumed["validations"] == full["validations"]
    assert other["final"] != full["final"]

    with pytest.raises(ConfigError, match="batch_size"):
        train_worldmodel(data, tokenizer_file, tmp_path / "c.safetensors", steps=10, seed=3, resume=True,
                         **{**RUN, "batch_size": 2})  # fmt: skip


def _logged_lrs(run_path: Path) -> dict[int, float]:
    lines = (run_path.with_suffix(".run") / "log.jsonl").read_text().splitlines()
    return {r["step"]: r["lr"] for r in map(json.loads, lines) if "lr" in r}


def test_a_larger_steps_extends_a_run_onto_the_longer_schedule(data, tokenizer_file, tmp_path):
    planned = train_worldmodel(data, tokenizer_file, tmp_path / "long.safetensors", steps=10, seed=3, **RUN)
    train_worldmodel(data, tokenizer_file, tmp_path / "ext.safetensors", steps=6, seed=3, **RUN)
    extended = train_worldmodel(data, tokenizer_file, tmp_path / "ext.safetensors", steps=10, seed=3, resume=True,
                                **RUN)  # fmt: skip
    assert extended["finished"] and extended["resumed_from"] == 6 and extended["steps_done"] == 10
    assert extended["schedules"] == [{"from_step": 0, "steps": 6}, {"from_step": 6, "steps": 10}]
    assert planned["schedules"] == [{"from_step": 0, "steps": 10}]
    long_lrs, extended_lrs = _logged_lrs(tmp_path / "long.safetensors"), _logged_lrs(tmp_path / "ext.safetensors")
    assert [extended_lrs[k] for k in range(7, 11)] == [long_lrs[k] for k in range(7, 11)]
    assert extended_lrs[6] < long_lrs[6]  # the 6-step schedule had decayed; the longer one restarts higher
    # an interrupted extension resumes bit-exactly, and its schedule history survives the checkpoint
    train_worldmodel(data, tokenizer_file, tmp_path / "int.safetensors", steps=6, seed=3, **RUN)
    train_worldmodel(data, tokenizer_file, tmp_path / "int.safetensors", steps=10, seed=3, resume=True, stop_after=8,
                     **RUN)  # fmt: skip
    resumed = train_worldmodel(data, tokenizer_file, tmp_path / "int.safetensors", steps=10, seed=3, resume=True,
                               **RUN)  # fmt: skip
    assert resumed["schedules"] == extended["schedules"] and resumed["validations"] == extended["validations"]
    a, b = (load_file(str(tmp_path / f"{n}.safetensors")) for n in ("ext", "int"))
    assert all(torch.equal(a[key], b[key]) for key in a)

    with pytest.raises(ConfigError, match="steps: checkpoint 10 vs now 8"):
        train_worldmodel(data, tokenizer_file, tmp_path / "ext.safetensors", steps=8, seed=3, resume=True, **RUN)
    with pytest.raises(ConfigError, match="lr: checkpoint"):
        train_worldmodel(data, tokenizer_file, tmp_path / "ext.safetensors", steps=12, seed=3, resume=True,
                         **{**RUN, "lr": 1e-3})  # fmt: skip


def test_a_warm_start_continues_a_trained_model_with_a_fresh_optimiser(data, tokenizer_file, tmp_path):
    base_path = tmp_path / "base.safetensors"
    base = train_worldmodel(data, tokenizer_file, base_path, steps=10, seed=3, **RUN)
    warm = train_worldmodel(data, tokenizer_file, tmp_path / "warm.safetensors", steps=6, seed=3, init_path=base_path,
                            **RUN)  # fmt: skip
    # step 0 scores the init itself on the same validation windows; training goes on from there
    assert warm["validations"][0] == pytest.approx({**base["final"], "step": 0}, rel=1e-5)
    assert warm["final"]["loss"] < base["final"]["loss"]
    assert warm["init"] == {"path": str(base_path), "sha256": sha256_file(base_path), "training": base}
    assert warm["schedules"] == [{"from_step": 0, "steps": 6}]
    cold = train_worldmodel(data, tokenizer_file, tmp_path / "cold.safetensors", steps=6, seed=3, **RUN)
    assert cold["final"]["loss"] > warm["final"]["loss"]
    # an interrupted warm start resumes bit-exactly (the checkpoint records the init)
    train_worldmodel(data, tokenizer_file, tmp_path / "int.safetensors", steps=6, seed=3, init_path=base_path,
                     stop_after=3, **RUN)  # fmt: skip
    resumed = train_worldmodel(data, tokenizer_file, tmp_path / "int.safetensors", steps=6, seed=3, resume=True,
                               init_path=base_path, **RUN)  # fmt: skip
    assert resumed["validations"] == warm["validations"]
    a, b = (load_file(str(tmp_path / f"{n}.safetensors")) for n in ("warm", "int"))
    assert all(torch.equal(a[key], b[key]) for key in a)
    with pytest.raises(ConfigError, match="init_sha256"):
        train_worldmodel(data, tokenizer_file, tmp_path / "int.safetensors", steps=6, seed=3, resume=True,
                         init_path=tmp_path / "cold.safetensors", **RUN)  # fmt: skip


def test_a_warm_start_keeps_the_default_sampling_and_refuses_other_tokens_or_shapes(data, tokenizer_file, tmp_path):
    import argparse

    from rlir.commands.train import register

    base_path = tmp_path / "base.safetensors"
    train_worldmodel(data, tokenizer_file, base_path, steps=2, seed=3, **RUN)
    model = MineWorld.from_checkpoint(base_path, sampling=SamplingConfig(top_p=0.9))
    save_safetensors(model, base_path)
    # a tokenizer whose decoder alone differs tokenizes the same: the init's transformer fits it
    retrained_decoder = tmp_path / "decoder.safetensors"
    vq = VQTokenizer(VQ, (SIZE, SIZE))
    vq.model.load_state_dict(model.tokenizer.model.state_dict())
    with torch.no_grad():
        vq.model.decoder.conv_out.weight.mul_(0.5)
    save_tokenizer(vq, retrained_decoder)
    parser = argparse.ArgumentParser(prog="rlir")
    register(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "warm.safetensors"
    args = parser.parse_args([
        "train", "worldmodel", "--data", str(data), "--tokenizer", str(retrained_decoder), "--out", str(out),
        "--init", str(base_path), "--steps", "2", "--batch-size", "2", "--val-windows", "4", "--no-progress",
    ])  # fmt: skip
    assert args.func(args) == 0  # no --size or --config: the init's architecture
    warm = MineWorld.from_checkpoint(out)
    assert warm.config == CONFIG and stored_sampling(out) == SamplingConfig(top_p=0.9)
    assert torch.equal(warm.tokenizer.model.decoder.conv_out.weight, vq.model.decoder.conv_out.weight)

    torch.manual_seed(5)
    other_tokenizer = save_tokenizer(VQTokenizer(VQ, (SIZE, SIZE)), tmp_path / "other.safetensors")
    with pytest.raises(ConfigError, match="another tokenizer than .*other.safetensors .*encoder"):
        train_worldmodel(data, other_tokenizer, tmp_path / "x.safetensors", steps=1, init_path=base_path, **RUN)
    deeper = MineWorldConfig(**{**CONFIG.to_dict(), "num_hidden_layers": 2})
    with pytest.raises(ConfigError, match="another architecture than the run .*num_hidden_layers: 1 vs 2"):
        train_worldmodel(data, tokenizer_file, tmp_path / "x.safetensors", steps=1, init_path=base_path,
                         **{**RUN, "config": deeper})  # fmt: skip


def test_token_cache_is_reused_and_invalidated(data, tokenizer_file, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    tokenizer = VQTokenizer(VQ, (SIZE, SIZE))
    tokenizer.model.load_state_dict(load_file(str(tokenizer_file)))
    cache = token_cache_path(tmp_path / "wm.safetensors")
    assert cache == tmp_path / "wm.tokens.npz"

    first = tokenize_datasets(tokenizer, [ShardDataset(copy)], tokenizer_sha256="t1", cache_path=cache)
    assert not first.reused and cache.is_file()
    frames = np.concatenate([e.frames for e in ShardDataset(copy).episodes()])
    expected = tokenizer.tokenize(torch.from_numpy(frames)).reshape(len(frames), -1).numpy()
    np.testing.assert_array_equal(first.tokens, expected)
    np.testing.assert_array_equal(first.actions, np.concatenate([e.actions for e in ShardDataset(copy).episodes()]))

    again = tokenize_datasets(tokenizer, [ShardDataset(copy)], tokenizer_sha256="t1", cache_path=cache)
    assert again.reused and again.key == first.key
    np.testing.assert_array_equal(again.tokens, first.tokens)
    assert not tokenize_datasets(tokenizer, [ShardDataset(copy)], tokenizer_sha256="t2", cache_path=cache).reused

    record(copy, n_frames=200, shard_frames=100, seed=8, size=SIZE, episode_length=50, overwrite=True)
    changed = tokenize_datasets(tokenizer, [ShardDataset(copy)], tokenizer_sha256="t2", cache_path=cache)
    assert not changed.reused and changed.key != first.key

    # a training run reuses the cache its first run wrote
    out = tmp_path / "run.safetensors"
    assert not train_worldmodel(copy, tokenizer_file, out, steps=1, **RUN)["token_cache"]["reused"]
    assert train_worldmodel(copy, tokenizer_file, out, steps=1, **RUN)["token_cache"]["reused"]


def test_mismatched_settings_raise(data, tokenizer_file, tmp_path):
    wrong_grid = MineWorldConfig(**{**CONFIG.to_dict(), "image_grid": (3, 3), "max_position_embeddings": 64})
    with pytest.raises(ConfigError, match="grid"):
        train_worldmodel(data, tokenizer_file, tmp_path / "x.safetensors", steps=1, **{**RUN, "config": wrong_grid})
    with pytest.raises(ConfigError, match="window_frames"):
        train_worldmodel(data, tokenizer_file, tmp_path / "x.safetensors", steps=1, window_frames=4, **RUN)


def test_resuming_from_another_recording_names_the_differing_fields(data, tokenizer_file, tmp_path):
    train_worldmodel(data, tokenizer_file, tmp_path / "wm.safetensors", steps=2, seed=3, stop_after=1, **RUN)
    moved = tmp_path / "moved"
    shutil.copytree(data, moved)
    with pytest.raises(ConfigError) as err:
        train_worldmodel(moved, tokenizer_file, tmp_path / "wm.safetensors", steps=2, seed=3, resume=True, **RUN)
    message = str(err.value)
    assert f"data[0].dir: checkpoint {str(data)!r} vs now {str(moved)!r}" in message
    assert "sha256" not in message  # the shards are the same: their hashes are not listed


def test_cli_trains_a_world_model(data, tokenizer_file, tmp_path):
    import argparse

    from rlir.commands.train import register

    parser = argparse.ArgumentParser(prog="rlir")
    register(parser.add_subparsers(dest="command", required=True))
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(CONFIG.to_dict()))
    out = tmp_path / "cli.safetensors"
    args = parser.parse_args([
        "train", "worldmodel", "--data", str(data), "--tokenizer", str(tokenizer_file), "--out", str(out),
        "--config", str(config_path), "--steps", "2", "--batch-size", "2", "--val-windows", "4", "--no-progress",
    ])  # fmt: skip
    assert args.func(args) == 0
    assert MineWorld.from_checkpoint(out).config == CONFIG
    with pytest.raises(ConfigError, match="--size"):
        bad = parser.parse_args(["train", "worldmodel", "--data", str(data), "--tokenizer", str(tokenizer_file),
                                 "--out", str(out), "--size", "huge"])  # fmt: skip
        bad.func(bad)


def test_learning_curves_need_a_validation(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps({"step": 1, "loss": 2.0}) + "\n")
    with pytest.raises(DataError, match="no validation record"):
        draw_learning_curves(log, tmp_path / "curves.png")
