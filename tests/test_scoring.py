"""evaluation.scoring: one path from frames through an IDM to labels, per-frame scores and a bundle's metrics, shared
by the evaluator and RLIR's reward. Checked on real Crafter frames (the bundled suite's ground truth) with the bundled
IDMs."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.idm.registry import HELDOUT_IDM, REWARD_IDM, load_idm
from evaluation.metrics.action import rlir_frame_reward
from evaluation.metrics.taxonomy import CRAFTER_TAXONOMY, MINECRAFT_TAXONOMY
from evaluation.scoring import (
    commanded_labels,
    compute_metrics,
    frame_agreement,
    idm_input,
    score_frames,
    score_item,
    target_actions,
    taxonomy_for,
)
from evaluation.suites import CRAFTER_SUITE, load_suite
from posttrain.rewards import IDMReward, compute_rewards
from worldmodels.actions import minecraft
from worldmodels.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def suite():
    return load_suite(CRAFTER_SUITE)


@pytest.fixture(scope="module")
def items(suite):
    return [suite[i] for i in range(6)]


def _rollout_frames(items) -> np.ndarray:
    """What a rollout hands the reward: the real context frame, then the (here: real) frames that followed."""
    return np.stack([np.concatenate([item.context_frames[-1:], item.ground_truth]) for item in items])


@pytest.mark.parametrize("idm_name", [REWARD_IDM, HELDOUT_IDM])
def test_the_reward_is_the_benchmark_score_of_the_same_real_frames(suite, items, idm_name):
    idm = load_idm(idm_name)
    taxonomy = taxonomy_for(suite)
    frames = _rollout_frames(items)
    actions = np.stack([item.actions for item in items])
    rewards = compute_rewards(IDMReward(idm, taxonomy), frames, actions, items)
    records = [score_item(item, item.ground_truth, 0, idm=idm, taxonomy=taxonomy, domain=suite.domain,
                          video_metrics=False) for item in items]  # fmt: skip
    for reward, record in zip(rewards, records):
        benchmark = frame_agreement(np.array(record.gt_labels), np.array(record.pred_labels), taxonomy)
        assert np.array_equal(reward, benchmark)
    # a bundle's reward_mean averages the same per-frame values (items of equal length: the mean of everything)
    assert compute_metrics(records, taxonomy.name).reward_mean == pytest.approx(rewards.mean(), rel=1e-12)
    # and the real game is read back well, so the check is not vacuous (all-zero or all-one rewards)
    assert 0.5 < rewards.mean() < 1.0


def test_score_frames_pairs_the_idm_reading_with_the_command(suite, items):
    idm = load_idm(HELDOUT_IDM)
    frames = _rollout_frames(items)
    commanded = commanded_labels(CRAFTER_TAXONOMY, "crafter", np.stack([item.actions for item in items]), items)
    scores = score_frames(idm, CRAFTER_TAXONOMY, frames[:, :1], frames[:, 1:], commanded)
    assert np.array_equal(scores.predicted, idm.predict_actions(frames))  # the context frame is read too
    assert np.array_equal(scores.recovered, CRAFTER_TAXONOMY.labels(scores.predicted))
    assert scores.commanded is commanded
    assert frame_agreement(scores.commanded, scores.recovered, CRAFTER_TAXONOMY).shape == (len(items), suite.n_frames)
    with pytest.raises(DataError, match=r"labelled \[6, 15\] frames, the commanded actions are \[6, 14\]"):
        score_frames(idm, CRAFTER_TAXONOMY, frames[:, :1], frames[:, 1:], commanded[:, :14])


def test_idm_input_takes_as_many_real_frames_as_the_idm_reads():
    class Reader:
        name, domain, sha256 = "reader", "crafter", None

        def __init__(self, context_frames):
            self.context_frames = context_frames

    rng = np.random.default_rng(0)
    context = rng.integers(0, 256, (2, 3, 4, 4, 3), dtype=np.uint8)
    generated = rng.integers(0, 256, (2, 5, 4, 4, 3), dtype=np.uint8)
    assert idm_input(Reader(0), context, generated) is generated
    assert np.array_equal(idm_input(Reader(1), context, generated), np.concatenate([context[:, 2:], generated], 1))
    assert np.array_equal(idm_input(Reader(3), context, generated), np.concatenate([context, generated], 1))
    with pytest.raises(ConfigError, match="reads 4 real frames before the generated ones, only 3 are given"):
        idm_input(Reader(4), context, generated)


def test_commanded_labels_of_minecraft_compact_actions_and_of_items():
    rng = np.random.default_rng(1)
    compact = np.stack([rng.integers(0, n, (2, 3)) for n in (21, 21, 10, 3, 3, 3, 3, 2, 3)], axis=-1)
    labels = commanded_labels(MINECRAFT_TAXONOMY, "minecraft", compact)
    assert labels.shape == (2, 3, MINECRAFT_TAXONOMY.n_tasks)
    assert np.array_equal(labels[1], MINECRAFT_TAXONOMY.labels(minecraft.from_compact(compact[1])))

    class Item:  # a suite item without recorded env actions: scored against its compact actions
        score_actions = None

        def __init__(self, actions):
            self.actions = actions

    items = [Item(np.concatenate([compact[b], compact[b, :1]])) for b in range(2)]  # one frame longer: cut to F
    assert np.array_equal(commanded_labels(MINECRAFT_TAXONOMY, "minecraft", compact, items), labels)
    assert np.array_equal(MINECRAFT_TAXONOMY.labels(target_actions(items[0], "minecraft"))[:3], labels[0])


def test_frame_agreement_is_the_rlir_frame_reward():
    rng = np.random.default_rng(2)
    gt = np.stack([rng.integers(0, task.n_classes, (3, 5)) for task in MINECRAFT_TAXONOMY.tasks], axis=-1)
    pred = np.where(rng.random(gt.shape) < 0.7, gt, 0)
    for include_camera in (True, False):
        for exact in (True, False):
            assert np.array_equal(
                frame_agreement(gt, pred, MINECRAFT_TAXONOMY, include_camera=include_camera, exact=exact),
                rlir_frame_reward(gt, pred, MINECRAFT_TAXONOMY, include_camera=include_camera, exact=exact),
            )
