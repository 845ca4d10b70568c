"""Bootstrap confidence intervals over items (clips), deterministic for a given seed.

Every resample draws ``n_items`` item indices with replacement from ``numpy.random.default_rng(seed)`` (one
``integers(0, n_items, size=(n_resamples, n_items))`` call, so all helpers here see the same resamples for the same
seed); the interval is the percentile interval ``[q(alpha / 2), q(1 - alpha / 2)]`` of the resampled statistic
(``np.percentile``, linear interpolation), ``alpha = 1 - confidence``.

The confusion and mean helpers are fully vectorised: a resample is a vector of item counts, so the summed
confusion counts of all resamples are one matrix product.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike

from evaluation.metrics.action import METRIC_NAMES, as_item_confusions, classification_scores
from evaluation.metrics.taxonomy import MINECRAFT_TAXONOMY, Taxonomy
from worldmodels.errors import ConfigError, DataError


def resample_indices(n_items: int, *, n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """``int64[n_resamples, n_items]`` bootstrap draws (with replacement)."""
    if n_items < 1:
        raise DataError(f"bootstrap needs at least one item, got n_items={n_items}")
    if n_resamples < 1:
        raise ConfigError(f"n_resamples must be >= 1, got {n_resamples}")
    return np.random.default_rng(seed).integers(0, n_items, size=(n_resamples, n_items))


def _percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
    alpha = 1.0 - confidence
    low, high = np.percentile(samples, [100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)])
    return float(low), float(high)


def bootstrap_ci(
    n_items: int,
    statistic: Callable[[np.ndarray], float],
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    vectorized: bool = False,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over items.

    Args:
        n_items: number of items to resample.
        statistic: maps an ``int64[n_items]`` array of item indices (one resample) to a number; with
            ``vectorized=True`` it maps all resamples ``int64[n_resamples, n_items]`` to ``[n_resamples]`` at once.
        n_resamples: number of bootstrap resamples.
        confidence: coverage of the interval.
        seed: seed of ``numpy.random.default_rng``.
        vectorized: see ``statistic``.

    Returns:
        ``(low, high)``.
    """
    indices = resample_indices(n_items, n_resamples=n_resamples, seed=seed)
    if vectorized:
        samples = np.asarray(statistic(indices), dtype=np.float64)
        if samples.shape != (n_resamples,):
            raise DataError(f"a vectorized statistic must return shape ({n_resamples},), got {samples.shape}")
    else:
        samples = np.array([statistic(row) for row in indices], dtype=np.float64)
    if not np.all(np.isfinite(samples)):
        raise DataError("the bootstrap statistic returned non-finite values; check it on small resamples")
    return _percentile_interval(samples, confidence)


def resample_counts(indices: np.ndarray, n_items: int) -> np.ndarray:
    """``[R, n]`` index draws -> ``float64[R, n_items]`` how often each item was drawn in each resample."""
    rows = np.repeat(np.arange(indices.shape[0]), indices.shape[1])
    counts = np.bincount(rows * n_items + indices.ravel(), minlength=indices.shape[0] * n_items)
    return counts.reshape(indices.shape[0], n_items).astype(np.float64)


def bootstrap_mean_ci(
    values: ArrayLike, *, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Bootstrap interval of the mean of per-item values (e.g. ``per_item`` PSNR, per-clip camera loss)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise DataError(f"per-item values must be 1-D, got shape {v.shape}")

    def mean(indices: np.ndarray) -> np.ndarray:
        return resample_counts(indices, len(v)) @ v / len(v)

    return bootstrap_ci(len(v), mean, n_resamples=n_resamples, confidence=confidence, seed=seed, vectorized=True)


def cluster_bootstrap_mean(
    values: ArrayLike, clusters: ArrayLike, *, n_resamples: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of per-item ``values`` and its 95% interval, resampling whole ``clusters`` (e.g. the episodes frames come
    from, whose frames are not independent): each resample's mean is its drawn clusters' value sum over their item
    count."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or np.shape(clusters) != v.shape or len(v) == 0:
        raise DataError(f"need 1-D values with one cluster id each, got shapes {v.shape} and {np.shape(clusters)}")
    ids, inverse = np.unique(clusters, return_inverse=True)
    sums, counts = np.bincount(inverse, weights=v), np.bincount(inverse)
    draws = np.random.default_rng(seed).integers(0, len(ids), size=(n_resamples, len(ids)))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    return float(v.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def resampled_task_means(
    confusions: ArrayLike, indices: np.ndarray, taxonomy: Taxonomy = MINECRAFT_TAXONOMY, metric: str = "f1_macro"
) -> np.ndarray:
    """``metric`` averaged over the discrete tasks, for every resample of items: ``float64[R]``.

    Each resample's confusion counts are the count-weighted sum of the per-item counts, so this equals
    ``metrics_from_confusion(confusions[row].sum(0))["metric_mean_on_task"][metric]`` for every row of ``indices``.
    """
    return resampled_task_scores(confusions, indices, taxonomy, metric).mean(axis=-1)


def resampled_task_scores(
    confusions: ArrayLike, indices: np.ndarray, taxonomy: Taxonomy = MINECRAFT_TAXONOMY, metric: str = "f1_macro"
) -> np.ndarray:
    """``metric`` of each discrete task (``taxonomy.discrete_indices`` order), for every resample: ``float64[R, T]``."""
    if metric not in METRIC_NAMES:
        raise ConfigError(f"unknown metric {metric!r}; choose one of {list(METRIC_NAMES)}")
    conf = as_item_confusions(confusions, taxonomy)
    discrete = conf[:, taxonomy.discrete_indices]
    weights = resample_counts(indices, len(conf))
    summed = np.rint(weights @ discrete.reshape(len(conf), -1)).astype(np.int64)
    summed = summed.reshape((len(weights),) + discrete.shape[1:])
    return classification_scores(summed)[metric]


def bootstrap_confusion_ci(
    confusions: ArrayLike,
    taxonomy: Taxonomy = MINECRAFT_TAXONOMY,
    *,
    metric: str = "f1_macro",
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap interval over items of a task-averaged action metric (default: the primary metric, mean macro-F1).

    Args:
        confusions: per-item counts ``[N, n_tasks, K, K]`` from ``confusion_counts``.
        taxonomy: the task definition.
        metric: one of ``METRIC_NAMES``.
    """
    conf = as_item_confusions(confusions, taxonomy)

    def statistic(indices: np.ndarray) -> np.ndarray:
        return resampled_task_means(conf, indices, taxonomy, metric)

    return bootstrap_ci(
        len(conf), statistic, n_resamples=n_resamples, confidence=confidence, seed=seed, vectorized=True
    )
