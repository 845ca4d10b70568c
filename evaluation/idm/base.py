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
    """

    name: str
    domain: str
    sha256: str | None

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
