"""The forms of RLIR's inverse reward (agreement, exact, soft, task-weighted) and IDM ensembles, checked on real
Crafter frames (the bundled suite's ground truth) with the two bundled Crafter IDMs, against their definitions."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.idm.registry import HELDOUT_IDM, IDM_ENSEMBLES, REWARD_ENSEMBLE, REWARD_IDM, load_idm
from evaluation.metrics.taxonomy import CRAFTER_TAXONOMY
from evaluation.scoring import frame_agreement, score_frames, taxonomy_for
from evaluation.suites import CRAFTER_SUITE, load_suite
from posttrain.config import REWARD_FORMS, REWARDS, load_config
from posttrain.rewards import (
    IDMReward,
    PixelReward,
    WeightedRewardSum,
    build_reward,
    compute_rewards,
    task_class_weights,
)
from worldmodels.actions.crafter import ACTION_NAMES
from worldmodels.errors import ConfigError, DataError, NumericalError


@pytest.fixture(scope="module")
def suite():
    return load_suite(CRAFTER_SUITE)


@pytest.fixture(scope="module")
def idms():
    return [load_idm(REWARD_IDM), load_idm(HELDOUT_IDM)]


@pytest.fixture(scope="module")
def batch(suite):
    items = [suite[i] for i in range(8)]
    frames = np.stack([np.concatenate([item.context_frames[-1:], item.ground_truth]) for item in items])
    return frames, np.stack([item.actions for item in items]), items


def test_an_ensemble_pays_the_mean_of_its_members(idms, batch):
    frames, actions, items = batch
    singles = [compute_rewards(IDMReward(idm, CRAFTER_TAXONOMY), frames, actions, items) for idm in idms]
    ensemble = IDMReward(idms, CRAFTER_TAXONOMY)
    assert ensemble.name == f"idm:{REWARD_IDM}+{HELDOUT_IDM}" and ensemble.idm is idms[0]
    assert np.array_equal(compute_rewards(ensemble, frames, actions, items), (singles[0] + singles[1]) / 2)
    assert not np.array_equal(singles[0], singles[1])  # two IDMs that read real frames differently somewhere
    assert ensemble.describe(0)[0]["commanded_action"] == ACTION_NAMES[actions[0, 0]]


def test_exact_is_all_tasks_matched(idms, batch):
    frames, actions, items = batch
    scores = score_frames(idms[0], CRAFTER_TAXONOMY, frames[:, :1], frames[:, 1:], IDMReward(
        idms[0], CRAFTER_TAXONOMY).commanded_labels(actions, items))  # fmt: skip
    exact = compute_rewards(IDMReward(idms[0], CRAFTER_TAXONOMY, form="exact"), frames, actions, items)
    assert np.array_equal(exact, (scores.predicted == actions).astype(float))  # one action = one label row
    assert np.array_equal(exact, frame_agreement(scores.commanded, scores.recovered, CRAFTER_TAXONOMY, exact=True))
    assert 0 < exact.mean() < 1


def test_soft_is_the_probability_of_the_commanded_action(idms, batch):
    frames, actions, items = batch
    reward = IDMReward(idms[0], CRAFTER_TAXONOMY, form="soft")
    soft = compute_rewards(reward, frames, actions, items)
    # its one IDM forward also yields the labels the benchmark's scoring path reads
    scores = score_frames(idms[0], CRAFTER_TAXONOMY, frames[:, :1], frames[:, 1:], reward.commanded_labels(actions, items))
    assert np.array_equal(reward.last_actions[1], scores.predicted)
    assert np.array_equal(reward.last_labels[1], scores.recovered)
    logits = idms[0].logits(frames).numpy().astype(np.float64)
    probabilities = np.exp(logits - logits.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    expected = np.take_along_axis(probabilities, actions[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(soft, expected, rtol=1e-5, atol=1e-7)
    # the probability of the action the IDM picks is at least that of any other
    exact = compute_rewards(IDMReward(idms[0], CRAFTER_TAXONOMY, form="exact"), frames, actions, items)
    assert soft[exact == 1].min() >= 1 / 17 and soft[exact == 0].max() <= 0.5 + 1e-9


def test_task_weights_are_inverse_class_frequencies():
    taxonomy = CRAFTER_TAXONOMY
    commanded = taxonomy.labels(np.array([0, 0, 0, 1]))  # three no-ops and one move
    weights = task_class_weights(commanded, taxonomy)
    assert weights.shape == (len(taxonomy.tasks), taxonomy.max_classes)
    moving = taxonomy.labels(np.array([1]))[0]
    resting = taxonomy.labels(np.array([0]))[0]
    for task, (rest, move) in enumerate(zip(resting, moving)):
        if rest == move:  # a task both actions leave alone: its class was commanded 4 times in 4
            assert weights[task, rest] == 1.0
        else:
            assert weights[task, rest] == 4 / 3 and weights[task, move] == 4.0
    with pytest.raises(DataError, match="at least one commanded frame"):
        task_class_weights(commanded[:0], taxonomy)


def test_task_weighted_reward_by_hand():
    taxonomy = CRAFTER_TAXONOMY
    weights = task_class_weights(taxonomy.labels(np.array([0, 0, 0, 1])), taxonomy)

    class ReadsNoop:  # an IDM that reads every transition as a no-op
        name, domain, context_frames = "noop-reader", "crafter", 1

        def predict_actions(self, frames):
            return np.zeros((frames.shape[0], frames.shape[1] - 1), dtype=np.int64)

    reward = IDMReward(ReadsNoop(), taxonomy, form="task-weighted", class_weights=weights)
    frames = np.zeros((1, 3, 72, 72, 3), dtype=np.uint8)
    values = compute_rewards(reward, frames, np.array([[0, 1]]))
    commanded = taxonomy.labels(np.array([0, 1]))
    recovered = taxonomy.labels(np.array([0, 0]))
    match = commanded == recovered
    w = weights[np.arange(len(taxonomy.tasks)), commanded]
    assert values[0, 0] == 1.0  # the no-op was read as commanded
    assert values[0, 1] == pytest.approx((w[1] * match[1]).sum() / w[1].sum())
    # the missed move costs more than under the agreement form, which its unmoved 'none' columns prop up
    agreement = compute_rewards(IDMReward(ReadsNoop(), taxonomy), frames, np.array([[0, 1]]))
    assert values[0, 1] < agreement[0, 1]


def test_bad_ensembles_and_forms_are_refused(idms):
    class MinecraftIDM:
        name, domain, context_frames = "vpt-like", "minecraft", 0

    with pytest.raises(ConfigError, match="ensemble is empty"):
        IDMReward([], CRAFTER_TAXONOMY)
    with pytest.raises(ConfigError, match="different action domains"):
        IDMReward([idms[0], MinecraftIDM()], CRAFTER_TAXONOMY)
    with pytest.raises(ConfigError, match="unknown reward form 'fuzzy'"):
        IDMReward(idms[0], CRAFTER_TAXONOMY, form="fuzzy")
    with pytest.raises(ConfigError, match="'soft' needs IDMs that give one probability per compact action"):
        IDMReward(MinecraftIDM(), CRAFTER_TAXONOMY, form="soft")
    with pytest.raises(ConfigError, match="'task-weighted' needs class_weights"):
        IDMReward(idms[0], CRAFTER_TAXONOMY, form="task-weighted")


def test_the_config_names_the_form_and_the_ensemble(suite):
    config = load_config(None, ["reward.form=task-weighted"],
                         values={"reward.idm": f"{REWARD_IDM},{HELDOUT_IDM}", "model.path": "m", "data.suite": "s",
                                 "out": "o"}).validate()  # fmt: skip
    assert config.reward.idm == [REWARD_IDM, HELDOUT_IDM] and config.reward.form == "task-weighted"
    reward = build_reward(config.reward, suite)
    assert [idm.name for idm in reward.idms] == [REWARD_IDM, HELDOUT_IDM]
    prompts = np.concatenate([taxonomy_for(suite).labels(suite[i].actions) for i in range(len(suite))])
    assert np.array_equal(reward.class_weights, task_class_weights(prompts, CRAFTER_TAXONOMY))
    with pytest.raises(ConfigError, match="reward.form must be one of"):
        load_config(None, ["reward.form=fuzzy"], values={"model.path": "m", "data.suite": "s", "out": "o"}).validate()
    with pytest.raises(ConfigError, match=r"unknown config keys \['reward.exact'\].*'form'"):
        load_config(None, ["reward.exact=true"])
    assert set(REWARD_FORMS) == {"agreement", "exact", "soft", "task-weighted"}


def test_the_command_line_offers_every_form_and_an_ensemble():
    import argparse

    from rlir.commands.posttrain import add_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    choices = next(a.choices for a in parser._actions if a.dest == "reward_form")
    assert tuple(choices) == tuple(REWARD_FORMS)  # the CLI spells them out so that `rlir --help` loads no torch
    assert tuple(next(a.choices for a in parser._actions if a.dest == "reward")) == REWARDS  # the kinds likewise
    args = parser.parse_args(["--model", "m", "--data", "s", "--out", "o", "--idm", "a,b", "--reward-form", "soft"])
    config = config_from_args(args)
    assert config.reward.idm == ["a", "b"] and config.reward.form == "soft"
    args = parser.parse_args(["--model", "m", "--data", "s", "--out", "o", "--reward", "idm+pixel", "--pixel-weight", "2"])
    config = config_from_args(args)
    assert (config.reward.kind, config.reward.pixel_weight) == ("idm+pixel", 2.0)


def test_an_ensemble_name_stands_for_its_members(suite):
    members = list(IDM_ENSEMBLES[REWARD_ENSEMBLE])
    config = load_config(None, [], values={"reward.idm": f"{REWARD_ENSEMBLE},{HELDOUT_IDM}", "model.path": "m",
                                           "data.suite": "s", "out": "o"}).validate()  # fmt: skip
    reward = build_reward(config.reward, suite)
    assert [idm.name for idm in reward.idms] == [*members, HELDOUT_IDM]
    assert reward.name == "idm:" + "+".join([*members, HELDOUT_IDM])
    with pytest.raises(ConfigError, match=f"'{REWARD_ENSEMBLE}' names an ensemble of 3 IDMs"):
        load_idm(REWARD_ENSEMBLE)


def test_idm_plus_pixel_pays_the_weighted_sum_of_the_two_rewards(suite, batch):
    frames, actions, items = batch
    config = load_config(None, ["reward.pixel_weight=0.5"], values={
        "reward.kind": "idm+pixel", "reward.form": "soft", "model.path": "m", "data.suite": "s", "out": "o"}).validate()
    reward = build_reward(config.reward, suite)
    assert isinstance(reward, WeightedRewardSum) and reward.weights == [1.0, 0.5] and reward.labels == ["idm", "pixel"]
    idm, pixel = reward.rewards
    assert isinstance(idm, IDMReward) and idm.form == "soft" and isinstance(pixel, PixelReward)
    total = compute_rewards(reward, frames, actions, items)
    parts = [compute_rewards(term, frames, actions, items) for term in (idm, pixel)]
    np.testing.assert_allclose(total, parts[0] + 0.5 * parts[1], rtol=1e-12)
    assert reward.last_terms == pytest.approx({"idm": parts[0].mean(), "pixel": parts[1].mean()})
    assert reward.describe(0) == idm.describe(0) and reward.name == f"1*{idm.name} + 0.5*{pixel.name}"


def test_bad_reward_sums_are_refused(suite, batch):
    frames, actions, items = batch
    with pytest.raises(ConfigError, match="one weight per reward, got 2 rewards and 1 weights"):
        WeightedRewardSum([PixelReward(), PixelReward()], [1.0])
    with pytest.raises(ConfigError, match="finite numbers"):
        WeightedRewardSum([PixelReward()], [float("nan")])
    with pytest.raises(ConfigError, match="one distinct label per reward"):
        WeightedRewardSum([PixelReward(), PixelReward()], [1.0, 1.0])
    with pytest.raises(ConfigError, match="reward.pixel_weight must be a finite number > 0, got -1.0"):
        load_config(None, ["reward.pixel_weight=-1"], values={"model.path": "m", "data.suite": "s", "out": "o"}).validate()
    with pytest.raises(ConfigError, match="reward.kind must be one of"):
        load_config(None, ["reward.kind=idm*pixel"], values={"model.path": "m", "data.suite": "s", "out": "o"}).validate()

    def broken(frames, actions):
        return np.full((len(frames), frames.shape[1] - 1), np.nan)

    with pytest.raises(NumericalError, match="reward 'broken' returned nan for video 0, frame 0"):
        compute_rewards(WeightedRewardSum([PixelReward(), broken], [1.0, 1.0]), frames, actions, items)
