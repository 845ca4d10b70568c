"""bench/real_game_spread.py rebuilds each suite clip's scene in the real game from the suite's protocol alone; that
replay must stay in step with ``suite_from_crafter`` (it checks itself against the ground truth, and this test pins
it), and a re-seeded world must still obey the clip's actions."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

from bench.real_game_spread import clip_start_scenes, play, redraw
from evaluation.suites import make_suite, suite_from_crafter


@pytest.fixture(scope="module")
def suite():
    return suite_from_crafter(name="spread-test", n_items=3, seed=5, n_frames=6, max_warmup=20)


def test_scenes_replay_to_the_ground_truth_and_redraws_keep_the_shape(suite):
    scenes = clip_start_scenes(suite)
    assert len(scenes) == len(suite)
    for item, scene in zip(suite, scenes):
        np.testing.assert_array_equal(play(copy.deepcopy(scene), item.actions), item.ground_truth)
        frames, tries = redraw(scene, item.actions, seed=11)
        assert frames.shape == item.ground_truth.shape and tries >= 1
        again, _ = redraw(scene, item.actions, seed=11)
        np.testing.assert_array_equal(frames, again)  # a redraw is a function of its seed


def test_a_suite_the_recipe_does_not_rebuild_is_refused(suite):
    items = [dataclasses.replace(item, ground_truth=item.ground_truth[::-1].copy()) for item in suite]
    tampered = make_suite("spread-test", 1, "crafter", items, protocol=suite.manifest["protocol"], fps=5.0)
    with pytest.raises(SystemExit, match="does not give its ground truth"):
        clip_start_scenes(tampered)
