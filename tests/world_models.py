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
    return model.eval()


def tiny_scenes(model: MineWorld, n: int = 3, seed: int = 0) -> list[Scene]:
    """Random single-frame start scenes at the model's native size."""
    rng = np.random.default_rng(seed)
    h, w = model.spec.frame_size
    empty = np.zeros((0, 9), dtype=np.int64)
    return [Scene(frames=rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8), actions=empty) for _ in range(n)]


def tiny_vpt_idm_files(directory, seed: int = 0):
    """Write a small VPT IDM in the official file formats (``.model`` plain-dict pickle + ``.weights``)."""
    import copy
    import math
    import pickle
    from pathlib import Path

    from evaluation.idm.vpt import OFFICIAL_4X_NET_KWARGS, VPTIDMConfig, expected_state_dict_shapes

    net_kwargs = copy.deepcopy(OFFICIAL_4X_NET_KWARGS) | {
        "attention_heads": 4,
        "conv3d_params": {"inchan": 3, "outchan": 8, "kernel_size": [5, 1, 1], "padding": [2, 0, 0]},
        "hidsize": 64,
        "img_shape": [128, 128, 8],
        "impala_width": 1,
    }
    shapes = expected_state_dict_shapes(VPTIDMConfig.from_net_kwargs(net_kwargs, 4))
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("bias") or 0 in shape:
            state[key] = 0.1 * torch.randn(shape, generator=gen)
        elif len(shape) == 1:
            state[key] = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        else:
            scale = 8.0 if key.startswith("pi_head") else 1.0
            state[key] = scale * torch.randn(shape, generator=gen) / math.sqrt(math.prod(shape[1:]))
    directory = Path(directory)
    model_path, weights_path = directory / "tiny_idm.model", directory / "tiny_idm.weights"
    model_dict = {"model": {"args": {"net": {"args": net_kwargs}, "pi_head_opts": {"temperature": 4}}}}
    model_path.write_bytes(pickle.dumps(model_dict))
    torch.save(state, weights_path)
    return model_path, weights_path


def tiny_minecraft_suite(model: MineWorld, n_items: int = 4, n_frames: int = 5, seed: int = 0, name: str = "tiny-mc"):
    """A small Minecraft suite at the tiny model's frame size, with ground truth and recorded env actions."""
    from evaluation.suites import SuiteItem, env_actions_to_array, make_suite
    from worldmodels.actions import minecraft

    rng = np.random.default_rng(seed)
    h, w = model.spec.frame_size
    items = []
    for i in range(n_items):
        env_actions = [
            minecraft.noop() | {key: int(rng.random() < 0.3) for key in ("forward", "back", "left", "jump", "attack")}
            | {"camera": rng.normal(0, 4, size=2)}
            for _ in range(n_frames)
        ]
        items.append(
            SuiteItem(
                id=f"clip_{i}",
                context_frames=rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8),
                context_actions=np.zeros((0, 9), dtype=np.int64),
                actions=minecraft.to_compact(env_actions),
                ground_truth=rng.integers(0, 256, (n_frames, h, w, 3), dtype=np.uint8),
                score_actions=env_actions_to_array(env_actions),
            )
        )
    return make_suite(name, 1, "minecraft", items, description="tiny test suite")


def tiny_nfd(seed: int = 0, **options):
    """The ``nfd-tiny`` preset (16x16 frames, Crafter actions) with seeded weights; the adaLN-Zero maps and the output
    layer get random values too, so that every layer acts (at the DiT initialisation the transformer outputs 0)."""
    from worldmodels.nfd import NFD, TINY_AE_CONFIG, get_preset

    torch.manual_seed(seed)
    model = NFD.from_config(get_preset("nfd-tiny"), TINY_AE_CONFIG, **options)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.transformer.named_parameters():
            if "adaLN" in name or name.startswith("final_proj"):
                p.copy_(0.1 * torch.randn(p.shape, generator=generator))
    return model.eval()
