"""Small real world models for tests (the same MineWorld code path as the official and bundled models)."""

from __future__ import annotations

import numpy as np
import torch

from rlir_env.scenes import Scene
from worldmodels.mineworld import TINY_VQ_CONFIG, MineWorld, get_preset


def tiny_mineworld(seed: int = 0) -> MineWorld:
    """The ``tiny`` preset (32x48 frames, 4x6 tokens, Minecraft actions) with seeded random weights."""
    torch.manual_seed(seed)
    model = MineWorld.from_config(get_preset("tiny"), TINY_VQ_CONFIG)
    model.tokenizer.chunk = 1  # pixel-exact batch independence (conv kernels depend on the batch size)
    return model.eval()


def tiny_scenes(model: MineWorld, n: int = 3, seed: int = 0) -> list[Scene]:
    """Random single-frame start scenes at the model's native size."""
    rng = np.random.default_rng(seed)
    h, w = model.spec.frame_size
    empty = np.zeros((0, 9), dtype=np.int64)
    return [Scene(frames=rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8), actions=empty) for _ in range(n)]
