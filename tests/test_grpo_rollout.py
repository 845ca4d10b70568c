"""Group rollouts with a shared-prefix KV cache, the teacher-forced log-prob replay, and the rewards, on the tiny
MineWorld (4x6 tokens, 11 action tokens, 4 frame-action pairs of context: rollouts longer than 3 frames slide)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evaluation.metrics.action import rlir_frame_reward
from evaluation.metrics.taxonomy import CRAFTER_TAXONOMY, MINECRAFT_TAXONOMY
from evaluation.metrics.video import SSIM_C1, SSIM_C2
from evaluation.scoring import score_item
from evaluation.suites import SuiteItem, make_suite
from posttrain.data import prompts_from_suite
from posttrain.grpo.replay import hidden_states, replay_logprobs, replay_mode
from posttrain.grpo.rollout import decode_videos, rollout
from posttrain.rewards import IDMReward, PixelReward, compute_rewards
from tests.world_models import tiny_minecraft_suite, tiny_mineworld, tiny_vpt_idm_files
from worldmodels.errors import ConfigError, NumericalError
from worldmodels.mineworld import ContextWindow as Segment
from worldmodels.mineworld import SamplingConfig
from worldmodels.mineworld import context_windows as plan_segments

SAMPLING = SamplingConfig(temperature=1.0)


@pytest.fixture(scope="module")
def model():
    return tiny_mineworld(seed=3)


@pytest.fixture(scope="module")
def suite(model):
    return tiny_minecraft_suite(model, n_items=4, n_frames=5)


def _count_prefills(model):
    """Spy on the model's prefill: record the cache rows every call rebuilds."""
    calls = []
    real = model._prefill

    def counting(state, rows):
        calls.append(list(rows))
        return real(state, rows)

    model._prefill = counting
    return calls


# -- context windows --------------------------------------------------------------------------------------------------


def test_plan_segments_by_hand(model):
    # tiny: 24 image + 11 action tokens per pair, 140 positions, 2 reference frames.
    # 1 context frame + 5 frames: lengths 24 -> 59 -> 94 -> 129; the 4th frame needs 164 > 140, so frames 2..3 are
    # kept (59 positions) and frames 4, 5 are generated in a second window.
    assert model.reference_frames == 2
    assert plan_segments(model.config, 1, 5, 2) == (Segment(0, 3, 1), Segment(2, 5, 4))
    assert plan_segments(model.config, 1, 3, 2) == (Segment(0, 3, 1),)
    # a full context (4 frames = 129 positions) slides before anything is generated
    assert plan_segments(model.config, 4, 2, 2) == (Segment(2, 5, 4),)
    with pytest.raises(ConfigError, match="context of 5 frames"):
        plan_segments(model.config, 5, 1, 2)


# -- rollouts ---------------------------------------------------------------------------------------------------------


def test_one_prefill_per_prompt_and_same_tokens_as_without_sharing(model, suite):
    prompts = prompts_from_suite(suite, [0, 2], n_frames=3)  # 3 frames: no slide, so every prefill is a context load
    calls = _count_prefills(model)
    try:
        shared = rollout(model, prompts, group_size=4, sampling=SAMPLING, seed=1, iteration=5)
        assert sorted(r for rows in calls for r in rows) == [0, 4]  # one row per prompt, the group's first slot
        calls.clear()
        separate = rollout(model, prompts, group_size=4, sampling=SAMPLING, seed=1, iteration=5, share_prefix=False)
        assert sorted(r for rows in calls for r in rows) == list(range(8))
    finally:
        del model._prefill
    assert shared.prefill_rows == 2 and separate.prefill_rows == 8
    assert torch.equal(shared.tokens, separate.tokens)
    assert torch.equal(shared.sampler_logprobs, separate.sampler_logprobs)
    # the members of a group differ (independent generators), and the tokens are valid image ids
    assert not torch.equal(shared.tokens[0, 0], shared.tokens[0, 1])
    assert shared.tokens.shape == (2, 4, 3, 24) and int(shared.tokens.max()) < model.config.image_vocab_size


def test_rollouts_do_not_depend_on_batching_and_are_seeded(model, suite):
    prompts = prompts_from_suite(suite, [1, 3], n_frames=5, keys=[7, 8])
    together = rollout(model, prompts, group_size=3, sampling=SAMPLING, seed=0, iteration=2)
    one_by_one = rollout(model, prompts, group_size=3, sampling=SAMPLING, seed=0, iteration=2, prompts_per_state=1)
    assert torch.equal(together.tokens, one_by_one.tokens)
    again = rollout(model, prompts, group_size=3, sampling=SAMPLING, seed=0, iteration=2)
    assert torch.equal(together.tokens, again.tokens)
    other = rollout(model, prompts, group_size=3, sampling=SAMPLING, seed=0, iteration=3)
    assert not torch.equal(together.tokens, other.tokens)
    assert together.segments == (Segment(0, 3, 1), Segment(2, 5, 4))


def test_greedy_rollouts_are_refused(model, suite):
    with pytest.raises(ConfigError, match="greedy"):
        rollout(model, prompts_from_suite(suite, [0]), group_size=2, sampling=SamplingConfig(temperature=0), seed=0,
                iteration=0)  # fmt: skip


# -- replay -----------------------------------------------------------------------------------------------------------


def test_replay_scores_exactly_the_generated_image_tokens(model, suite):
    """Without a slide the rollout is one sequence [f0 | a1 | f1 | a2 | f2 | a3 | f3]; generated token j of frame k
    sits at position k * 35 + j and is predicted by the logits one position earlier."""
    prompts = prompts_from_suite(suite, [0, 1], n_frames=3)
    batch = rollout(model, prompts, group_size=2, sampling=SAMPLING, seed=4, iteration=0)
    samples = torch.arange(4)
    with replay_mode(model), torch.no_grad():
        logp, entropy = replay_logprobs(model, batch, samples, with_entropy=True)
    assert logp.shape == (4, 3, 24) and entropy.shape == (4, 3, 24)
    hw, a, vocab = 24, 11, model.config.image_vocab_size
    for s in range(4):
        p, g = divmod(s, 2)
        actions = model.action_tokens(prompts.actions[p], (3,))
        pieces = [batch.context_tokens[p, 0]]
        for k in range(3):
            pieces += [actions[k], batch.tokens[p, g, k]]
        sequence = torch.cat(pieces)
        assert sequence.numel() == 4 * hw + 3 * a
        with torch.no_grad():
            log_probs = F.log_softmax(model.logits(sequence[None])[0, :, :vocab].double(), dim=-1)
        for k in range(3):
            positions = (k + 1) * (hw + a) + torch.arange(hw)
            expected = log_probs[positions - 1].gather(-1, sequence[positions, None])[:, 0]
            assert torch.allclose(logp[s, k].double(), expected, atol=1e-5)
    # the sampler's own log-probs agree (a diagnostic: they come from the KV-cached decode path)
    assert (logp - batch.sampler_logprobs.flatten(0, 1)).abs().max() < 1e-4


def test_replay_follows_context_slides(model, suite):
    prompts = prompts_from_suite(suite, [2, 3], n_frames=5)
    batch = rollout(model, prompts, group_size=2, sampling=SamplingConfig(temperature=0.7), seed=9, iteration=1)
    assert len(batch.segments) == 2
    with replay_mode(model), torch.no_grad():
        logp, _ = replay_logprobs(model, batch, torch.arange(4), temperature=0.7)
    assert (logp - batch.sampler_logprobs.flatten(0, 1)).abs().max() < 1e-4
    with replay_mode(model), torch.no_grad():
        wrong, _ = replay_logprobs(model, batch, torch.arange(4), temperature=1.0)
    assert (wrong - batch.sampler_logprobs.flatten(0, 1)).abs().max() > 1e-2


@pytest.mark.parametrize("checkpointing", [False, True])
def test_ratio_is_exactly_one_at_the_first_micro_step(model, suite, checkpointing):
    prompts = prompts_from_suite(suite, [0, 3], n_frames=5)
    batch = rollout(model, prompts, group_size=3, sampling=SAMPLING, seed=2, iteration=0)
    micro = torch.tensor([1, 4, 5])
    with replay_mode(model):
        with torch.no_grad():
            old, _ = replay_logprobs(model, batch, micro)
        model.transformer.requires_grad_(True)
        try:
            new, _ = replay_logprobs(model, batch, micro, gradient_checkpointing=checkpointing)
            assert new.requires_grad
            ratio = torch.exp(new - old)
            assert torch.equal(ratio, torch.ones_like(ratio))
            new.sum().backward()
            assert model.transformer.lm_head.weight.grad.abs().sum() > 0
        finally:
            model.transformer.zero_grad(set_to_none=True)
            model.transformer.requires_grad_(False)


def test_replay_forward_equals_the_model_forward(model):
    ids = torch.randint(0, model.config.vocab_size, (2, 100), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(hidden_states(model.transformer, ids), model.transformer.hidden_states(ids))


# -- rewards ----------------------------------------------------------------------------------------------------------


def test_reward_shape_and_nan_errors_name_the_reward():
    frames = np.zeros((2, 4, 8, 8, 3), dtype=np.uint8)
    actions = np.zeros((2, 3), dtype=np.int64)

    def too_short(frames, actions):
        return np.zeros((2, 2))

    def nan_reward(frames, actions):
        out = np.zeros((2, 3))
        out[1, 2] = np.nan
        return out

    with pytest.raises(ValueError, match=r"too_short.*\[2, 2\].*\[2, 3\]"):
        compute_rewards(too_short, frames, actions)
    with pytest.raises(NumericalError, match=r"nan_reward.*video 1, frame 2"):
        compute_rewards(nan_reward, frames, actions)
    assert compute_rewards(lambda f, a: np.ones((2, 3)), frames, actions).shape == (2, 3)


def test_idm_reward_agrees_with_the_evaluator(model, suite, tmp_path):
    from evaluation.idm.registry import load_idm

    _, weights = tiny_vpt_idm_files(tmp_path)
    idm = load_idm(weights)
    assert idm.context_frames == 0
    prompts = prompts_from_suite(suite, [0, 1], n_frames=5)
    batch = rollout(model, prompts, group_size=2, sampling=SAMPLING, seed=0, iteration=0)
    videos = decode_videos(model, batch, prompts)
    assert videos.shape == (4, 6, 32, 48, 3)
    assert np.array_equal(videos[:, 0], np.repeat(prompts.context_frames[:, 0], 2, axis=0))
    items = [suite[int(i)] for i in prompts.items for _ in range(2)]
    reward = IDMReward(idm, MINECRAFT_TAXONOMY)
    values = compute_rewards(reward, videos, np.repeat(prompts.actions, 2, axis=0), items)
    assert values.shape == (4, 5)
    for s in range(4):  # the evaluator as referee: its labels, scored with the RLIR frame reward
        record = score_item(items[s], videos[s, 1:], 0, idm=idm, taxonomy=MINECRAFT_TAXONOMY, domain="minecraft",
                            video_metrics=False)  # fmt: skip
        expected = rlir_frame_reward(np.array(record.gt_labels), np.array(record.pred_labels), MINECRAFT_TAXONOMY)
        assert np.array_equal(values[s], expected)
    assert set(np.unique(values * 9).round(6)) <= set(range(10))  # fractions of the 9 tasks


def test_idm_reward_gives_transition_idms_the_context_frame():
    from evaluation.idm.crafter import CrafterIDM, CrafterIDMConfig

    torch.manual_seed(0)
    idm = CrafterIDM(CrafterIDMConfig(width=8, depth=1, frame_size=(16, 16), cell=8, cell_channels=4, flat_channels=2))
    assert idm.context_frames == 1
    rng = np.random.default_rng(0)
    items = [
        SuiteItem(id=f"c{i}", context_frames=rng.integers(0, 256, (1, 16, 16, 3), dtype=np.uint8),
                  context_actions=np.zeros((0,), dtype=np.int64), actions=rng.integers(0, 17, 4),
                  ground_truth=rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8))
        for i in range(3)
    ]  # fmt: skip
    crafter_suite = make_suite("tiny-crafter", 1, "crafter", items)
    videos = np.stack([np.concatenate([it.context_frames, it.ground_truth]) for it in items])
    actions = np.stack([it.actions for it in items])
    reward = IDMReward(idm, CRAFTER_TAXONOMY)
    values = compute_rewards(reward, videos, actions, [crafter_suite[i] for i in range(3)])
    for s, item in enumerate(items):
        record = score_item(item, item.ground_truth, 0, idm=idm, taxonomy=CRAFTER_TAXONOMY, domain="crafter",
                            video_metrics=False)  # fmt: skip
        expected = rlir_frame_reward(np.array(record.gt_labels), np.array(record.pred_labels), CRAFTER_TAXONOMY)
        assert np.array_equal(values[s], expected)
    # without items the commanded compact actions are used, and they are the same here
    assert np.array_equal(compute_rewards(reward, videos, actions), values)
    from worldmodels.actions.crafter import ACTION_NAMES

    rows = reward.describe(0)
    assert [row["commanded_action"] for row in rows] == [ACTION_NAMES[a] for a in actions[0]]


def test_pixel_reward_by_hand():
    class Item:
        def __init__(self, truth):
            self.ground_truth = truth

    reward = PixelReward()
    assert reward.perceptual == "1-ssim" and "1-ssim" in reward.name
    truth = np.full((2, 16, 16, 3), 150, dtype=np.uint8)
    same = np.concatenate([np.zeros((1, 16, 16, 3), np.uint8), truth])[None]
    assert compute_rewards(reward, same, np.zeros((1, 2)), [Item(truth)]).tolist() == [[0.0, 0.0]]
    darker = np.concatenate([np.zeros((1, 16, 16, 3), np.uint8), np.full((2, 16, 16, 3), 100, np.uint8)])[None]
    a, b = np.float64(np.float32(100 / 255)), np.float64(np.float32(150 / 255))
    ssim = (2 * a * b + SSIM_C1) * SSIM_C2 / ((a * a + b * b + SSIM_C1) * SSIM_C2)  # constant frames: no variance
    expected = -(50 / 255 + 1 - ssim)
    assert np.allclose(compute_rewards(reward, darker, np.zeros((1, 2)), [Item(truth)]), expected, atol=1e-6)
    with pytest.raises(ValueError, match="ground-truth"):
        reward(darker, np.zeros((1, 2)))


def test_speculative_rollouts_are_on_policy(model, suite):
    """Speculative decoding draws from the same distribution as naive decoding, and reports each token's log-prob
    under it: the replay agrees, so it can speed up training rollouts without making them off-policy."""
    prompts = prompts_from_suite(suite, [0, 1], n_frames=5)
    batch = rollout(model, prompts, group_size=2, sampling=SamplingConfig(decoding="speculative", draft_len=4), seed=3,
                    iteration=0)  # fmt: skip
    with replay_mode(model), torch.no_grad():
        logp, _ = replay_logprobs(model, batch, torch.arange(4))
    assert (logp - batch.sampler_logprobs.flatten(0, 1)).abs().max() < 1e-4
