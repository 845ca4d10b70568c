"""Action-following metrics: MineWorld's IDM scores, GameWorld's keyboard/camera precision and the RLIR reward.

Everything is computed from per-task **confusion matrices** so that results can be re-aggregated: a leaderboard
stores one padded confusion tensor per item (clip), sums any subset of items, and recomputes every number;
confidence intervals bootstrap over items (see ``stats.py``).

Conventions (sklearn's, which the official scripts call with ``zero_division=0``):

* confusion ``C[g, p]`` counts frames with ground-truth (recorded) class ``g`` and predicted (IDM) class ``p``;
  per task the matrix is padded to the taxonomy's largest class count, padded classes never occur;
* per class: precision ``tp / (tp + fp)``, recall ``tp / (tp + fn)``, F1 ``2 tp / (2 tp + fp + fn)``, each 0 when
  its denominator is 0;
* macro = unweighted mean over the classes present in ``y_true`` or ``y_pred``; micro = pooled counts, which for
  single-label tasks is the accuracy (precision = recall = F1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from evaluation.metrics.taxonomy import GAMEWORLD_TAXONOMY, MINECRAFT_TAXONOMY, Taxonomy
from worldmodels.errors import ActionError, DataError

METRIC_NAMES: tuple[str, ...] = (
    "precision_micro", "recall_micro", "f1_micro", "precision_macro", "recall_macro", "f1_macro",
)  # fmt: skip
"""The six per-task numbers of MineWorld's ``classification_metric``, in its key order."""


# --------------------------------------------------------------------------------------------------------------
# labels and confusion counts


@dataclass(frozen=True)
class ClipLabels:
    """Per-frame labels of a set of clips, flattened.

    Attributes:
        gt: ``int64[F, n_tasks]`` labels of the recorded (commanded) actions.
        pred: ``int64[F, n_tasks]`` labels of the IDM's predictions.
        item_ids: ``int64[F]`` clip index of every frame.
        n_items: number of clips.
    """

    gt: np.ndarray
    pred: np.ndarray
    item_ids: np.ndarray
    n_items: int

    def confusion(self, taxonomy: Taxonomy) -> np.ndarray:
        """Per-clip confusion counts ``int64[n_items, n_tasks, K, K]``."""
        return confusion_counts(self.gt, self.pred, taxonomy, item_ids=self.item_ids, n_items=self.n_items)


def _clip_label_array(clip: Any, taxonomy: Taxonomy, where: str) -> np.ndarray:
    try:
        labels = taxonomy.labels(clip)
    except ActionError as error:
        raise ActionError(f"{where}: {error}") from None
    if labels.ndim != 2:
        raise DataError(
            f"{where} must be a list of action dicts (one per frame) or a dict of [T] arrays, "
            f"got batch shape {labels.shape[:-1]}"
        )
    return labels


def clip_labels(gt: Sequence[Any], pred: Sequence[Any], taxonomy: Taxonomy = MINECRAFT_TAXONOMY) -> ClipLabels:
    """Label every frame of paired clips.

    Args:
        gt: clips of recorded actions; each clip is a list of MineRL action dicts (one per frame) or a dict of
            ``[T]`` arrays.
        pred: the IDM's predicted actions, same clips and lengths.
        taxonomy: the task definition.

    Raises:
        DataError: different numbers of clips, a clip whose lengths differ, or an empty clip.
        ActionError: a malformed action (the message names the clip).
    """
    for name, clips in (("gt", gt), ("pred", pred)):
        if isinstance(clips, (Mapping, str, bytes)) or not isinstance(clips, Sequence):
            raise DataError(f"{name} must be a list of clips (each a list of action dicts), got {type(clips).__name__}")
        if len(clips) and isinstance(clips[0], Mapping) and "camera" in clips[0] and np.ndim(clips[0]["camera"]) == 1:
            raise DataError(f"{name} is a list of single actions; wrap it as a list of clips: [{name}]")
    if len(gt) != len(pred):
        raise DataError(f"gt has {len(gt)} clips but pred has {len(pred)}; pass the same clips in the same order")
    if len(gt) == 0:
        raise DataError("no clips to score; pass at least one clip")
    gts, preds = [], []
    for i, (g, p) in enumerate(zip(gt, pred)):
        g_labels = _clip_label_array(g, taxonomy, f"gt clip {i}")
        p_labels = _clip_label_array(p, taxonomy, f"pred clip {i}")
        if len(g_labels) != len(p_labels):
            raise DataError(
                f"clip {i}: gt has {len(g_labels)} frames but pred has {len(p_labels)}; they must align frame by frame"
            )
        if len(g_labels) == 0:
            raise DataError(f"clip {i} has no frames")
        gts.append(g_labels)
        preds.append(p_labels)
    lengths = np.array([len(g) for g in gts], dtype=np.int64)
    return ClipLabels(
        gt=np.concatenate(gts), pred=np.concatenate(preds),
        item_ids=np.repeat(np.arange(len(gts), dtype=np.int64), lengths), n_items=len(gts),
    )  # fmt: skip


def confusion_counts(
    gt_labels: ArrayLike,
    pred_labels: ArrayLike,
    taxonomy: Taxonomy = MINECRAFT_TAXONOMY,
    *,
    item_ids: ArrayLike | None = None,
    n_items: int | None = None,
) -> np.ndarray:
    """Per-task confusion counts, padded to ``K = taxonomy.max_classes``.

    Args:
        gt_labels: ``[..., T, n_tasks]`` recorded labels (frames on axis -2), or ``[F, n_tasks]`` with
            ``item_ids``.
        pred_labels: IDM labels of the same shape.
        taxonomy: the task definition.
        item_ids: optional ``int[F]`` item of every row of 2-D labels (ragged clips).
        n_items: number of items when ``item_ids`` is given (default ``max(item_ids) + 1``).

    Returns:
        ``int64[..., n_tasks, K, K]`` (``C[task, gt, pred]``) summed over frames: one matrix set per leading index,
        or ``[n_items, n_tasks, K, K]`` with ``item_ids``. Sum over items to pool.
    """
    gt = taxonomy.check_labels(gt_labels, "gt labels")
    pred = taxonomy.check_labels(pred_labels, "pred labels")
    if gt.shape != pred.shape:
        raise DataError(f"gt labels {gt.shape} and pred labels {pred.shape} must have the same shape")
    n, k = taxonomy.n_tasks, taxonomy.max_classes
    if item_ids is None:
        if gt.ndim < 2:
            raise DataError(f"labels must be [..., T, {n}] (frames on axis -2), got shape {gt.shape}")
        batch_shape, frames = gt.shape[:-2], gt.shape[-2]
        items = int(np.prod(batch_shape, dtype=np.int64))
        ids = np.repeat(np.arange(items, dtype=np.int64), frames)
    else:
        if gt.ndim != 2:
            raise DataError(f"with item_ids the labels must be [F, {n}], got shape {gt.shape}")
        ids = np.asarray(item_ids)
        if ids.shape != gt.shape[:1] or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
            raise DataError(
                f"item_ids must be {gt.shape[0]} integers (one per row), got shape {ids.shape} dtype {ids.dtype}"
            )
        ids = ids.astype(np.int64)
        items = int(n_items) if n_items is not None else (int(ids.max()) + 1 if ids.size else 0)
        if ids.size and (ids.min() < 0 or ids.max() >= items):
            raise DataError(f"item_ids must lie in [0, {items}), got range [{ids.min()}, {ids.max()}]")
        batch_shape = (items,)
    codes = ((ids[:, None] * n + np.arange(n)) * k + gt.reshape(-1, n)) * k + pred.reshape(-1, n)
    counts = np.bincount(codes.ravel(), minlength=items * n * k * k)
    return counts.reshape(batch_shape + (n, k, k))


def as_item_confusions(confusions: ArrayLike, taxonomy: Taxonomy) -> np.ndarray:
    """Validate confusion counts and return them per item, ``int64[N, n_tasks, K, K]``.

    A single summed ``[n_tasks, K, K]`` tensor counts as one item.

    Raises:
        DataError: wrong shape for the taxonomy, or counts that are not non-negative integers.
    """
    conf = np.asarray(confusions)
    n, k = taxonomy.n_tasks, taxonomy.max_classes
    if conf.ndim not in (3, 4) or conf.shape[-3:] != (n, k, k):
        raise DataError(
            f"confusions must be [{n}, {k}, {k}] or [N, {n}, {k}, {k}] for taxonomy {taxonomy.name!r}, "
            f"got shape {conf.shape}"
        )
    if conf.size and (not np.issubdtype(conf.dtype, np.integer) or conf.min() < 0):
        raise DataError(f"confusions must be non-negative integer counts, got dtype {conf.dtype}")
    conf = conf.astype(np.int64, copy=False)
    return conf[None] if conf.ndim == 3 else conf


# --------------------------------------------------------------------------------------------------------------
# scores from confusion counts (vectorised over any leading axes)


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` as float64, 0 where the denominator is 0 (sklearn's ``zero_division=0``)."""
    safe = np.where(denominator == 0, 1, denominator).astype(np.float64)
    return np.where(denominator == 0, 0.0, numerator.astype(np.float64) / safe)


def classification_scores(confusion: ArrayLike) -> dict[str, np.ndarray]:
    """Scores of confusion matrices ``[..., K, K]`` (rows = ground truth).

    Returns:
        ``METRIC_NAMES`` -> ``float64[...]`` and ``"per_class_precision" / "per_class_recall" / "per_class_f1"`` ->
        ``float64[..., K]`` (one-vs-rest, 0 on empty denominators). Macro means run over the classes that occur in
        ground truth or prediction, as sklearn's default ``labels``; they are 0 when nothing occurs.
    """
    conf = np.asarray(confusion, dtype=np.int64)
    tp = np.diagonal(conf, axis1=-2, axis2=-1)
    true_sum, pred_sum = conf.sum(axis=-1), conf.sum(axis=-2)
    precision, recall = _divide(tp, pred_sum), _divide(tp, true_sum)
    f1 = _divide(2 * tp, true_sum + pred_sum)
    present = (true_sum + pred_sum) > 0
    n_present = present.sum(axis=-1)
    # absent classes add exact zeros, so this is sklearn's mean over the present labels (up to summation order:
    # numpy sums more than 8 values pairwise, so padded tasks can differ from it in the last bit)
    macro = {
        name: _divide(np.where(present, values, 0.0).sum(axis=-1), n_present)
        for name, values in (("precision_macro", precision), ("recall_macro", recall), ("f1_macro", f1))
    }
    trace, total = tp.sum(axis=-1), true_sum.sum(axis=-1)
    return {
        "precision_micro": _divide(trace, total),
        "recall_micro": _divide(trace, total),
        "f1_micro": _divide(2 * trace, 2 * total),
        **macro,
        "per_class_precision": precision,
        "per_class_recall": recall,
        "per_class_f1": f1,
    }


def camera_bin_loss(confusions: ArrayLike, taxonomy: Taxonomy = MINECRAFT_TAXONOMY) -> np.ndarray:
    """Per-item camera L1 in bins: mean ``|bin_pred - bin_gt|`` over the item's frames and camera axes.

    Uses the taxonomy's ordinal camera tasks (Minecraft: pitch and yaw of the 11-bin VPT IDM quantiser), i.e.
    MineWorld's per-video ``camera_bin_loss``. Returns ``float64[N]`` (``[1]`` for a single summed tensor).
    """
    conf = as_item_confusions(confusions, taxonomy)
    cam = [i for i in taxonomy.camera_indices if taxonomy.tasks[i].ordinal]
    if not cam:
        raise DataError(f"taxonomy {taxonomy.name!r} has no ordinal camera tasks, so it has no camera bin loss")
    k = taxonomy.max_classes
    distance = np.abs(np.arange(k)[:, None] - np.arange(k)[None, :])
    sub = conf[:, cam]
    frames = sub.sum(axis=(-3, -2, -1))
    if np.any(frames == 0):
        raise DataError(f"item {int(np.argmax(frames == 0))} has no frames; camera loss needs at least one")
    return (sub * distance).sum(axis=(-3, -2, -1)) / frames


# --------------------------------------------------------------------------------------------------------------
# MineWorld


def _pooled_scores(conf: np.ndarray, taxonomy: Taxonomy) -> dict[str, np.ndarray]:
    total = conf.sum(axis=0)
    discrete = taxonomy.discrete_indices
    empty = total[discrete].sum(axis=(-2, -1)) == 0
    if empty.any():
        raise DataError("no frames to score; the confusion counts are all zero")
    scores = classification_scores(total)
    # the reported dicts average exactly the present classes, in sklearn's order (nanmean = sum / count), so they
    # agree with the official numbers to the last bit whatever the padding
    present = (total.sum(axis=-1) + total.sum(axis=-2)) > 0
    for name in ("precision", "recall", "f1"):
        per_class = scores[f"per_class_{name}"]
        scores[f"{name}_macro"] = np.array(
            [np.sum(per_class[i][present[i]]) / max(int(present[i].sum()), 1) for i in range(len(total))]
        )
    return scores


def metrics_from_confusion(confusions: ArrayLike, taxonomy: Taxonomy = MINECRAFT_TAXONOMY) -> dict[str, Any]:
    """MineWorld's IDM result dict from confusion counts.

    Args:
        confusions: per-item counts ``[N, n_tasks, K, K]`` (from :func:`confusion_counts`), or one summed
            ``[n_tasks, K, K]``. Classification scores always pool over items. ``camera_loss`` is the mean over
            items of the per-item camera loss (MineWorld: per video, then averaged); from a single summed tensor
            it is the pooled per-frame mean, which is the same number when all clips have equal length.
        taxonomy: the task definition.

    Returns:
        ``{str(task): {precision_micro, recall_micro, f1_micro, precision_macro, recall_macro, f1_macro,
        class_num}}`` for every discrete task in order, then ``"metric_mean_on_task"``: the unweighted mean over
        tasks of each of the six numbers, plus ``camera_loss`` when the taxonomy has ordinal camera tasks. Values
        are plain Python numbers (JSON-ready), exactly the keys of ``metrics/IDM/inverse_dynamics_model.py``.
    """
    conf = as_item_confusions(confusions, taxonomy)
    scores = _pooled_scores(conf, taxonomy)
    out: dict[str, Any] = {}
    for i in taxonomy.discrete_indices:
        task = taxonomy.tasks[i]
        out[task.key] = {name: float(scores[name][i]) for name in METRIC_NAMES} | {"class_num": task.n_classes}
    keys = [taxonomy.tasks[i].key for i in taxonomy.discrete_indices]
    mean = {name: float(np.mean([out[key][name] for key in keys])) for name in METRIC_NAMES}
    if any(taxonomy.tasks[i].ordinal for i in taxonomy.camera_indices):
        mean["camera_loss"] = float(np.mean(camera_bin_loss(conf, taxonomy)))
    out["metric_mean_on_task"] = mean
    return out


def mineworld_action_metrics(gt: Sequence[Any], pred: Sequence[Any]) -> dict[str, Any]:
    """MineWorld's action-following metric (``metrics/IDM/inverse_dynamics_model.py`` @ 2d53827).

    Args:
        gt: clips of recorded actions (``jsonl`` lines 1..15 as MineRL dicts), each a list of dicts or a dict of
            ``[T]`` arrays.
        pred: the IDM's predicted actions for the same clips and frames.

    Returns:
        The official result dict (see :func:`metrics_from_confusion`): labels pooled over all clips x frames,
        sklearn precision / recall / F1 (micro and macro, ``zero_division=0``, ``y_true`` = recorded) per task,
        their means over the 7 tasks and ``camera_loss`` (11-bin L1, per clip then averaged).
    """
    labels = clip_labels(gt, pred, MINECRAFT_TAXONOMY)
    return metrics_from_confusion(labels.confusion(MINECRAFT_TAXONOMY), MINECRAFT_TAXONOMY)


# --------------------------------------------------------------------------------------------------------------
# GameWorld


def gameworld_metrics_from_confusion(confusions: ArrayLike, taxonomy: Taxonomy = GAMEWORLD_TAXONOMY) -> dict[str, Any]:
    """GameWorld's action-control numbers (``GameWorldScore`` ``IDM_bench.py``) from confusion counts.

    Args:
        confusions: per-item ``[N, n_tasks, K, K]`` for ``GAMEWORLD_TAXONOMY`` (or one summed tensor = one item).

    Returns:
        ``{str(task): {six scores, class_num, "class_{c}/precision", "class_{c}/recall", "class_{c}/f1" for every
        class}}`` for the keyboard tasks (``classification_metric``'s keys), ``"metric_mean_on_task"`` (the six
        means), ``"keyboard_precision"`` (mean over the keyboard tasks of the micro precision),
        ``"camera_precision"`` (per clip the fraction of frames whose camera directions match, averaged over
        clips) and ``"per_item_camera_precision"``.
    """
    conf = as_item_confusions(confusions, taxonomy)
    scores = _pooled_scores(conf, taxonomy)
    out: dict[str, Any] = {}
    for i in taxonomy.discrete_indices:
        task = taxonomy.tasks[i]
        entry: dict[str, Any] = {name: float(scores[name][i]) for name in METRIC_NAMES} | {"class_num": task.n_classes}
        for c in range(task.n_classes):
            entry[f"class_{c}/precision"] = float(scores["per_class_precision"][i, c])
            entry[f"class_{c}/recall"] = float(scores["per_class_recall"][i, c])
            entry[f"class_{c}/f1"] = float(scores["per_class_f1"][i, c])
        out[task.key] = entry
    keys = [taxonomy.tasks[i].key for i in taxonomy.discrete_indices]
    out["metric_mean_on_task"] = {name: float(np.mean([out[key][name] for key in keys])) for name in METRIC_NAMES}
    out["keyboard_precision"] = out["metric_mean_on_task"]["precision_micro"]
    (camera,) = taxonomy.camera_indices
    cam = conf[:, camera]
    frames = cam.sum(axis=(-2, -1))
    if np.any(frames == 0):
        raise DataError(f"item {int(np.argmax(frames == 0))} has no frames; camera precision needs at least one")
    per_item = np.trace(cam, axis1=-2, axis2=-1) / frames
    out["camera_precision"] = float(np.mean(per_item))
    out["per_item_camera_precision"] = per_item.tolist()
    return out


def gameworld_action_metrics(gt: Sequence[Any], pred: Sequence[Any]) -> dict[str, Any]:
    """GameWorld's keyboard and camera precision of IDM predictions against recorded actions.

    Keyboard: 3-class ``('back', 'forward')``, ``('left', 'right')`` and binary ``attack``, ``jump`` pooled over
    clips x frames; ``keyboard_precision`` is the mean micro precision. Camera: each ``[pitch, yaw]`` becomes one of
    9 directions (:func:`~evaluation.metrics.taxonomy.camera_direction`, dead zone 0.01 degrees);
    ``camera_precision`` is the fraction of matching frames per clip, averaged over clips.
    See :func:`gameworld_metrics_from_confusion` for the full dict.
    """
    labels = clip_labels(gt, pred, GAMEWORLD_TAXONOMY)
    return gameworld_metrics_from_confusion(labels.confusion(GAMEWORLD_TAXONOMY), GAMEWORLD_TAXONOMY)


# --------------------------------------------------------------------------------------------------------------
# RLIR reward


def rlir_frame_reward(
    gt_labels: ArrayLike,
    pred_labels: ArrayLike,
    taxonomy: Taxonomy = MINECRAFT_TAXONOMY,
    *,
    include_camera: bool = True,
    exact: bool = False,
) -> np.ndarray:
    """The RLIR per-frame reward from commanded and IDM-read action labels.

    Definition (the paper gives ``R = (1/n) sum_i 1[a_hat_i = a_i]`` without saying how "=" treats an action made
    of several fields): per frame, the fraction of the taxonomy's tasks whose IDM class equals the commanded class.
    For Minecraft the tasks are the 7 discrete groups plus, by default, the 2 camera axes (11-bin VPT IDM
    quantiser), i.e. the paper's 9 action classes, so each frame scores in ``{0, 1/9, ..., 1}``.
    ``exact=True`` gives the literal ``1[a_hat_i = a_i]``: 1 only if every selected task matches.

    Args:
        gt_labels: ``int[..., T, n_tasks]`` labels of the commanded actions (``taxonomy.labels``).
        pred_labels: labels of the IDM's predictions, same shape.
        taxonomy: the task definition.
        include_camera: also score the taxonomy's camera tasks.
        exact: all-or-nothing per frame instead of the fraction of matching tasks.

    Returns:
        ``float64[..., T]`` rewards in ``[0, 1]``; :func:`rlir_trajectory_reward` averages them over frames.
    """
    gt = taxonomy.check_labels(gt_labels, "gt labels")
    pred = taxonomy.check_labels(pred_labels, "pred labels")
    if gt.shape != pred.shape:
        raise DataError(f"gt labels {gt.shape} and pred labels {pred.shape} must have the same shape")
    columns = taxonomy.scored_indices(include_camera)
    if columns.size == 0:
        raise DataError(f"taxonomy {taxonomy.name!r} has no tasks to score with include_camera={include_camera}")
    match = gt[..., columns] == pred[..., columns]
    return (match.all(axis=-1) if exact else match.mean(axis=-1)).astype(np.float64)


def rlir_trajectory_reward(frame_reward: ArrayLike) -> np.ndarray:
    """Trajectory reward ``R(T) = mean over frames`` of :func:`rlir_frame_reward` (``[..., T]`` -> ``[...]``)."""
    reward = np.asarray(frame_reward, dtype=np.float64)
    if reward.ndim < 1 or reward.shape[-1] == 0:
        raise DataError(f"frame rewards must be [..., T] with T >= 1, got shape {reward.shape}")
    return reward.mean(axis=-1)
