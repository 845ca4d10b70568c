"""MineWorld (``microsoft/mineworld``): an autoregressive Llama world model over VQ image and action tokens.

``MineWorld.from_checkpoint`` loads official ``.ckpt`` files as they are; ``MineWorld.from_config`` builds any
size (e.g. a small Crafter model: frame size, token grid and action domain all come from the config).
"""

from __future__ import annotations

from worldmodels.mineworld.checkpoint import load_checkpoint, save_safetensors
from worldmodels.mineworld.config import PRESETS, MineWorldConfig, get_preset
from worldmodels.mineworld.model import ContextWindow, MineWorld, MineWorldState, context_windows
from worldmodels.mineworld.sampling import SamplingConfig
from worldmodels.mineworld.transformer import KVCache, Transformer
from worldmodels.mineworld.vq import AMUSED_VQ_CONFIG, TINY_VQ_CONFIG, VQTokenizer

__all__ = [
    "AMUSED_VQ_CONFIG",
    "ContextWindow",
    "KVCache",
    "MineWorld",
    "MineWorldConfig",
    "MineWorldState",
    "PRESETS",
    "SamplingConfig",
    "TINY_VQ_CONFIG",
    "Transformer",
    "VQTokenizer",
    "context_windows",
    "get_preset",
    "load_checkpoint",
    "save_safetensors",
]
