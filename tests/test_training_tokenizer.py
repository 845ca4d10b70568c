"""worldmodels.training.tokenizer and the training plumbing it shares (checkpoints, resume, CLI): the VQ tokenizer
learns real Crafter frames, runs are reproducible and resume bit-exactly, the file loads as a VQTokenizer with
diffusers key names, and the evaluation metrics match their definitions."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rlir_env.crafter.record import record
from worldmodels.data.shards import ShardDataset
from worldmodels.errors import ConfigError, DataError
from worldmodels.mineworld.vq import VQTokenizer
from rlir.commands.train import register
from worldmodels.training.common import cosine_with_warmup, split_episodes
from worldmodels.training.tokenizer import (
    evaluate_tokenizer,
    gather_frames,
    load_tokenizer,
    restart_dead_codes,
    train_tokenizer,
)

SIZE = 36  # 4 px per Crafter cell; the VQ below downsamples by 4, so one token is still one cell (9x9 grid)
VQ = {
    "_class_name": "VQModel", "act_fn": "silu", "block_out_channels": [8, 16, 16],
    "down_block_types": ["DownEncoderBlock2D"] * 3, "up_block_types": ["UpDecoderBlock2D"] * 3, "in_channels": 3,
    "out_channels": 3, "latent_channels": 8, "layers_per_block": 1, "norm_num_groups": 4, "norm_type": "group",
    "num_vq_embeddings": 64, "vq_embed_dim": None, "mid_block_add_attention": False, "lookup_from_codebook": True,
    "force_upcast": True, "scaling_factor": 0.18215, "sample_size": SIZE,
}  # fmt: skip
RUN = dict(vq_config=VQ, frame_size=(SIZE, SIZE), batch_size=4, lr=3e-3, warmup=2, eval_frames=32, eval_every=0,
           restart_every=4, log_every=1, checkpoint_every=5, progress=False)  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("crafter36")
    record(root, n_frames=240, shard_frames=120, seed=3, size=SIZE, episode_length=60)
    return root


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def test_loss_goes_down_and_the_output_loads_as_a_vq_tokenizer(data, tmp_path):
    out = tmp_path / "tok.safetensors"
    summary = train_tokenizer(data, out, steps=25, seed=0, **{**RUN, "checkpoint_every": 100})
    log = [json.loads(line) for line in (tmp_path / "tok.run" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 25
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])

    tokenizer = load_tokenizer(out)
    assert isinstance(tokenizer, VQTokenizer) and tokenizer.grid == (9, 9) and tokenizer.codebook_size == 64
    fresh = VQTokenizer(VQ, (SIZE, SIZE))
    # diffusers key names (no wrapper prefix): the file is a valid diffusers VQModel state dict
    assert set(weights(out)) == set(fresh.model.state_dict())
    frames = gather_frames(ShardDataset(data), np.array([1]))[:16]
    trained = evaluate_tokenizer(tokenizer, frames)
    untrained = evaluate_tokenizer(fresh.eval(), frames)
    assert trained["psnr"] > untrained["psnr"] + 3.0

    on_disk = json.loads((tmp_path / "tok.json").read_text())
    assert on_disk["finished"] and on_disk["steps_done"] == 25
    assert on_disk["final"] == summary["final"] and 0 < on_disk["final"]["used_codes"] <= 64
    assert on_disk["settings"]["vq_config"] == VQ
    assert on_disk["data"][0]["shards_sha256"] == [s.sha256 for s in ShardDataset(data).shards]


def test_same_seed_same_weights_and_resume_is_bit_exact(data, tmp_path):
    full = train_tokenizer(data, tmp_path / "a.safetensors", steps=12, seed=1, **RUN)
    train_tokenizer(data, tmp_path / "b.safetensors", steps=12, seed=1, **RUN)
    stopped = train_tokenizer(data, tmp_path / "c.safetensors", steps=12, seed=1, stop_after=7, **RUN)
    assert not stopped["finished"] and not (tmp_path / "c.safetensors").exists()
    resumed = train_tokenizer(data, tmp_path / "c.safetensors", steps=12, seed=1, resume=True, **RUN)
    assert resumed["resumed_from"] == 7 and resumed["finished"]
    other = train_tokenizer(data, tmp_path / "d.safetensors", steps=12, seed=2, **RUN)

    a, b, c, d = (weights(tmp_path / f"{n}.safetensors") for n in "abcd")
    for key in a:
        assert torch.equal(a[key], b[key]), key
        assert torch.equal(a[key], c[key]), key
    assert any(not torch.equal(a[key], d[key]) for key in a)
    assert resumed["final"] == full["final"] and resumed["restarted_codes"] == full["restarted_codes"]
    assert other["final"] != full["final"]
    # the resumed log reads like one run: every step once, in order
    log = [json.loads(line) for line in (tmp_path / "c.run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == list(range(1, 13))


def test_resume_refuses_other_settings(data, tmp_path):
    out = tmp_path / "t.safetensors"
    train_tokenizer(data, out, steps=6, seed=0, stop_after=3, **RUN)
    with pytest.raises(ConfigError, match="lr"):
        train_tokenizer(data, out, steps=6, seed=0, resume=True, **{**RUN, "lr": 1e-3})


def test_bad_inputs_raise_clear_errors(data, tmp_path):
    with pytest.raises(DataError, match="frame_size"):
        train_tokenizer(data, tmp_path / "t.safetensors", steps=2, **{**RUN, "frame_size": (72, 72)})
    with pytest.raises(ConfigError, match=".safetensors"):
        train_tokenizer(data, tmp_path / "t.pt", steps=2, **RUN)
    with pytest.raises(ConfigError, match="steps"):
        train_tokenizer(data, tmp_path / "t.safetensors", steps=0, **RUN)


def test_restart_dead_codes_reseeds_only_unused_codes_from_latents():
    codebook = torch.arange(12.0).reshape(6, 2)
    before = codebook.clone()
    usage = torch.tensor([3, 0, 1, 0, 0, 7])
    latents = torch.randn(10, 2) + 100.0
    n = restart_dead_codes(codebook, usage, latents, torch.Generator().manual_seed(0))
    assert n == 3
    for code in (0, 2, 5):
        assert torch.equal(codebook[code], before[code])
    new = codebook[[1, 3, 4]]
    # each re-seeded code is one of the latents, and (enough latents) no latent is used twice
    matches = (new[:, None, :] == latents[None]).all(-1)
    assert (matches.sum(1) == 1).all() and len(set(matches.int().argmax(1).tolist())) == 3
    assert restart_dead_codes(codebook, torch.ones(6, dtype=torch.long), latents, torch.Generator()) == 0


def test_evaluate_tokenizer_matches_the_metric_definitions(data):
    tokenizer = VQTokenizer(VQ, (SIZE, SIZE)).eval()
    frames = gather_frames(ShardDataset(data), np.array([0]))[:10]
    result = evaluate_tokenizer(tokenizer, frames, batch_size=4)
    ids = tokenizer.tokenize(torch.from_numpy(frames))
    recon = tokenizer.detokenize(ids).numpy().astype(np.float64)
    mse = ((recon - frames.astype(np.float64)) ** 2).reshape(10, -1).mean(1)
    assert result["psnr"] == pytest.approx(np.mean(10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))), rel=1e-5)
    assert result["mae"] == pytest.approx(np.abs(recon - frames).mean(), rel=1e-5)
    again = tokenizer.tokenize(torch.from_numpy(recon.astype(np.uint8)))
    assert result["stable_tokens"] == pytest.approx((again == ids).float().mean().item(), rel=1e-6)
    assert result["stable_frames"] == pytest.approx((again == ids).flatten(1).all(1).float().mean().item())
    counts = np.bincount(ids.flatten().numpy(), minlength=64)
    p = counts[counts > 0] / counts.sum()
    assert result["used_codes"] == (counts > 0).sum()
    assert result["perplexity"] == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-6)


def test_gather_frames_concatenates_episodes_in_order(data):
    dataset = ShardDataset(data)
    episodes = np.array([0, 2, 3])
    expected = np.concatenate([dataset.episode(int(e)).frames for e in episodes])
    np.testing.assert_array_equal(gather_frames(dataset, episodes), expected)
    rows = np.array([0, 5, len(expected) - 1])
    np.testing.assert_array_equal(gather_frames(dataset, episodes, rows), expected[rows])


def test_split_and_schedule():
    train, val = split_episodes(20, 0.1, seed=4)
    assert len(val) == 2 and sorted(np.concatenate([train, val]).tolist()) == list(range(20))
    assert np.array_equal(val, split_episodes(20, 0.1, seed=4)[1])
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = cosine_with_warmup(optimizer, warmup=4, total=14, min_ratio=0.1)
    lrs = []
    for _ in range(14):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert lrs[9] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * 0.5)))
    assert lrs[14] == pytest.approx(0.1)


def test_cli_train_group_trains_a_tokenizer(data, tmp_path):
    parser = argparse.ArgumentParser(prog="rlir")
    subparsers = parser.add_subparsers(dest="command", required=True)
    register(subparsers)
    train_group = next(a for a in subparsers.choices["train"]._actions if isinstance(a, argparse._SubParsersAction))
    assert set(train_group.choices) == {"tokenizer", "worldmodel", "nfd", "idm", "reward-head"}

    out = tmp_path / "cli.safetensors"
    vq_path = tmp_path / "vq.json"
    vq_path.write_text(json.dumps(VQ))
    args = parser.parse_args([
        "train", "tokenizer", "--data", str(data), "--out", str(out), "--vq-config", str(vq_path), "--steps", "3",
        "--batch-size", "2", "--eval-frames", "8", "--no-progress",
    ])  # fmt: skip
    assert args.func(args) == 0
    assert load_tokenizer(out).grid == (9, 9)
