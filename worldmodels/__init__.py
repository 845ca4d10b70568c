"""World models: action domains and codecs, model architectures behind one protocol, samplers, checkpoints, registry,
training, and the runtime helpers every layer shares.

Public names load on first use, so ``import worldmodels`` does not import torch::

    from worldmodels import load_world_model, get_domain
    model = load_world_model("crafter-mineworld")
"""

from __future__ import annotations

from worldmodels.runtime.exports import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    # actions: the one definition of an action per domain
    "ActionDomain": "worldmodels.actions",
    "get_domain": "worldmodels.actions",
    # the protocol envs, the evaluator and the post-trainer drive
    "ModelSpec": "worldmodels.protocol",
    "WorldModel": "worldmodels.protocol",
    # architectures
    "MineWorld": "worldmodels.mineworld",
    "MineWorldConfig": "worldmodels.mineworld",
    "SamplingConfig": "worldmodels.mineworld",
    "NFD": "worldmodels.nfd",
    "NFDConfig": "worldmodels.nfd",
    "NFDSampling": "worldmodels.nfd",
    # registry
    "load_world_model": "worldmodels.registry",
    "registered": "worldmodels.registry",
    "resolve_checkpoint_path": "worldmodels.registry",
    "rlir_home": "worldmodels.registry",
    # errors
    **{name: "worldmodels.errors" for name in (
        "RlirError", "ActionError", "FrameError", "DataError", "CheckpointError", "ConfigError", "IntegrityError",
        "NumericalError", "MissingFileError",
    )},  # fmt: skip
}

__all__ = ["__version__", *sorted(_EXPORTS)]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
