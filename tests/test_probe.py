"""The post-training probe: the training reward, watching IDMs and PSNR with standard errors over items, on real
Crafter frames (the bundled suite's ground truth, blurred by noise) with the bundled IDMs."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.idm.registry import HELDOUT_IDM, REWARD_IDM, load_idm
from evaluation.metrics.taxonomy import CRAFTER_TAXONOMY
from evaluation.metrics.video import psnr_per_frame
from evaluation.suites import CRAFTER_SUITE, load_suite
from posttrain.data import prompts_from_suite
from posttrain.probe import probe_key, probe_values, score_probe, summarize_probe
from posttrain.rewards import IDMReward, compute_rewards


def _probe_inputs(seed: int):
    """Six suite prompts of 4 frames, their items, and ``videos(noise)``: the real context frame followed by the
    ground truth with uniform noise of +-``noise`` levels."""
    suite = load_suite(CRAFTER_SUITE)
    prompts = prompts_from_suite(suite, range(6), 4)
    items = [suite[i] for i in range(6)]
    rng = np.random.default_rng(seed)
    truth = np.stack([item.ground_truth[:4] for item in items])

    def videos(noise: int) -> np.ndarray:
        noisy = np.clip(truth.astype(int) + rng.integers(-noise, noise + 1, truth.shape), 0, 255).astype(np.uint8)
        return np.concatenate([prompts.context_frames[:, -1:], noisy], axis=1)

    return suite, prompts, items, truth, videos


def test_the_probe_reports_each_number_with_its_standard_error():
    suite, prompts, items, truth, make_videos = _probe_inputs(0)
    videos = make_videos(20)
    noisy = videos[:, 1:]
    reward = IDMReward(load_idm(REWARD_IDM), CRAFTER_TAXONOMY)
    watcher = IDMReward(load_idm(HELDOUT_IDM), CRAFTER_TAXONOMY, form="exact")
    result = score_probe(videos, prompts, suite, reward, [watcher])

    per_item = compute_rewards(reward, videos, prompts.actions, items).mean(axis=1)
    assert result["eval_reward_mean"] == pytest.approx(per_item.mean())
    assert result["eval_reward_sem"] == pytest.approx(per_item.std(ddof=1) / np.sqrt(6))
    assert len(result["eval_reward_per_frame"]) == 4
    key = probe_key(watcher)
    assert key == "eval_reward_crafter_idm_heldout"
    watched = compute_rewards(watcher, videos, prompts.actions, items).mean(axis=1)
    assert result[f"{key}_mean"] == pytest.approx(watched.mean())
    assert result[f"{key}_sem"] == pytest.approx(watched.std(ddof=1) / np.sqrt(6))
    psnr = psnr_per_frame(noisy, truth).mean(axis=1)
    assert result["eval_psnr_mean"] == pytest.approx(psnr.mean()) and 20 < result["eval_psnr_mean"] < 40
    assert result["eval_psnr_sem"] == pytest.approx(psnr.std(ddof=1) / np.sqrt(6))


def test_later_probes_report_their_paired_change_since_the_first():
    suite, prompts, _, _, videos = _probe_inputs(1)
    reward = IDMReward(load_idm(REWARD_IDM), CRAFTER_TAXONOMY, form="soft")
    first = probe_values(videos(10), prompts, suite, reward)
    assert summarize_probe(first).keys().isdisjoint({"eval_reward_change", "eval_psnr_change"})  # nothing to pair
    later_values = probe_values(videos(40), prompts, suite, reward)
    later = summarize_probe(later_values, first)
    difference = later_values["eval_psnr"] - first["eval_psnr"]
    assert later["eval_psnr_change"] == pytest.approx(difference.mean()) and later["eval_psnr_change"] < -3
    assert later["eval_psnr_change_sem"] == pytest.approx(difference.std(ddof=1) / np.sqrt(6))
    change = later_values["eval_reward"] - first["eval_reward"]
    assert later["eval_reward_change"] == pytest.approx(change.mean())
    assert later["eval_reward_mean"] == pytest.approx(later_values["eval_reward"].mean())
    assert set(score_probe(videos(40), prompts, suite, reward, baseline=first)) == set(later)
