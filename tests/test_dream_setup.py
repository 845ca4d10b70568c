"""Shared pieces of the tests/test_dream_*.py files (no tests here): a small real Crafter recording at 36 px, a tiny
Crafter-domain MineWorld at the same size (the architecture of the bundled model, random weights), and heads
trained for a few steps on the recording. Test modules import the fixtures by name."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from rlir_env.crafter.record import record
from worldmodels.mineworld import MineWorld
from worldmodels.training.worldmodel import crafter_ar_config

SIZE = 36  # 9 x 9 Crafter tiles of 4 px: the smallest size NatureCNN takes
VQ = {
    "_class_name": "VQModel", "act_fn": "silu", "block_out_channels": [8, 8, 16],
    "down_block_types": ["DownEncoderBlock2D"] * 3, "up_block_types": ["UpDecoderBlock2D"] * 3, "in_channels": 3,
    "out_channels": 3, "latent_channels": 4, "layers_per_block": 1, "norm_num_groups": 4, "norm_type": "group",
    "num_vq_embeddings": 32, "vq_embed_dim": None, "mid_block_add_attention": False, "lookup_from_codebook": True,
    "force_upcast": True, "scaling_factor": 0.18215, "sample_size": SIZE,
}  # fmt: skip
"""A tiny VQ: 36 x 36 frames -> 9 x 9 tokens (downsampling 4), 32 codes."""


def tiny_crafter_model(seed: int = 0) -> MineWorld:
    """A Crafter-domain MineWorld (``crafter_ar_config`` at 36 px, 1 layer of 32) with seeded random weights."""
    config = replace(crafter_ar_config(hidden=32, layers=1, heads=2, kv_heads=1, codebook=32, context_frames=4,
                                       name="crafter-tiny"), frame_size=(SIZE, SIZE))  # fmt: skip
    torch.manual_seed(seed)
    return MineWorld.from_config(config, VQ).eval()


@pytest.fixture(scope="session")
def crafter_data(tmp_path_factory) -> Path:
    """400 frames of real Crafter at 36 px (mixture policy), two shards, episodes of at most 120 steps."""
    root = tmp_path_factory.mktemp("dream-crafter36")
    record(root, n_frames=400, shard_frames=200, seed=5, size=SIZE, episode_length=120)
    return root


@pytest.fixture(scope="session")
def heads_file(crafter_data, tmp_path_factory) -> Path:
    """Heads trained for a few steps on ``crafter_data`` (their predictions are arbitrary but fixed)."""
    from rlir.agents.reward_heads import train_heads

    path = tmp_path_factory.mktemp("dream-heads") / "heads.safetensors"
    train_heads(crafter_data, path, steps=10, batch_size=16, val_transitions=64, eval_every=0, progress=False)
    return path


@pytest.fixture(scope="session")
def tiny_model() -> MineWorld:
    return tiny_crafter_model()
