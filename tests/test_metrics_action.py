"""Action metrics: MineWorld / GameWorld output structure, every number against scikit-learn, the RLIR reward and
the bootstrap helpers. Reference labels are built in the tests from the documented rules, not with the code under
test."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import f1_score, precision_recall_fscore_support, precision_score, recall_score

from evaluation.metrics import (
    GAMEWORLD_TAXONOMY,
    MINECRAFT_TAXONOMY,
    Task,
    Taxonomy,
    bootstrap_ci,
    bootstrap_confusion_ci,
    bootstrap_mean_ci,
    camera_direction,
    confusion_counts,
    gameworld_action_metrics,
    metrics_from_confusion,
    mineworld_action_metrics,
    resample_indices,
    resampled_task_means,
    rlir_frame_reward,
    rlir_trajectory_reward,
)
from worldmodels.actions.minecraft import BUTTON_KEYS
from worldmodels.errors import ActionError, DataError

TASKS = [("back", "forward"), ("left", "right"), ("sneak", "sprint"), "use", "attack", "jump", "drop"]
SIX = ["precision_micro", "recall_micro", "f1_micro", "precision_macro", "recall_macro", "f1_macro"]
# VPT IDM camera bin edges in degrees (mineworld.md 9.2): bins 0..10, zero bin 5
EDGES = np.array([-7.655, -4.358, -2.317, -1.053, -0.271, 0.271, 1.053, 2.317, 4.358, 7.655])


def random_action(rng: np.random.Generator, p: float = 0.3, zero: tuple[str, ...] = ()) -> dict:
    action = {key: int(rng.random() < p) for key in BUTTON_KEYS}
    for key in zero:
        action[key] = 0
    action["camera"] = np.round(rng.normal(0.0, 4.0, size=2), 2)
    return action


def random_clips(rng: np.random.Generator, n: int, t: int, **kwargs) -> list[list[dict]]:
    return [[random_action(rng, **kwargs) for _ in range(t)] for _ in range(n)]


def task_label(action: dict, task) -> int:
    """MineWorld's bit-string rule: '00' and '11' -> 0, '10' -> 1 (first key), '01' -> 2."""
    if isinstance(task, tuple):
        bits = f"{int(action[task[0]])}{int(action[task[1]])}"
        return {"00": 0, "10": 1, "01": 2, "11": 0}[bits]
    return int(action[task])


def camera_bin(degrees: float) -> int:
    # edges are rounded to 3 decimals; test angles stay away from them
    assert np.min(np.abs(np.abs(degrees) - np.abs(EDGES))) > 1e-3
    return int(np.searchsorted(EDGES, degrees))


def sklearn_scores(y_true, y_pred) -> dict[str, float]:
    out = {}
    for avg in ("micro", "macro"):
        out[f"precision_{avg}"] = precision_score(y_true, y_pred, average=avg, zero_division=0)
        out[f"recall_{avg}"] = recall_score(y_true, y_pred, average=avg, zero_division=0)
        out[f"f1_{avg}"] = f1_score(y_true, y_pred, average=avg, zero_division=0)
    return out


# ---------------------------------------------------------------------------------------------------------------
# taxonomy


def test_minecraft_taxonomy_tasks_and_labels():
    assert MINECRAFT_TAXONOMY.task_keys == (
        "('back', 'forward')", "('left', 'right')", "('sneak', 'sprint')", "use", "attack", "jump", "drop",
        "camera_pitch", "camera_yaw",
    )  # fmt: skip
    assert MINECRAFT_TAXONOMY.n_classes.tolist() == [3, 3, 3, 2, 2, 2, 2, 11, 11]
    assert MINECRAFT_TAXONOMY.discrete_indices.tolist() == list(range(7))
    assert MINECRAFT_TAXONOMY.camera_indices.tolist() == [7, 8]
    base = {key: 0 for key in BUTTON_KEYS} | {"camera": [0.0, 0.0]}
    cases = [
        ({"back": 1}, 0, 1), ({"forward": 1}, 0, 2), ({"back": 1, "forward": 1}, 0, 0),
        ({"left": 1}, 1, 1), ({"right": 1}, 1, 2), ({"left": 1, "right": 1}, 1, 0),
        ({"sneak": 1}, 2, 1), ({"sprint": 1}, 2, 2), ({"sneak": 1, "sprint": 1}, 2, 0),
        ({"use": 1}, 3, 1), ({"attack": 1}, 4, 1), ({"jump": 1}, 5, 1), ({"drop": 1}, 6, 1),
    ]  # fmt: skip
    for change, column, label in cases:
        labels = MINECRAFT_TAXONOMY.labels(base | change)
        assert labels.shape == (9,) and labels[column] == label, change
        assert labels[[c for c in range(7) if c != column]].tolist() == [0] * 6
    for pitch, yaw in [(-12.0, 0.5), (3.0, -0.9), (0.2, 9.9), (-2.5, 4.5)]:
        labels = MINECRAFT_TAXONOMY.labels(base | {"camera": [pitch, yaw]})
        assert labels[7:].tolist() == [camera_bin(pitch), camera_bin(yaw)]


def test_labels_accept_lists_nested_lists_and_arrays():
    rng = np.random.default_rng(1)
    clips = random_clips(rng, 3, 4)
    nested = MINECRAFT_TAXONOMY.labels(clips)
    assert nested.shape == (3, 4, 9)
    flat = MINECRAFT_TAXONOMY.labels([a for clip in clips for a in clip])
    assert np.array_equal(flat.reshape(3, 4, 9), nested)
    arrays = {key: np.array([[a[key] for a in clip] for clip in clips]) for key in [*BUTTON_KEYS, "camera"]}
    assert np.array_equal(MINECRAFT_TAXONOMY.labels(arrays), nested)
    # the IDM emits shape-(1,) arrays per frame and bools are fine
    wrapped = [{k: (np.array([v]) if k != "camera" else v) for k, v in a.items()} for a in clips[0]]
    assert np.array_equal(MINECRAFT_TAXONOMY.labels(wrapped), nested[0])
    as_bool = [{k: (bool(v) if k != "camera" else v) for k, v in a.items()} for a in clips[0]]
    assert np.array_equal(MINECRAFT_TAXONOMY.labels(as_bool), nested[0])


def test_label_errors():
    action = {key: 0 for key in BUTTON_KEYS} | {"camera": [0.0, 0.0]}
    with pytest.raises(ActionError, match="'sprint'"):
        MINECRAFT_TAXONOMY.labels({k: v for k, v in action.items() if k != "sprint"})
    with pytest.raises(ActionError, match="'camera'"):
        MINECRAFT_TAXONOMY.labels([{k: v for k, v in action.items() if k != "camera"}])
    with pytest.raises(ActionError, match="0 or 1"):
        MINECRAFT_TAXONOMY.labels(action | {"jump": 2})
    with pytest.raises(ActionError, match="unknown keys"):
        MINECRAFT_TAXONOMY.labels(action | {"fowrard": 1})
    with pytest.raises(ActionError, match="finite"):
        MINECRAFT_TAXONOMY.labels(action | {"camera": [np.nan, 0.0]})
    with pytest.raises(ActionError, match="rectangular"):
        MINECRAFT_TAXONOMY.labels([[action], [action, action]])
    with pytest.raises(DataError, match="label"):
        confusion_counts(np.full((2, 9), 3), np.zeros((2, 9), dtype=int))


# ---------------------------------------------------------------------------------------------------------------
# MineWorld


def test_mineworld_output_structure_is_official():
    rng = np.random.default_rng(2)
    gt, pred = random_clips(rng, 2, 5), random_clips(rng, 2, 5)
    out = mineworld_action_metrics(gt, pred)
    assert list(out) == [str(t) for t in TASKS] + ["metric_mean_on_task"]
    assert list(out) == [
        "('back', 'forward')", "('left', 'right')", "('sneak', 'sprint')", "use", "attack", "jump", "drop",
        "metric_mean_on_task",
    ]  # fmt: skip
    for task in TASKS:
        entry = out[str(task)]
        assert list(entry) == SIX + ["class_num"]
        assert entry["class_num"] == (3 if isinstance(task, tuple) else 2)
        assert all(type(entry[k]) is float for k in SIX)
    assert list(out["metric_mean_on_task"]) == SIX + ["camera_loss"]
    assert json.loads(json.dumps(out)) == out


def test_mineworld_numbers_match_sklearn_with_missing_classes():
    rng = np.random.default_rng(3)
    # 'drop' never pressed, 'sprint' never in gt, 'use' never predicted: some classes never occur
    gt = random_clips(rng, 7, 15, zero=("drop", "sprint"))
    pred = random_clips(rng, 7, 15, zero=("drop", "use"))
    out = mineworld_action_metrics(gt, pred)
    means = {k: [] for k in SIX}
    for task in TASKS:
        y_true = [task_label(a, task) for clip in gt for a in clip]
        y_pred = [task_label(a, task) for clip in pred for a in clip]
        ref = sklearn_scores(y_true, y_pred)
        for key in SIX:
            assert out[str(task)][key] == pytest.approx(ref[key], abs=1e-15), (task, key)
            means[key].append(ref[key])
        # micro P = R = F1 = accuracy for single-label tasks
        assert out[str(task)]["precision_micro"] == pytest.approx(np.mean(np.array(y_true) == np.array(y_pred)))
    for key in SIX:
        assert out["metric_mean_on_task"][key] == pytest.approx(np.mean(means[key]), abs=1e-15)
    assert out["('sneak', 'sprint')"]["recall_macro"] < 1.0


def test_camera_loss_is_per_clip_then_mean():
    base = {key: 0 for key in BUTTON_KEYS}
    # clip 0: 2 frames, clip 1: 1 frame (unequal lengths make per-clip and pooled means differ)
    gt_cams = [[(0.0, 0.0), (3.0, -0.5)], [(-20.0, 9.0)]]
    pred_cams = [[(0.5, 0.0), (3.0, -0.1)], [(0.0, 5.0)]]
    gt = [[base | {"camera": list(c)} for c in clip] for clip in gt_cams]
    pred = [[base | {"camera": list(c)} for c in clip] for clip in pred_cams]
    per_clip = []
    for g_clip, p_clip in zip(gt_cams, pred_cams):
        diffs = [abs(camera_bin(p) - camera_bin(g)) for gc, pc in zip(g_clip, p_clip) for g, p in zip(gc, pc)]
        per_clip.append(sum(diffs) / len(diffs))
    # by hand: clip 0 bins gt (5,5),(8,4) pred (6,5),(8,5) -> |1|+0+0+|1| = 2 / 4; clip 1 gt (0,10) pred (5,9) -> 6/2
    assert per_clip == [0.5, 3.0]
    out = mineworld_action_metrics(gt, pred)
    assert out["metric_mean_on_task"]["camera_loss"] == pytest.approx(1.75)
    # one summed confusion = pooled frames: (2 + 6) / 6
    labels_gt, labels_pred = MINECRAFT_TAXONOMY.labels(gt[0] + gt[1]), MINECRAFT_TAXONOMY.labels(pred[0] + pred[1])
    pooled = metrics_from_confusion(confusion_counts(labels_gt, labels_pred))
    assert pooled["metric_mean_on_task"]["camera_loss"] == pytest.approx(8 / 6)


def test_clip_pairing_errors():
    rng = np.random.default_rng(4)
    gt, pred = random_clips(rng, 2, 3), random_clips(rng, 2, 3)
    with pytest.raises(DataError, match="2 clips but pred has 1"):
        mineworld_action_metrics(gt, pred[:1])
    with pytest.raises(DataError, match="clip 1"):
        mineworld_action_metrics(gt, [pred[0], pred[1][:2]])
    with pytest.raises(DataError, match="list of clips"):
        mineworld_action_metrics(gt[0], pred[0])
    with pytest.raises(DataError, match="no clips"):
        mineworld_action_metrics([], [])
    broken = [pred[0], [{k: v for k, v in a.items() if k != "use"} for a in pred[1]]]
    with pytest.raises(ActionError, match="pred clip 1.*'use'"):
        mineworld_action_metrics(gt, broken)


# ---------------------------------------------------------------------------------------------------------------
# re-aggregation


@st.composite
def label_batches(draw):
    n_items = draw(st.integers(1, 5))
    frames = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    classes = MINECRAFT_TAXONOMY.n_classes
    # sparse class usage so that many classes are absent
    high = np.minimum(classes, rng.integers(1, 4, size=len(classes)))
    gt = rng.integers(0, high, size=(n_items, frames, len(classes)))
    pred = rng.integers(0, high, size=(n_items, frames, len(classes)))
    return gt, pred


@settings(max_examples=40, deadline=None)
@given(label_batches())
def test_summed_item_confusions_give_pooled_metrics(batch):
    gt, pred = batch
    per_item = confusion_counts(gt, pred)
    assert per_item.shape == (gt.shape[0], 9, 11, 11)
    pooled = confusion_counts(gt.reshape(-1, 9), pred.reshape(-1, 9))
    assert np.array_equal(per_item.sum(axis=0), pooled)
    from_sum = metrics_from_confusion(per_item.sum(axis=0))
    from_items = metrics_from_confusion(per_item)
    for task_index, task in enumerate(TASKS):
        ref = sklearn_scores(gt[..., task_index].ravel(), pred[..., task_index].ravel())
        for key in SIX:
            assert from_sum[str(task)][key] == pytest.approx(ref[key], abs=1e-15)
            assert from_items[str(task)][key] == from_sum[str(task)][key]
    # equal clip lengths: per-clip camera loss mean == pooled camera loss
    expected = np.abs(gt[..., 7:] - pred[..., 7:]).mean(axis=(1, 2)).mean()
    assert from_items["metric_mean_on_task"]["camera_loss"] == pytest.approx(expected)
    assert from_sum["metric_mean_on_task"]["camera_loss"] == pytest.approx(expected)


def test_item_ids_for_ragged_clips():
    rng = np.random.default_rng(5)
    gt = rng.integers(0, 2, size=(7, 9))
    pred = rng.integers(0, 2, size=(7, 9))
    ids = np.array([0, 0, 0, 2, 2, 1, 2])
    per_item = confusion_counts(gt, pred, item_ids=ids, n_items=4)
    assert per_item.shape == (4, 9, 11, 11) and per_item[3].sum() == 0
    for item in range(3):
        assert np.array_equal(per_item[item], confusion_counts(gt[ids == item], pred[ids == item]))
    with pytest.raises(DataError, match="item_ids"):
        confusion_counts(gt, pred, item_ids=ids, n_items=2)


def test_other_taxonomy_crafter_like():
    """A 17-class single-task taxonomy (Crafter's Discrete(17)) runs through the same machinery."""
    crafter = Taxonomy("crafter", (Task("action", 17),), lambda a: np.asarray(a, dtype=np.int64)[..., None])
    rng = np.random.default_rng(6)
    y_true, y_pred = rng.integers(0, 12, size=(5, 20)), rng.integers(3, 17, size=(5, 20))
    out = metrics_from_confusion(confusion_counts(crafter.labels(y_true), crafter.labels(y_pred), crafter), crafter)
    assert list(out) == ["action", "metric_mean_on_task"] and out["action"]["class_num"] == 17
    assert "camera_loss" not in out["metric_mean_on_task"]
    ref = sklearn_scores(y_true.ravel(), y_pred.ravel())
    for key in SIX:
        assert out["action"][key] == pytest.approx(ref[key], abs=1e-15)


# ---------------------------------------------------------------------------------------------------------------
# GameWorld


def official_camera_direction(pitch: float, yaw: float) -> int:
    """IDM_bench.camera_direction, transcribed rule by rule."""
    y, x, d = pitch, yaw, 1e-2
    if abs(x) < d and abs(y) < d:
        return 0
    if y < -d and abs(x) < d:
        return 1
    if y > d and abs(x) < d:
        return 2
    if x < -d and abs(y) < d:
        return 3
    if x > d and abs(y) < d:
        return 4
    if y < -d and x < -d:
        return 5
    if y < -d and x > d:
        return 6
    if y > d and x < -d:
        return 7
    if y > d and x > d:
        return 8
    return 0


def test_camera_direction_rules():
    values = [-1.0, -0.01, -0.005, 0.0, 0.005, 0.01, 0.5]
    grid = np.array([(p, y) for p in values for y in values])
    expected = [official_camera_direction(p, y) for p, y in grid]
    assert camera_direction(grid).tolist() == expected
    assert camera_direction([[-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]]).tolist() == [1, 2, 3, 4]
    assert camera_direction([0.01, 0.5]).tolist() == 0  # exactly on the dead-zone edge: no rule, fallback 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(*[st.sampled_from([-0.02, -0.01, -0.0099, 0.0, 0.0099, 0.01, 0.02, 5.0])] * 2), min_size=1))
def test_camera_direction_property(pairs):
    assert camera_direction(np.array(pairs)).tolist() == [official_camera_direction(p, y) for p, y in pairs]


def test_gameworld_numbers_by_independent_loop():
    rng = np.random.default_rng(7)
    gt, pred = random_clips(rng, 5, 12), random_clips(rng, 5, 12)
    for clip in gt + pred:  # sprinkle zero and dead-zone camera values
        for action in clip[::3]:
            action["camera"] = np.array([0.0, rng.choice([0.0, 0.005, 2.0])])
    out = gameworld_action_metrics(gt, pred)
    tasks = [("back", "forward"), ("left", "right"), "attack", "jump"]
    assert list(out)[:4] == [str(t) for t in tasks]
    micro = []
    for task in tasks:
        y_true = [task_label(a, task) for clip in gt for a in clip]
        y_pred = [task_label(a, task) for clip in pred for a in clip]
        class_num = 3 if isinstance(task, tuple) else 2
        entry = out[str(task)]
        assert list(entry)[:7] == SIX + ["class_num"] and entry["class_num"] == class_num
        for cls in range(class_num):
            t_bin = [int(v == cls) for v in y_true]
            p_bin = [int(v == cls) for v in y_pred]
            p, r, f, _ = precision_recall_fscore_support(t_bin, p_bin, average="binary", zero_division=0)
            assert entry[f"class_{cls}/precision"] == pytest.approx(p, abs=1e-15)
            assert entry[f"class_{cls}/recall"] == pytest.approx(r, abs=1e-15)
            assert entry[f"class_{cls}/f1"] == pytest.approx(f, abs=1e-15)
        micro.append(precision_score(y_true, y_pred, average="micro", zero_division=0))
    assert out["keyboard_precision"] == pytest.approx(np.mean(micro), abs=1e-15)
    per_clip = []
    for g_clip, p_clip in zip(gt, pred):
        matches = [
            official_camera_direction(*g["camera"]) == official_camera_direction(*p["camera"])
            for g, p in zip(g_clip, p_clip)
        ]
        per_clip.append(sum(matches) / len(matches))
    assert out["per_item_camera_precision"] == pytest.approx(per_clip)
    assert out["camera_precision"] == pytest.approx(np.mean(per_clip))
    assert GAMEWORLD_TAXONOMY.task_keys[-1] == "camera_direction"


# ---------------------------------------------------------------------------------------------------------------
# RLIR reward


def test_rlir_frame_reward_definition():
    gt = np.zeros((1, 3, 9), dtype=np.int64)
    pred = gt.copy()
    pred[0, 1, [0, 4]] = 1  # frame 1: two discrete tasks wrong
    pred[0, 2, 8] = 3  # frame 2: yaw bin wrong
    reward = rlir_frame_reward(gt, pred)
    assert reward.shape == (1, 3)
    assert reward[0].tolist() == pytest.approx([1.0, 7 / 9, 8 / 9])
    assert rlir_frame_reward(gt, pred, include_camera=False)[0].tolist() == pytest.approx([1.0, 5 / 7, 1.0])
    assert rlir_frame_reward(gt, pred, exact=True)[0].tolist() == [1.0, 0.0, 0.0]
    assert rlir_frame_reward(gt, pred, include_camera=False, exact=True)[0].tolist() == [1.0, 0.0, 1.0]
    assert rlir_trajectory_reward(reward).tolist() == pytest.approx([(1 + 7 / 9 + 8 / 9) / 3])
    with pytest.raises(DataError):
        rlir_frame_reward(gt, pred[:, :2])


def test_rlir_reward_from_actions():
    rng = np.random.default_rng(8)
    gt, pred = random_clips(rng, 2, 6), random_clips(rng, 2, 6)
    reward = rlir_frame_reward(MINECRAFT_TAXONOMY.labels(gt), MINECRAFT_TAXONOMY.labels(pred))
    for i in range(2):
        for t in range(6):
            hits = [task_label(gt[i][t], task) == task_label(pred[i][t], task) for task in TASKS]
            hits += [camera_bin(g) == camera_bin(p) for g, p in zip(gt[i][t]["camera"], pred[i][t]["camera"])]
            assert reward[i, t] == pytest.approx(sum(hits) / 9)


# ---------------------------------------------------------------------------------------------------------------
# bootstrap


def test_bootstrap_ci_deterministic_and_percentile():
    values = np.random.default_rng(9).normal(size=40)
    calls = []

    def mean(indices):
        calls.append(indices)
        return float(values[indices].mean())

    low, high = bootstrap_ci(40, mean, n_resamples=200, seed=3)
    assert (low, high) == bootstrap_ci(40, mean, n_resamples=200, seed=3)
    assert (low, high) != bootstrap_ci(40, mean, n_resamples=200, seed=4)
    samples = np.array([values[i].mean() for i in resample_indices(40, n_resamples=200, seed=3)])
    assert (low, high) == (np.percentile(samples, 2.5), np.percentile(samples, 97.5))
    assert low < values.mean() < high
    assert bootstrap_mean_ci(values, n_resamples=200, seed=3) == pytest.approx((low, high), abs=1e-12)


def test_bootstrap_confusion_matches_slow_path():
    rng = np.random.default_rng(10)
    gt, pred = rng.integers(0, 2, size=(12, 5, 9)), rng.integers(0, 2, size=(12, 5, 9))
    gt[..., :3] = rng.integers(0, 3, size=(12, 5, 3))
    per_item = confusion_counts(gt, pred)
    indices = resample_indices(12, n_resamples=50, seed=1)
    fast = resampled_task_means(per_item, indices)
    slow = [metrics_from_confusion(per_item[row].sum(axis=0))["metric_mean_on_task"]["f1_macro"] for row in indices]
    assert fast == pytest.approx(slow, abs=1e-12)
    low, high = bootstrap_confusion_ci(per_item, n_resamples=50, seed=1)
    assert (low, high) == pytest.approx((np.percentile(slow, 2.5), np.percentile(slow, 97.5)), abs=1e-12)
    point = metrics_from_confusion(per_item)["metric_mean_on_task"]["f1_macro"]
    assert low <= point <= high
