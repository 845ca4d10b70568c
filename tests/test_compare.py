"""Paired comparison of result bundles (`evaluation.compare`, `rlir eval compare`) on the shipped seed bundles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evaluation.bundle import load_bundle
from evaluation.compare import compare_bundles
from evaluation.metrics.action import confusion_counts, metrics_from_confusion
from evaluation.metrics.stats import resample_indices
from evaluation.metrics.taxonomy import get_taxonomy
from rlir.cli import main
from worldmodels.errors import DataError

SEEDS = Path(__file__).resolve().parents[1] / "leaderboard" / "seed_bundles"


@pytest.fixture(scope="module")
def bundles():
    return load_bundle(SEEDS / "crafter-mineworld-v1.json"), load_bundle(SEEDS / "crafter-mineworld.json")


def test_each_side_is_the_bundle_own_number(bundles):
    a, b = bundles
    rows = {row.metric: row for row in compare_bundles(a, b, n_resamples=200)}
    for bundle, side in ((a, "a"), (b, "b")):
        assert getattr(rows["mean_macro_f1"], side) == pytest.approx(bundle.metrics.primary.value, abs=1e-12)
        for task, scores in bundle.metrics.tasks.items():
            assert getattr(rows[f"f1_macro/{task}"], side) == pytest.approx(scores["f1_macro"], abs=1e-12)
        assert getattr(rows["psnr"], side) == pytest.approx(bundle.metrics.psnr["mean"], rel=1e-9)
        assert getattr(rows["ssim"], side) == pytest.approx(bundle.metrics.ssim["mean"], rel=1e-9)
    assert rows["mean_macro_f1"].difference == pytest.approx(b.metrics.primary.value - a.metrics.primary.value)


def test_the_interval_is_the_paired_bootstrap_of_the_definition(bundles):
    """Resample item indices once, score both bundles on the same draw with the pooled-confusion definition."""
    a, b = bundles
    taxonomy = get_taxonomy(a.taxonomy)
    order = {item.id: k for k, item in enumerate(b.items)}
    pairs = [(item, b.items[order[item.id]]) for item in a.items]

    def confusions(side):
        return np.stack([confusion_counts(np.asarray(p[side].gt_labels)[None], np.asarray(p[side].pred_labels)[None],
                                          taxonomy)[0] for p in pairs])  # fmt: skip

    conf_a, conf_b = confusions(0), confusions(1)
    draws = resample_indices(len(pairs), n_resamples=200, seed=3)
    differences = [metrics_from_confusion(conf_b[row].sum(0), taxonomy)["metric_mean_on_task"]["f1_macro"]
                   - metrics_from_confusion(conf_a[row].sum(0), taxonomy)["metric_mean_on_task"]["f1_macro"]
                   for row in draws]  # fmt: skip
    row = compare_bundles(a, b, n_resamples=200, seed=3)[0]
    assert row.metric == "mean_macro_f1"
    assert row.ci95 == pytest.approx(tuple(np.percentile(differences, [2.5, 97.5])), abs=1e-12)
    assert row.significant  # v2 beats v1 by ~0.10 on these clips


def test_a_bundle_against_itself_differs_by_exactly_zero(bundles):
    for row in compare_bundles(bundles[0], bundles[0], n_resamples=100):
        assert row.difference == 0 and row.ci95 == (0.0, 0.0) and not row.significant


def test_bundles_that_cannot_be_paired_are_refused(bundles):
    a, b = bundles
    with pytest.raises(DataError, match="different items"):
        compare_bundles(a, b.model_copy(update={"items": b.items[:-1]}))
    other_suite = b.model_copy(update={"suite": b.suite.model_copy(update={"name": "crafter-other"})})
    with pytest.raises(DataError, match="different suites"):
        compare_bundles(a, other_suite)
    other_judge = b.model_copy(update={"idm": b.idm.model_copy(update={"name": "crafter-idm-reward"})})
    with pytest.raises(DataError, match="different judge IDMs"):
        compare_bundles(a, other_judge)


def test_the_command_prints_the_table(capsys):
    assert main(["eval", "compare", str(SEEDS / "crafter-mineworld-v1.json"), str(SEEDS / "crafter-mineworld.json"),
                 "--resamples", "200"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "mean_macro_f1" in out and "A = crafter-mineworld-v1, B = crafter-mineworld" in out
    assert main(["eval", "compare", "a", "b", "--resamples", "10"]) == 2
    assert "--resamples 10 is too few" in capsys.readouterr().err
