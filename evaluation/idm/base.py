"""The interface every inverse dynamics model (IDM) offers to metrics, rewards and the leaderboard."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class InverseDynamicsModel(Protocol):
    """Reads the actions back from a batch of videos.

    Attributes:
        name: short identifier used in reports and leaderboard rows (e.g. ``"vpt-4x-idm"``).
        domain: the action domain of the predictions, a ``worldmodels.actions.get_domain`` name
            (``"minecraft"`` or ``"crafter"``).
        sha256: hex digest of the weights file the model was loaded from, or ``None`` when it was not loaded from
            a file.
        context_frames: real frames the evaluator puts before the generated ones. ``0`` for the VPT IDM (MineWorld's
            protocol scores the generated frames alone, prediction ``k`` against action ``k``); ``1`` for
            transition-aligned IDMs such as the Crafter ones (prediction ``k`` is the action that led from frame
            ``k`` to frame ``k + 1``, so the real context frame is needed to read the first generated frame).
    """

    name: str
    domain: str
    sha256: str | None
    context_frames: int

    def predict_actions(self, frames: np.ndarray) -> object:
        """Predict the action taken at every frame.

        Args:
            frames: ``uint8[B, T, H, W, 3]`` RGB videos (any ``H, W``; the model resizes).

        Returns:
            Domain actions for every frame: for ``"minecraft"`` a ``B``-long list of ``T``-long lists of MineRL
            action dicts (24 keys, see ``worldmodels.actions.minecraft``); for ``"crafter"`` compact
            ``int64[B, T]`` action ids.
        """
        ...
