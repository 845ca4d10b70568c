"""Paired comparison of two result bundles on the same suite: is model B better than model A, clip for clip?

Two bundles scored on the same suite items share each item's action script and world, so the per-item differences
vary far less than either model's score: a paired bootstrap (the *same* resampled items for both bundles) gives a much
narrower interval for ``B - A`` than the two bundles' own intervals suggest. Every number is recomputed from the
per-item records (as the leaderboard verifies them), so only bundles of the same suite, taxonomy and judge IDM can be
compared.

    from evaluation.compare import compare_bundles
    for row in compare_bundles(load_bundle("runs/base"), load_bundle("runs/rlir")):
        print(row.metric, row.difference, row.ci95)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evaluation.bundle import ResultBundle
from evaluation.metrics.action import confusion_counts
from evaluation.metrics.stats import resample_counts, resample_indices, resampled_task_scores
from evaluation.metrics.taxonomy import get_taxonomy
from worldmodels.errors import DataError


@dataclass(frozen=True)
class PairedDifference:
    """One metric of bundles A and B and the paired bootstrap interval of ``B - A``."""

    metric: str
    a: float
    b: float
    difference: float
    ci95: tuple[float, float]

    @property
    def significant(self) -> bool:
        """True when the 95% interval of ``B - A`` excludes 0."""
        return self.ci95[0] > 0 or self.ci95[1] < 0


def _check_comparable(a: ResultBundle, b: ResultBundle) -> None:
    for what, left, right in (("suite", (a.suite.name, a.suite.sha256), (b.suite.name, b.suite.sha256)),
                              ("taxonomy", a.taxonomy, b.taxonomy),
                              ("judge IDM", (a.idm.name, a.idm.sha256), (b.idm.name, b.idm.sha256))):  # fmt: skip
        if left != right:
            raise DataError(f"the bundles were scored with different {what}s ({left} vs {right}); a paired "
                            f"comparison needs the same {what}: score both with `rlir eval` on the same settings")  # fmt: skip
    ids_a, ids_b = [item.id for item in a.items], [item.id for item in b.items]
    if sorted(ids_a) != sorted(ids_b):
        only = sorted(set(ids_a) ^ set(ids_b))
        raise DataError(f"the bundles hold different items ({len(only)} in one only, e.g. {only[:3]}); compare bundles "
                        "of the full suite (no --items)")  # fmt: skip


def compare_bundles(
    a: ResultBundle, b: ResultBundle, *, n_resamples: int = 1000, seed: int = 0
) -> list[PairedDifference]:
    """``B - A`` for the primary metric (mean macro-F1 over the taxonomy's tasks), each task's macro-F1, PSNR and
    SSIM (when both bundles have them), with 95% percentile intervals from ``n_resamples`` paired bootstrap resamples
    of the items.

    Raises:
        DataError: the bundles differ in suite, taxonomy, judge IDM or items.
    """
    _check_comparable(a, b)
    taxonomy = get_taxonomy(a.taxonomy)
    by_id = {item.id: item for item in b.items}
    pairs = [(item, by_id[item.id]) for item in a.items]
    n = len(pairs)
    draws = resample_indices(n, n_resamples=n_resamples, seed=seed)

    def task_f1(side: int) -> tuple[np.ndarray, np.ndarray]:
        """Macro-F1 per discrete task of the full bundle ``[T]`` and of every resample ``[R, T]``."""
        conf = np.stack([confusion_counts(np.asarray(p[side].gt_labels)[None], np.asarray(p[side].pred_labels)[None],
                                          taxonomy)[0] for p in pairs])  # fmt: skip
        return resampled_task_scores(conf, np.arange(n)[None], taxonomy)[0], resampled_task_scores(conf, draws, taxonomy)

    (full_a, boot_a), (full_b, boot_b) = task_f1(0), task_f1(1)
    rows = [_row("mean_macro_f1", full_a.mean(), full_b.mean(), boot_b.mean(1) - boot_a.mean(1))]
    for t, index in enumerate(taxonomy.discrete_indices):
        rows.append(_row(f"f1_macro/{taxonomy.tasks[index].key}", full_a[t], full_b[t], boot_b[:, t] - boot_a[:, t]))
    for name in ("psnr", "ssim"):
        if any(getattr(p[side], name) is None for p in pairs for side in (0, 1)):
            continue
        per_item = np.array([[np.mean(getattr(p[side], name)) for side in (0, 1)] for p in pairs])
        boot = resample_counts(draws, n) @ per_item / n
        rows.append(_row(name, per_item[:, 0].mean(), per_item[:, 1].mean(), boot[:, 1] - boot[:, 0]))
    return rows


def _row(metric: str, a: float, b: float, differences: np.ndarray) -> PairedDifference:
    low, high = np.percentile(differences, [2.5, 97.5])
    return PairedDifference(metric, float(a), float(b), float(b - a), (float(low), float(high)))
