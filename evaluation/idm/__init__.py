"""Inverse dynamics models: read the actions back from (generated) video."""

from __future__ import annotations

from evaluation.idm.base import InverseDynamicsModel
from evaluation.idm.crafter import CrafterIDM, CrafterIDMConfig
from evaluation.idm.resize import resize_linear_uint8
from evaluation.idm.vpt import IDM_BUTTONS, VPTIDMConfig, VPTInverseDynamicsModel, argmax_agreement, window_plan

__all__ = [
    "CrafterIDM",
    "CrafterIDMConfig",
    "IDM_BUTTONS",
    "InverseDynamicsModel",
    "VPTIDMConfig",
    "VPTInverseDynamicsModel",
    "argmax_agreement",
    "resize_linear_uint8",
    "window_plan",
]
