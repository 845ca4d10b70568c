"""NFD (Next-Frame Diffusion, arXiv 2506.01380): a continuous-latent frame autoencoder and a block-causal diffusion
transformer trained by flow matching with per-frame noise levels, sampled frame by frame with a KV cache.

NFD released no code or weights; this is our implementation of the method as described (``mineworld.md`` §12), with
RLIR's two sizes as presets (``nfd-310m``, ``nfd-774m``) and small Crafter/test configs. ``NFD`` implements the
:class:`~worldmodels.protocol.WorldModel` protocol, so it runs in the same envs, evaluator and post-trainer hooks as
MineWorld.
"""

from __future__ import annotations

from worldmodels.nfd.autoencoder import CRAFTER_AE_CONFIG, MINECRAFT_AE_CONFIG, TINY_AE_CONFIG, FrameAutoencoder
from worldmodels.nfd.config import PRESETS, NFDConfig, get_preset
from worldmodels.nfd.model import NFD, NFDState, is_nfd_checkpoint, load_nfd, save_nfd
from worldmodels.nfd.sampling import SAMPLERS, FlowSolver, NFDSampling, time_grid
from worldmodels.nfd.transformer import KVCache, NFDTransformer

__all__ = [
    "CRAFTER_AE_CONFIG",
    "FlowSolver",
    "FrameAutoencoder",
    "KVCache",
    "MINECRAFT_AE_CONFIG",
    "NFD",
    "NFDConfig",
    "NFDSampling",
    "NFDState",
    "NFDTransformer",
    "PRESETS",
    "SAMPLERS",
    "TINY_AE_CONFIG",
    "get_preset",
    "is_nfd_checkpoint",
    "load_nfd",
    "save_nfd",
    "time_grid",
]
