"""bench/action_predictability.py and bench/tokenizer_quality.py: the movement features see a one-cell shift, the
bootstrap brackets its mean, frames are grouped by daylight and sleep, and a tokenizer scores as its definition says
(from its file and from a training checkpoint alike)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from worldmodels.data.shards import write_manifest, write_shard
from worldmodels.errors import DataError
from worldmodels.mineworld.vq import TINY_VQ_CONFIG, VQTokenizer
from worldmodels.training.common import save_checkpoint
from worldmodels.training.tokenizer import save_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


predictability = _load("action_predictability")
quality = _load("tokenizer_quality")


def test_frame_features_find_a_one_cell_shift():
    rng = np.random.default_rng(0)
    prev = rng.integers(0, 256, (5, 72, 72, 3), dtype=np.uint8)
    shifts = [(0, 0), (8, 0), (-8, 0), (0, 8), (0, -8)]
    cur = np.stack([np.roll(p, s, axis=(0, 1)) for p, s in zip(prev, shifts)])
    features = predictability.frame_features(prev, cur)
    best = features[:, 5:10].argmax(axis=1)  # the one-hot of the best-matching shift
    assert best.tolist() == [0, 1, 2, 3, 4]
    assert features.shape == (5, 5 + 5 + 8 * 8 * 3 + 2 * 81 * 3) and features.dtype == np.float32


def test_bootstrap_brackets_the_mean_and_resamples_episodes():
    # the benches' interval (both score through evaluation.metrics.stats.cluster_bootstrap_mean)
    assert predictability.cluster_bootstrap_mean is quality.cluster_bootstrap_mean
    correct = np.array([1, 1, 1, 0, 0, 0, 1, 0], dtype=float)
    owners = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    mean, lo, hi = predictability.cluster_bootstrap_mean(correct, owners, seed=0)
    assert mean == 0.5 and 0.0 <= lo <= mean <= hi <= 1.0 and hi - lo > 0.2
    assert quality.cluster_bootstrap_mean(np.full(6, 3.0), np.arange(6), seed=0) == (3.0, 3.0, 3.0)


def _recording(root: Path, *, daylight: bool = True) -> None:
    rng = np.random.default_rng(1)
    n = 12
    extras = {"sleeping": np.array([0] * 8 + [1] * 4, dtype=bool), "episode_seeds": np.array([7, 8])}
    if daylight:
        extras["daylight"] = np.array([0.9, 0.6, 0.5, 0.3, 0.1, 0.2, 0.8, 1.0, 0.9, 0.2, 0.7, 0.7], np.float32)
    info = write_shard(root / "shard-00000.npz", frames=rng.integers(0, 256, (n, 32, 48, 3), dtype=np.uint8),
                       actions=np.r_[np.zeros(5), -1, np.zeros(5), -1].astype(np.int64), rewards=np.zeros(n),
                       terminated=np.zeros(n, bool), episode_starts=np.array([0, 6]), extras=extras)  # fmt: skip
    write_manifest(root, [info])


def test_frames_are_grouped_by_daylight_and_sleep(tmp_path):
    _recording(tmp_path)
    frames, groups, owners, episodes = quality.pick_frames(str(tmp_path), 100, 0, False, 0.05, 0)
    assert len(frames) == 12 and episodes.tolist() == [0, 1] and owners.tolist() == [0] * 6 + [1] * 6
    assert groups.tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 2, 2, 2, 2]  # day >= 0.5; asleep whatever the daylight
    _recording(tmp_path / "old", daylight=False)
    with pytest.raises(DataError, match="daylight"):
        quality.pick_frames(str(tmp_path / "old"), 100, 0, False, 0.05, 0)


def test_tokenizer_scores_match_their_definitions_from_file_and_checkpoint(tmp_path):
    torch.manual_seed(0)
    # calls of 16 frames, as the bench loads tokenizers: convolution kernels (and their last bits) depend on the call size
    tokenizer = VQTokenizer(TINY_VQ_CONFIG, (32, 48), chunk=16).eval()
    frames = np.random.default_rng(2).integers(0, 256, (3, 32, 48, 3), dtype=np.uint8)
    scores = quality.score(tokenizer, frames)
    x = torch.as_tensor(frames)
    ids = tokenizer.tokenize(x)
    rec = tokenizer.detokenize(ids)
    mse = (rec.float() - x.float()).pow(2).mean(dim=(1, 2, 3))
    np.testing.assert_allclose(scores["psnr"], (10 * torch.log10(255.0**2 / mse)).numpy(), rtol=1e-5)
    np.testing.assert_allclose(scores["stable_tokens"], (tokenizer.tokenize(rec) == ids).flatten(1).float().mean(1))
    assert scores["used_codes"] == len(torch.unique(ids)) and 0.0 <= scores["cells_exact"].max() <= 1.0

    path = save_tokenizer(tokenizer, tmp_path / "tok.safetensors")
    optimizer = torch.optim.AdamW(tokenizer.model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    checkpoint = save_checkpoint(tmp_path / "checkpoint.safetensors", model=tokenizer.model, optimizer=optimizer,
                                 scheduler=scheduler, step=3, run_config={"task": "tokenizer",
                                 "vq_config": TINY_VQ_CONFIG, "frame_size": [32, 48]})  # fmt: skip
    for source, expected in ((path, {"file": str(path)}), (checkpoint, {"checkpoint": str(checkpoint), "step": 3})):
        loaded, description = quality.load_any(str(source))
        assert description == expected
        np.testing.assert_array_equal(quality.score(loaded, frames)["psnr"], scores["psnr"])


def test_tokenizer_quality_cli_writes_json(tmp_path):
    _recording(tmp_path / "data")
    torch.manual_seed(0)
    path = save_tokenizer(VQTokenizer(TINY_VQ_CONFIG, (32, 48)), tmp_path / "tok.safetensors")
    quality.main([str(path), "--data", str(tmp_path / "data"), "--frames", "12", "--out", str(tmp_path / "q.json")])
    result = json.loads((tmp_path / "q.json").read_text())
    assert result["frames"] == 12 and set(result["groups"]) == {"all", "day", "night", "asleep"}
    assert result["groups"]["day"]["frames"] == 5 and len(result["groups"]["all"]["psnr"]) == 3
    groups = result["groups"]
    assert groups["all"]["used_codes"] == result["used_codes"] >= groups["day"]["used_codes"]
    assert 0 <= groups["night"]["codes_only_here"] <= groups["night"]["used_codes"]


def test_the_v2_tokenizer_config_is_one_token_per_cell_with_4096_codes():
    config = json.loads((ROOT / "scripts" / "crafter-vq-v2.json").read_text())
    tokenizer = VQTokenizer(config, (72, 72))
    assert tokenizer.grid == (9, 9) and tokenizer.codebook_size == 4096


def test_cell_patterns_count_exact_cells_and_their_coverage():
    patterns = _load("cell_patterns")
    frames = np.zeros((3, 16, 16, 3), dtype=np.uint8)
    frames[1, :8, :8] = 5  # one cell of frame 1 differs
    frames[2, 8:, 8:, 0] = np.arange(8)  # one cell of frame 2 differs from everything
    ids = patterns.cell_ids(frames, 8)
    assert ids.shape == (3, 4)
    result = patterns.coverage(ids)
    assert result["distinct_patterns"] == 3
    assert result["top_k"]["31"] == {"cells": 1.0, "frames": 1.0}
    with pytest.raises(DataError, match="cells"):
        patterns.cell_ids(np.zeros((1, 12, 16, 3), np.uint8), 8)
