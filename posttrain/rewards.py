"""Per-frame rewards of generated videos: RLIR's inverse-dynamics reward and RLVR-World's pixel baseline.

A reward is any callable ``reward_fn(frames, actions) -> float[B, F]`` (optionally also accepting
``items=...``, the suite items of the ``B`` samples, for ground truth and recorded actions):

* ``frames``: ``uint8[B, F + 1, H, W, 3]``, the real context frame first, then the ``F`` generated frames;
* ``actions``: the commanded compact actions ``int64[B, F, *A]`` (generated frame ``k`` follows action ``k``);
* result: one reward per generated frame. The trainer's trajectory reward is the mean over frames (RLIR's
  ``R = (1/n) sum_i 1[a_hat_i = a_i]``), and the per-frame means are logged as an accuracy-by-frame curve.

:func:`compute_rewards` calls a reward and rejects a wrong shape (``ValueError``) or NaN/inf
(``NumericalError``), naming the reward.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from evaluation.idm.crafter import most_likely_actions
from evaluation.idm.registry import expand_idm_names, load_idm
from evaluation.metrics.taxonomy import Taxonomy
from evaluation.scoring import (
    commanded_labels,
    frame_agreement,
    idm_input,
    label_actions,
    pair_predictions,
    score_frames,
    target_actions,
    taxonomy_for,
)
from posttrain.config import REWARD_FORMS, REWARDS
from worldmodels.errors import ConfigError, DataError, NumericalError


class RewardFn(Protocol):
    def __call__(self, frames: np.ndarray, actions: np.ndarray, **kwargs: Any) -> np.ndarray: ...


def reward_name(reward_fn: Any) -> str:
    return str(getattr(reward_fn, "name", getattr(reward_fn, "__name__", type(reward_fn).__name__)))


def _accepts_items(reward_fn: Any) -> bool:
    try:
        parameters = inspect.signature(reward_fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "items" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def compute_rewards(
    reward_fn: Any, frames: np.ndarray, actions: np.ndarray, items: Sequence[Any] | None = None
) -> np.ndarray:
    """``float64[B, F]`` per-frame rewards of ``frames uint8[B, F + 1, H, W, 3]`` (see the module docstring).

    Raises:
        ValueError: the reward returned another shape than ``[B, F]``.
        NumericalError: it returned NaN or inf.
    """
    name = reward_name(reward_fn)
    expected = (frames.shape[0], frames.shape[1] - 1)
    result = reward_fn(frames, actions, items=items) if _accepts_items(reward_fn) else reward_fn(frames, actions)
    try:
        rewards = np.asarray(result, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"reward {name!r} returned {type(result).__name__}, expected float[B, F] = {list(expected)}"
        ) from None
    if rewards.shape != expected:
        raise ValueError(
            f"reward {name!r} returned shape {list(rewards.shape)}, expected [B, F] = {list(expected)} (one reward "
            f"per generated frame of each of the {expected[0]} videos)"
        )
    if not np.isfinite(rewards).all():
        b, k = np.argwhere(~np.isfinite(rewards))[0]
        raise NumericalError(
            f"reward {name!r} returned {rewards[b, k]} for video {b}, frame {k} (of shape {list(rewards.shape)}); "
            "rewards must be finite"
        )
    return rewards


def task_class_weights(commanded: np.ndarray, taxonomy: Taxonomy) -> np.ndarray:
    """``float64[n_tasks, n_classes]`` weights of the ``task-weighted`` form: ``1 / frequency`` of each task's class
    among ``commanded`` labels ``int[..., n_tasks]`` (the training prompts' actions); a class never commanded gets the
    weight of one occurrence, so a reading of it still counts."""
    labels = taxonomy.check_labels(commanded, "commanded labels").reshape(-1, len(taxonomy.tasks))
    if len(labels) == 0:
        raise DataError("task weights need at least one commanded frame")
    counts = np.stack([np.bincount(labels[:, t], minlength=taxonomy.max_classes) for t in range(labels.shape[1])])
    return len(labels) / np.maximum(counts, 1).astype(np.float64)


class IDMReward:
    """RLIR's inverse reward: per generated frame, how well the action one or more inverse dynamics models read back
    from the video agrees with the commanded action (:data:`REWARD_FORMS`; the ``agreement`` form is
    :func:`evaluation.scoring.frame_agreement`, the benchmark's own per-frame score).

    The frames go through the benchmark's scoring path (:func:`evaluation.scoring.score_frames`), so a video's reward
    comes from the very labels the evaluator would record for it. Each IDM sees
    ``frames[:, 1 - idm.context_frames:]``: the generated frames alone for the VPT IDM (``context_frames = 0``,
    MineWorld's protocol), the real context frame plus the generated ones for transition-aligned IDMs
    (``context_frames = 1``, the Crafter IDMs). The commanded labels come from the suite's recorded env actions when
    the suite keeps them (Minecraft, as :func:`evaluation.scoring.target_actions`), otherwise from the compact
    actions the model was conditioned on. An ensemble's reward is the mean of its members' rewards: a frame pays only
    as far as independently trained IDMs agree, not for one IDM's quirks.

    Args:
        idms: an :class:`~evaluation.idm.base.InverseDynamicsModel`, or a non-empty sequence of them (one domain).
        taxonomy: the domain's tasks (``evaluation.scoring.taxonomy_for(suite)``).
        include_camera: also score camera tasks (Minecraft: the paper's 9 classes).
        form: one of :data:`REWARD_FORMS`.
        class_weights: the ``task-weighted`` form's :func:`task_class_weights` (required by it, refused otherwise).

    Raises:
        ConfigError: an empty ensemble, IDMs of different domains, an IDM needing more than one real frame, an unknown
            form, ``soft`` with an IDM that does not score every compact action (not a Crafter IDM), or
            ``task-weighted`` without class weights.
    """

    def __init__(self, idms: Any, taxonomy: Taxonomy, *, include_camera: bool = True, form: str = "agreement",
                 class_weights: np.ndarray | None = None):  # fmt: skip
        idms = list(idms) if isinstance(idms, (list, tuple)) else [idms]
        if not idms:
            raise ConfigError("the reward's IDM ensemble is empty: pass at least one IDM (reward.idm)")
        if form not in REWARD_FORMS:
            raise ConfigError(f"unknown reward form {form!r}; choose one of {sorted(REWARD_FORMS)}")
        domains = sorted({idm.domain for idm in idms})
        if len(domains) > 1:
            raise ConfigError(f"the reward's IDMs read different action domains {domains}; an ensemble needs one")
        for idm in idms:
            if idm.context_frames not in (0, 1):
                raise ConfigError(
                    f"IDM {idm.name!r} wants {idm.context_frames} real frames before the generated ones; a rollout "
                    "has one context frame, so only IDMs with context_frames 0 or 1 can score it"
                )
            if form == "soft" and (idm.domain != "crafter" or not callable(getattr(idm, "logits", None))):
                raise ConfigError(f"reward form 'soft' needs IDMs that give one probability per compact action (the "
                                  f"Crafter IDMs' logits); {idm.name!r} does not: use form 'exact' or "
                                  "'agreement'")  # fmt: skip
        if (form == "task-weighted") != (class_weights is not None):
            raise ConfigError("reward form 'task-weighted' needs class_weights (posttrain.rewards.task_class_weights "
                              "of the training prompts), and the other forms take none")  # fmt: skip
        self.idms = idms
        self.taxonomy = taxonomy
        self.include_camera = include_camera
        self.form = form
        self.class_weights = None if class_weights is None else np.asarray(class_weights, dtype=np.float64)
        names = "+".join(idm.name for idm in idms)
        self.name = f"idm:{names}" if form == "agreement" else f"idm:{names}:{form}"
        self.last_labels: tuple[np.ndarray, np.ndarray] | None = None
        """``(commanded, recovered)`` labels ``int64[B, F, n_tasks]`` of the last call, by the first IDM."""
        self.last_actions: tuple[np.ndarray, Any] | None = None
        """``(commanded compact actions, the first IDM's predictions)`` of the last call."""

    @property
    def idm(self) -> Any:
        """The first (for one IDM: the) IDM of the ensemble."""
        return self.idms[0]

    def commanded_labels(self, actions: np.ndarray, items: Sequence[Any] | None) -> np.ndarray:
        """``int64[B, F, n_tasks]`` labels of the commanded actions (:func:`evaluation.scoring.commanded_labels`)."""
        return commanded_labels(self.taxonomy, self.idm.domain, actions, items)

    def __call__(self, frames: np.ndarray, actions: np.ndarray, items: Sequence[Any] | None = None) -> np.ndarray:
        actions = np.asarray(actions)
        commanded = self.commanded_labels(actions, items)
        rewards = []
        for idm in self.idms:
            if self.form == "soft":  # one IDM forward gives both the probabilities and the predicted actions
                logits = idm.logits(idm_input(idm, frames[:, :1], frames[:, 1:]))
                scores = pair_predictions(idm, self.taxonomy, most_likely_actions(logits), commanded)
                log_probs = torch.log_softmax(logits, dim=-1).cpu().numpy().astype(np.float64)
                taken = label_actions(actions, idm.domain).astype(np.int64)
                rewards.append(np.exp(np.take_along_axis(log_probs, taken[..., None], axis=-1)[..., 0]))
            else:
                scores = score_frames(idm, self.taxonomy, frames[:, :1], frames[:, 1:], commanded)
                rewards.append(self._label_form(scores.commanded, scores.recovered))
            if idm is self.idm:
                self.last_labels = (scores.commanded, scores.recovered)
                self.last_actions = (actions, scores.predicted)
        return np.mean(rewards, axis=0)

    def _label_form(self, commanded: np.ndarray, recovered: np.ndarray) -> np.ndarray:
        if self.form in ("agreement", "exact"):
            return frame_agreement(commanded, recovered, self.taxonomy, include_camera=self.include_camera,
                                   exact=self.form == "exact")  # fmt: skip
        columns = self.taxonomy.scored_indices(self.include_camera)
        weights = self.class_weights[columns, commanded[..., columns]]
        match = commanded[..., columns] == recovered[..., columns]
        return (weights * match).sum(axis=-1) / weights.sum(axis=-1)

    def describe(self, sample: int) -> list[dict[str, Any]]:
        """Per frame of ``sample`` in the last call: commanded and recovered labels (first IDM) by task name."""
        if self.last_labels is None:
            return []
        commanded, recovered = self.last_labels
        keys = self.taxonomy.task_keys
        crafter = self.idm.domain == "crafter" and self.last_actions is not None
        if crafter:
            from worldmodels.actions.crafter import ACTION_NAMES
        rows = []
        for k in range(commanded.shape[1]):
            row: dict[str, Any] = {
                "commanded": {key: int(v) for key, v in zip(keys, commanded[sample, k])},
                "recovered": {key: int(v) for key, v in zip(keys, recovered[sample, k])},
            }
            if crafter:
                row["commanded_action"] = ACTION_NAMES[int(self.last_actions[0][sample, k])]
                row["recovered_action"] = ACTION_NAMES[int(np.asarray(self.last_actions[1])[sample, k])]
            rows.append(row)
        return rows


class PixelReward:
    """RLVR-World's pixel reward, the baseline RLIR compares with: per generated frame
    ``-(l1_weight * L1 + perceptual_weight * D)`` against the suite's ground-truth frame.

    ``L1`` is the mean absolute difference of intensities in ``[0, 1]``. The perceptual distance ``D`` is LPIPS
    (AlexNet v0.1, :mod:`evaluation.metrics.lpips`) when its two weight files are supplied, otherwise
    ``1 - SSIM`` (:func:`evaluation.metrics.video.ssim_per_frame`, needs frames of at least 11 x 11 pixels);
    :attr:`perceptual` says which one is used. Needs the suite items (ground truth) for every call.

    Args:
        lpips_backbone, lpips_linear: ``alexnet-owt-7be5be79.pth`` and ``alex.pth`` (both or neither).
        l1_weight, perceptual_weight: the two terms' weights (RLVR-World: 1 and 1).
        device: where LPIPS runs.
    """

    def __init__(
        self,
        *,
        lpips_backbone: str | Path | None = None,
        lpips_linear: str | Path | None = None,
        l1_weight: float = 1.0,
        perceptual_weight: float = 1.0,
        device: str = "cpu",
    ):
        if (lpips_backbone is None) != (lpips_linear is None):
            raise ConfigError("LPIPS needs both weight files (backbone and linear layers), or neither for 1 - SSIM")
        self.lpips_model = None
        if lpips_backbone is not None:
            from evaluation.metrics.lpips import LPIPSAlex

            self.lpips_model = LPIPSAlex.from_files(lpips_backbone, lpips_linear).to(device)
        self.perceptual = "lpips" if self.lpips_model is not None else "1-ssim"
        self.l1_weight = float(l1_weight)
        self.perceptual_weight = float(perceptual_weight)
        self.device = device
        self.name = f"pixel:l1+{self.perceptual}"

    def __call__(self, frames: np.ndarray, actions: np.ndarray, items: Sequence[Any] | None = None) -> np.ndarray:
        if items is None or any(getattr(item, "ground_truth", None) is None for item in items):
            raise DataError("the pixel reward needs each sample's suite item with ground-truth frames (items=...)")
        generated = frames[:, 1:]
        truth = np.stack([item.ground_truth[: generated.shape[1]] for item in items])
        if truth.shape != generated.shape:
            raise DataError(
                f"ground truth {list(truth.shape)} does not match the generated frames {list(generated.shape)}"
            )
        l1 = np.abs(generated.astype(np.float32) - truth.astype(np.float32)).mean(axis=(2, 3, 4)) / 255.0
        if self.lpips_model is not None:
            from evaluation.metrics.lpips import lpips_per_frame

            distance = lpips_per_frame(generated, truth, model=self.lpips_model, device=self.device)
        else:
            from evaluation.metrics.video import ssim_per_frame

            distance = 1.0 - ssim_per_frame(generated, truth)
        return -(self.l1_weight * l1.astype(np.float64) + self.perceptual_weight * distance)


class WeightedRewardSum:
    """Per frame, ``sum_k weights[k] * rewards[k](frames, actions)``: several rewards in one trajectory reward, as
    TRL's ``reward_weights`` combine its ``reward_funcs`` (e.g. RLIR's inverse reward plus a little of the pixel
    reward, to pay for action-following without paying with visual quality). Each term goes through
    :func:`compute_rewards` (shape and finiteness checked, naming the term); :attr:`last_terms` keeps each term's
    mean of the last call, by ``labels`` (default: the terms' names), for the logs.

    Raises:
        ConfigError: no rewards, a weight count that does not match, a weight that is not a finite number, or two
            terms with one label.
    """

    def __init__(self, rewards: Sequence[Any], weights: Sequence[float], labels: Sequence[str] | None = None):
        rewards, weights = list(rewards), [float(w) for w in weights]
        if not rewards or len(rewards) != len(weights):
            raise ConfigError(f"a weighted reward sum needs one weight per reward, got {len(rewards)} rewards and "
                              f"{len(weights)} weights")  # fmt: skip
        if not all(np.isfinite(weights)):
            raise ConfigError(f"reward weights must be finite numbers, got {weights}")
        self.rewards = rewards
        self.weights = weights
        self.labels = [reward_name(r) for r in rewards] if labels is None else list(labels)
        if len(set(self.labels)) != len(rewards):
            raise ConfigError(f"a weighted reward sum needs one distinct label per reward, got {self.labels}")
        self.name = " + ".join(f"{w:g}*{reward_name(r)}" for r, w in zip(rewards, weights))
        self.last_terms: dict[str, float] = {}

    def __call__(self, frames: np.ndarray, actions: np.ndarray, items: Sequence[Any] | None = None) -> np.ndarray:
        terms = [compute_rewards(reward, frames, actions, items) for reward in self.rewards]
        self.last_terms = {label: float(term.mean()) for label, term in zip(self.labels, terms)}
        return sum(w * t for w, t in zip(self.weights, terms))

    def describe(self, sample: int) -> list[dict[str, Any]]:
        """What the first term that describes its frames says of ``sample`` (the IDM's labels, for ``idm+pixel``)."""
        for reward in self.rewards:
            if hasattr(reward, "describe"):
                return reward.describe(sample)
        return []


DEFAULT_IDMS = {"minecraft": "vpt-4x-idm", "crafter": "crafter-idm-reward"}
"""The IDM a domain's reward uses unless ``reward.idm`` names another. For Crafter the reward IDM is kept apart from
the held-out IDM that scores the leaderboard (``crafter-idm-heldout``), so post-training cannot overfit the judge."""


def build_reward(config: Any, suite: Any, *, device: str = "cpu") -> Any:
    """The reward a :class:`~posttrain.config.RewardConfig` describes, for ``suite``'s domain.

    Raises:
        ConfigError: a pixel reward for a suite without ground truth, an IDM of another domain, or an impossible
            form (:class:`IDMReward`).
    """
    if config.kind not in REWARDS:
        raise ConfigError(f"unknown reward kind {config.kind!r}; use one of {list(REWARDS)}")
    if "pixel" in config.kind and not suite.has_ground_truth:
        raise ConfigError(f"reward.kind={config.kind} needs ground-truth frames, and suite {suite.name!r} has none; "
                          "use reward.kind=idm")  # fmt: skip
    if config.kind == "idm+pixel":
        terms = [build_reward(dataclasses.replace(config, kind=kind), suite, device=device) for kind in ("idm", "pixel")]
        return WeightedRewardSum(terms, [1.0, config.pixel_weight], labels=["idm", "pixel"])
    if config.kind == "pixel":
        return PixelReward(
            lpips_backbone=config.lpips_backbone, lpips_linear=config.lpips_linear, l1_weight=config.l1_weight,
            perceptual_weight=config.perceptual_weight, device=device,
        )  # fmt: skip
    names = expand_idm_names(list(config.idm)) or [DEFAULT_IDMS.get(suite.domain)]
    if names == [None]:
        raise ConfigError(f"no default IDM for domain {suite.domain!r}; pass reward.idm (--idm)")
    idms = [load_idm(name, device=device) for name in names]
    for idm in idms:
        if idm.domain != suite.domain:
            raise ConfigError(f"IDM {idm.name!r} reads {idm.domain!r} actions, suite {suite.name!r} is "
                              f"{suite.domain!r}")  # fmt: skip
    taxonomy = taxonomy_for(suite)
    class_weights = None
    if config.form == "task-weighted":
        prompts = [taxonomy.labels(target_actions(suite[i], suite.domain)) for i in range(len(suite))]
        class_weights = task_class_weights(np.concatenate(prompts), taxonomy)
    return IDMReward(idms, taxonomy, include_camera=config.include_camera, form=config.form,
                     class_weights=class_weights)  # fmt: skip
