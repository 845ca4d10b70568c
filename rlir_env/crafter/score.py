"""The official Crafter score: a geometric mean of per-achievement success rates with a 1 % offset.

Crafter's paper and ``analysis/common.py`` (``compute_scores``) score an agent by the success rate of each of the 22
achievements (percent of episodes in which it was unlocked at least once) and combine them as
``exp(nanmean(log(1 + p))) - 1`` with ``p`` in percent, so that rare achievements count as much as common ones.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

from rlir_env.crafter.env import ACHIEVEMENTS
from worldmodels.errors import DataError

__all__ = ["crafter_score", "success_rates"]


def crafter_score(success_rates_percent: ArrayLike) -> float | np.ndarray:
    """Crafter score (percent) of success rates ``[..., achievements]`` given in percent, NaN entries ignored.

    Returns a float for a 1-D input, else an array over the leading dimensions. A row that is all NaN scores NaN.

    Raises:
        DataError: a rate is outside ``[0, 100]`` (rates in ``[0, 1]`` must be multiplied by 100 first) or the
            input is a scalar.
    """
    percents = np.asarray(success_rates_percent, dtype=np.float64)
    if percents.ndim == 0:
        raise DataError("crafter_score needs one success rate per achievement (an array), got a scalar")
    known = percents[~np.isnan(percents)]
    if ((known < 0) | (known > 100)).any():
        bad = known[(known < 0) | (known > 100)][0]
        raise DataError(f"crafter_score takes success rates in percent, [0, 100]; got {bad}")
    with warnings.catch_warnings():  # an all-NaN row is a legitimate "no data" and scores NaN
        warnings.simplefilter("ignore", category=RuntimeWarning)
        scores = np.exp(np.nanmean(np.log1p(percents), axis=-1)) - 1
    return float(scores) if scores.ndim == 0 else scores


def success_rates(
    episode_achievements: Iterable[Mapping[str, int]], names: Sequence[str] = ACHIEVEMENTS
) -> dict[str, float]:
    """Percent of episodes in which each achievement happened at least once.

    ``episode_achievements`` holds one ``info["achievements"]`` dict (counts) per finished episode; a name missing
    from a dict counts as 0.

    Raises:
        DataError: no episodes were given.
    """
    counts = np.array([[episode.get(name, 0) for name in names] for episode in episode_achievements], dtype=np.int64)
    if counts.shape[0] == 0:
        raise DataError("success_rates needs at least one finished episode's achievements, got none")
    return {name: float(100.0 * rate) for name, rate in zip(names, (counts >= 1).mean(axis=0))}
