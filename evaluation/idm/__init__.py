"""Inverse dynamics models: read the actions back from (generated) video.

Names are imported lazily (PEP 562): importing the package does not load torch.
"""

from __future__ import annotations

from worldmodels.runtime.exports import lazy_exports

_EXPORTS = {
    "InverseDynamicsModel": "evaluation.idm.base",
    "CrafterIDM": "evaluation.idm.crafter",
    "CrafterIDMConfig": "evaluation.idm.crafter",
    "resize_linear_uint8": "worldmodels.data.resize",
    "IDM_BUTTONS": "evaluation.idm.vpt",
    "VPTIDMConfig": "evaluation.idm.vpt",
    "VPTInverseDynamicsModel": "evaluation.idm.vpt",
    "argmax_agreement": "evaluation.idm.vpt",
    "window_plan": "evaluation.idm.vpt",
    "load_idm": "evaluation.idm.registry",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
