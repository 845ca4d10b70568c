"""Scoring: the one path from generated frames through an inverse dynamics model (IDM) to labels, per-frame scores
and a bundle's metrics.

::

    real context + generated frames --idm_input--> what the IDM sees --IDM--> predicted actions
    predicted actions --taxonomy.labels--> recovered labels
    suite item or commanded actions --commanded_labels--> commanded labels
    (commanded, recovered) --frame_agreement--> one score per generated frame (RLIR's reward)
    per-item (commanded, recovered) --compute_metrics--> confusion counts, macro-F1 with its interval, reward mean

Every consumer goes through here, so the benchmark and the training signal cannot drift apart:

* the evaluator scores each suite item with :func:`score_item` and aggregates the records with
  :func:`compute_metrics`;
* RLIR's reward (:class:`posttrain.rewards.IDMReward`) scores rollout batches with :func:`score_frames`, and its
  per-frame value is :func:`frame_agreement`, the function whose item means :func:`compute_metrics` averages into a
  bundle's ``reward_mean``;
* the leaderboard recomputes a submission's numbers with :func:`compute_metrics` / :func:`verify_metrics`.

Batching is the caller's: the IDM reads exactly the batch it is given (the evaluator one item at a time, the reward a
rollout batch), because another batching may move an IDM's logits in the last bit and flip a near-tie.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from evaluation.bundle import ItemRecord, Metrics, PrimaryMetric, ResultBundle, Throughput
from evaluation.idm.base import InverseDynamicsModel
from evaluation.metrics.action import confusion_counts, metrics_from_confusion, rlir_frame_reward
from evaluation.metrics.stats import bootstrap_confusion_ci
from evaluation.metrics.taxonomy import Taxonomy, get_taxonomy
from evaluation.metrics.video import psnr_per_frame, ssim_per_frame, summarize_per_frame
from evaluation.suites import Suite, SuiteItem, array_to_env_actions
from worldmodels.actions import minecraft
from worldmodels.errors import ConfigError, DataError
from worldmodels.hashing import sha256_array

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "FrameScores",
    "commanded_labels",
    "compute_metrics",
    "frame_agreement",
    "idm_input",
    "label_actions",
    "pair_predictions",
    "score_frames",
    "score_item",
    "target_actions",
    "taxonomy_for",
    "verify_metrics",
]

BOOTSTRAP_RESAMPLES = 1000
"""Resamples of the percentile bootstrap behind the primary metric's 95% interval."""
BOOTSTRAP_SEED = 0
"""Seed of that bootstrap: a bundle's interval is a function of its records alone."""


# -- commanded labels -------------------------------------------------------------------------------------------------


def taxonomy_for(suite: Suite) -> Taxonomy:
    """The tasks a suite is scored on: its domain's taxonomy."""
    return get_taxonomy(suite.domain)


def label_actions(actions: Any, domain: str) -> Any:
    """Compact actions ``[..., *A]`` in the form the domain's taxonomy labels: MineRL env action dicts for
    Minecraft (the camera at its bin centre), the compact ids themselves otherwise."""
    return minecraft.from_compact(actions) if domain == "minecraft" else actions


def target_actions(item: SuiteItem, domain: str) -> Any:
    """What the IDM's reading of ``item`` is scored against: the recorded env actions when the suite keeps them
    (Minecraft), else the compact actions the model was conditioned on."""
    if item.score_actions is not None:
        return array_to_env_actions(item.score_actions)
    return label_actions(item.actions, domain)


def commanded_labels(
    taxonomy: Taxonomy, domain: str, actions: np.ndarray, items: Sequence[SuiteItem] | None = None
) -> np.ndarray:
    """``int64[B, F, n_tasks]`` labels of what ``B`` videos were told to do.

    Args:
        taxonomy: the domain's tasks.
        domain: the action domain (``"minecraft"``, ``"crafter"``).
        actions: the commanded compact actions ``[B, F, *A]`` the frames were generated from.
        items: the suite item of each video, or None. With items, each item's :func:`target_actions` (its first
            ``F``) are labelled, so recorded env actions win over the compact ones where the suite keeps them.
    """
    if items is not None:
        n_frames = actions.shape[1]
        return np.stack([taxonomy.labels(target_actions(item, domain)[:n_frames]) for item in items])
    return taxonomy.labels(label_actions(actions, domain))


# -- the IDM's reading ------------------------------------------------------------------------------------------------


def idm_input(idm: InverseDynamicsModel, context: np.ndarray, generated: np.ndarray) -> np.ndarray:
    """The frames ``idm`` reads: its ``context_frames`` last real frames, then the generated ones.

    Args:
        idm: the IDM; ``idm.context_frames`` says how many real frames it needs before the generated ones.
        context: ``uint8[B, C, H, W, 3]`` real frames the generation started from (the last one just before
            generated frame 0).
        generated: ``uint8[B, F, H, W, 3]`` generated frames.

    Raises:
        ConfigError: the IDM needs more real frames than ``context`` holds.
    """
    wanted, available = idm.context_frames, context.shape[1]
    if wanted > available:
        raise ConfigError(
            f"IDM {idm.name!r} reads {wanted} real frames before the generated ones, only {available} are given; "
            f"keep at least {wanted} context frames or use an IDM with context_frames <= {available}"
        )
    if wanted == 0:
        return generated
    return np.concatenate([context[:, available - wanted :], generated], axis=1)


def frame_agreement(
    commanded: np.ndarray,
    recovered: np.ndarray,
    taxonomy: Taxonomy,
    *,
    include_camera: bool = True,
    exact: bool = False,
) -> np.ndarray:
    """``float64[..., F]``: per frame, how far the IDM's reading agrees with the command, RLIR's per-frame reward
    (:func:`~evaluation.metrics.action.rlir_frame_reward`: the fraction of the taxonomy's tasks whose labels match,
    or 1 only if all match with ``exact=True``). The reward of post-training and a bundle's ``reward_mean`` (the
    defaults) are both this function.

    Args:
        commanded: ``int64[..., F, n_tasks]`` labels of the commanded actions.
        recovered: labels of the IDM's actions, same shape.
        taxonomy: the domain's tasks.
        include_camera: also score the taxonomy's camera tasks.
        exact: all-or-nothing per frame.
    """
    return rlir_frame_reward(commanded, recovered, taxonomy, include_camera=include_camera, exact=exact)


@dataclass(frozen=True)
class FrameScores:
    """What an IDM read from a batch of generated videos, next to what they were told to do.

    Attributes:
        predicted: the IDM's actions, one per generated frame (see
            :meth:`~evaluation.idm.base.InverseDynamicsModel.predict_actions`).
        commanded: ``int64[B, F, n_tasks]`` labels of the commanded (or recorded) actions.
        recovered: ``int64[B, F, n_tasks]`` labels of the IDM's actions.
    """

    predicted: Any
    commanded: np.ndarray
    recovered: np.ndarray


def score_frames(
    idm: InverseDynamicsModel,
    taxonomy: Taxonomy,
    context: np.ndarray,
    generated: np.ndarray,
    commanded: np.ndarray,
) -> FrameScores:
    """Read the actions of ``generated`` back with ``idm`` (one batch, as given) and pair their labels with
    ``commanded``.

    Args:
        idm: an IDM of the taxonomy's domain.
        taxonomy: the domain's tasks.
        context: ``uint8[B, C, H, W, 3]`` real frames before the generated ones (see :func:`idm_input`).
        generated: ``uint8[B, F, H, W, 3]`` generated frames.
        commanded: ``int64[B, F, n_tasks]`` labels of what the frames were told to do (:func:`commanded_labels`).

    Raises:
        DataError: the IDM labelled another number of frames than were commanded.
    """
    return pair_predictions(idm, taxonomy, idm.predict_actions(idm_input(idm, context, generated)), commanded)


def pair_predictions(idm: InverseDynamicsModel, taxonomy: Taxonomy, predicted: Any, commanded: np.ndarray) -> FrameScores:
    """Pair the actions ``idm`` already predicted for a batch (its ``predict_actions`` output, or what a caller that
    also needs the IDM's probabilities derived from the same forward) with ``commanded``; see :func:`score_frames`.

    Raises:
        DataError: the IDM labelled another number of frames than were commanded.
    """
    recovered = taxonomy.labels(predicted)
    if recovered.shape != commanded.shape:
        raise DataError(
            f"IDM {idm.name!r} labelled {list(recovered.shape[:-1])} frames, the commanded actions are "
            f"{list(commanded.shape[:-1])}"
        )
    return FrameScores(predicted=predicted, commanded=commanded, recovered=recovered)


def score_item(
    item: SuiteItem,
    generated: np.ndarray,
    seed: int,
    *,
    idm: InverseDynamicsModel,
    taxonomy: Taxonomy,
    domain: str,
    video_metrics: bool = True,
) -> ItemRecord:
    """Score one suite item's generated frames ``uint8[F, H, W, 3]``: IDM labels against the item's
    :func:`target_actions`, PSNR/SSIM against its ground truth (when it has one and ``video_metrics``), and the
    frames' sha256. ``seed`` is the generation seed recorded with them.

    Raises:
        DataError: the frames are not ``[len(item.actions), H, W, 3]`` at the item's frame size.
    """
    if generated.shape != (len(item.actions), *item.context_frames.shape[1:]):
        raise DataError(
            f"item {item.id!r}: generated frames have shape {list(generated.shape)}, expected "
            f"{[len(item.actions), *item.context_frames.shape[1:]]}"
        )
    commanded = commanded_labels(taxonomy, domain, item.actions[None], [item])
    scores = score_frames(idm, taxonomy, item.context_frames[None], generated[None], commanded)
    psnr = ssim = None
    if video_metrics and item.ground_truth is not None:
        psnr = psnr_per_frame(generated[None], item.ground_truth[None])[0].tolist()
        ssim = ssim_per_frame(generated[None], item.ground_truth[None])[0].tolist()
    return ItemRecord(
        id=item.id,
        seed=seed,
        gt_labels=scores.commanded[0].tolist(),
        pred_labels=scores.recovered[0].tolist(),
        psnr=psnr,
        ssim=ssim,
        video_sha256=sha256_array(generated),
    )


# -- a bundle's metrics -----------------------------------------------------------------------------------------------


def compute_metrics(
    items: list[ItemRecord], taxonomy_name: str, *, throughput: Throughput | None = None
) -> Metrics:
    """Every aggregate of a bundle, from its per-item records: the one code path used by ``rlir eval`` to write a
    bundle and by the leaderboard to verify one.

    Action metrics pool the per-item confusion counts (MineWorld's definition); the primary metric is the mean over
    the taxonomy's discrete tasks of macro-F1 with a percentile-bootstrap 95% interval over items (``BOOTSTRAP_SEED``,
    ``BOOTSTRAP_RESAMPLES``); ``reward_mean`` is the mean RLIR trajectory reward (:func:`frame_agreement` averaged
    over each item's frames); PSNR/SSIM are averaged per step over items, then over steps, as the official
    video metrics do.

    Raises:
        DataError: no items, labels of unequal or empty shapes, or PSNR/SSIM given for some items only.
    """
    if not items:
        raise DataError("a result bundle needs at least one item")
    taxonomy = get_taxonomy(taxonomy_name)
    confusions, rewards = [], []
    for item in items:
        gt, pred = np.asarray(item.gt_labels), np.asarray(item.pred_labels)
        where = f"item {item.id!r}"
        if gt.ndim != 2 or gt.shape != pred.shape or len(gt) == 0:
            raise DataError(f"{where}: gt_labels {gt.shape} and pred_labels {pred.shape} must be equal [T >= 1, tasks]")
        confusions.append(confusion_counts(gt[None], pred[None], taxonomy)[0])
        rewards.append(float(frame_agreement(gt, pred, taxonomy).mean()))
    conf = np.stack(confusions)
    official = metrics_from_confusion(conf, taxonomy)
    mean_on_task = official.pop("metric_mean_on_task")
    low, high = bootstrap_confusion_ci(conf, taxonomy, n_resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED)
    video: dict[str, dict[str, Any] | None] = {}
    for name in ("psnr", "ssim"):
        values = [getattr(item, name) for item in items]
        if all(v is None for v in values):
            video[name] = None
            continue
        if any(v is None for v in values) or len({len(v) for v in values}) != 1:
            raise DataError(f"{name} must be given for every item with the same number of frames, or for none")
        summary = summarize_per_frame(values)
        video[name] = {"mean": summary["mean"], "per_step": summary["per_step"]}
    return Metrics(
        primary=PrimaryMetric(value=mean_on_task["f1_macro"], ci95=(low, high), n_items=len(items)),
        tasks={key: {k: v for k, v in scores.items() if k != "class_num"} for key, scores in official.items()},
        mean_on_task=mean_on_task,
        camera_l1=mean_on_task.get("camera_loss"),
        reward_mean=float(np.mean(rewards)),
        psnr=video["psnr"],
        ssim=video["ssim"],
        throughput=throughput,
    )


def verify_metrics(bundle: ResultBundle, *, rel_tol: float = 1e-9) -> list[str]:
    """Recompute every aggregate from the bundle's items; returns the mismatches (empty when all agree)."""
    recomputed = compute_metrics(bundle.items, bundle.taxonomy, throughput=bundle.metrics.throughput)
    # like throughput, LPIPS and FVD need more than the records (backbone files, videos): carried over, not recomputed
    recomputed = recomputed.model_copy(update={"lpips": bundle.metrics.lpips, "fvd": bundle.metrics.fvd})
    return _differences(bundle.metrics.model_dump(mode="json"), recomputed.model_dump(mode="json"), "metrics", rel_tol)


def _differences(reported: Any, expected: Any, path: str, rel_tol: float) -> list[str]:
    if isinstance(expected, dict) and isinstance(reported, dict):
        problems = [f"{path}.{k}: missing" for k in expected if k not in reported]
        problems += [f"{path}.{k}: unexpected" for k in reported if k not in expected]
        for key in expected.keys() & reported.keys():
            problems += _differences(reported[key], expected[key], f"{path}.{key}", rel_tol)
        return problems
    if isinstance(expected, list) and isinstance(reported, list):
        if len(expected) != len(reported):
            return [f"{path}: {len(reported)} values, expected {len(expected)}"]
        return [p for i, (r, e) in enumerate(zip(reported, expected)) for p in _differences(r, e, f"{path}[{i}]", rel_tol)]
    if isinstance(expected, float) or isinstance(reported, float):
        if isinstance(reported, (int, float)) and isinstance(expected, (int, float)):
            if abs(reported - expected) <= rel_tol * max(1.0, abs(expected)):
                return []
        return [f"{path}: reported {reported!r}, recomputed {expected!r}"]
    return [] if reported == expected else [f"{path}: reported {reported!r}, recomputed {expected!r}"]
