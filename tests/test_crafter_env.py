"""rlir_env.crafter.env and score: the real Crafter behind the Gymnasium API, seeded determinism, the termination /
truncation split, info, rendering, errors, and the official Crafter score."""

from __future__ import annotations

import math
import warnings

import crafter
import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded
from gymnasium.utils.env_checker import check_env
from gymnasium.wrappers import HumanRendering

from rlir_env.crafter.env import ACHIEVEMENTS, CRAFTER_FPS, INVENTORY_ITEMS, SEMANTIC_IDS, SEMANTIC_NAMES, CrafterEnv
from rlir_env.crafter.policies import PersistentRandomPolicy, ScriptedExplorer
from rlir_env.crafter.score import crafter_score, success_rates
from worldmodels.actions.crafter import ACTION_SPACE, action_index
from worldmodels.errors import ActionError, ConfigError, DataError

ENV_ID = "RLIR-CrafterReal-v0"
NOOP = action_index("noop")


@pytest.fixture(scope="module", autouse=True)
def registered():
    # rlir_env registers the id on import once the lead wires it; register it here only if it is missing.
    if ENV_ID not in gym.registry:
        gym.register(id=ENV_ID, entry_point="rlir_env.crafter.env:CrafterEnv")


def rollout(env: CrafterEnv, seed: int, actions: list[int]) -> tuple[list[np.ndarray], list, list[dict]]:
    obs, info = env.reset(seed=seed)
    frames, rewards, infos = [obs], [], [info]
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        frames.append(obs)
        rewards.append((reward, terminated, truncated))
        infos.append(info)
        if terminated or truncated:
            break
    return frames, rewards, infos


def test_spaces_match_the_crafter_action_domain():
    env = CrafterEnv(size=48)
    assert env.observation_space == gym.spaces.Box(0, 255, (48, 48, 3), np.uint8)
    assert env.action_space == ACTION_SPACE and env.action_space is not ACTION_SPACE
    assert env.metadata == {"render_modes": ["rgb_array"], "render_fps": CRAFTER_FPS}
    obs, _ = env.reset(seed=0)
    assert obs.shape == (48, 48, 3) and obs.dtype == np.uint8 and obs.flags.c_contiguous


def test_check_env_passes_without_warnings():
    env = gym.make(ENV_ID, render_mode="rgb_array")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning check_env raises fails the test
        check_env(env.unwrapped)


def test_same_seed_same_rollout_different_seed_different_world():
    actions = [int(a) for a in np.random.default_rng(0).integers(0, 17, 60)]
    frames_a, rewards_a, infos_a = rollout(CrafterEnv(), 7, actions)
    other = CrafterEnv()
    rollout(other, 3, actions[:10])  # a played episode before must not matter (crafter counts episodes)
    frames_b, rewards_b, infos_b = rollout(other, 7, actions)
    assert len(frames_a) == len(frames_b) > 1
    for a, b in zip(frames_a, frames_b):
        np.testing.assert_array_equal(a, b)
    assert rewards_a == rewards_b
    for a, b in zip(infos_a, infos_b):
        np.testing.assert_array_equal(a["semantic"], b["semantic"])
        assert a["inventory"] == b["inventory"] and a["achievements"] == b["achievements"]
    frames_c, _, infos_c = rollout(CrafterEnv(), 8, actions)
    assert not np.array_equal(infos_a[0]["semantic"], infos_c[0]["semantic"])
    assert not np.array_equal(frames_a[0], frames_c[0])


def test_chunk_creatures_iterate_in_insertion_order():
    # crafter despawns creatures[randint(len)] from each chunk's collection; a set would order them by address.
    env = CrafterEnv()
    env.reset(seed=2)
    world = env._game._world
    index = {id(obj): i for i, obj in enumerate(world._objects) if obj is not None}
    assert world._chunks
    for members in world._chunks.values():
        order = [index[id(obj)] for obj in members]
        assert order == sorted(order)


def test_unseeded_resets_follow_the_first_seed():
    env = CrafterEnv()
    first = [env.reset(seed=11)[0]] + [env.reset()[0] for _ in range(2)]
    again = [env.reset(seed=11)[0]] + [env.reset()[0] for _ in range(2)]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[1], first[2])


def test_truncation_at_length_and_step_after_end_raises():
    env = CrafterEnv(length=4)
    env.reset(seed=0)
    flags = [env.step(NOOP)[2:4] for _ in range(4)]
    assert flags == [(False, False)] * 3 + [(False, True)]
    with pytest.raises(ResetNeeded, match="reset"):
        env.step(NOOP)
    env.reset(seed=1)
    assert env.step(NOOP)[2:4] == (False, False)


def test_random_play_dies_and_terminates_with_zero_discount():
    env = CrafterEnv(length=None)
    policy = PersistentRandomPolicy(repeat_p=0.5)
    policy.reset(np.random.default_rng(0))
    obs, info = env.reset(seed=0)
    for _ in range(2000):
        obs, reward, terminated, truncated, info = env.step(policy.act(obs, info))
        if terminated or truncated:
            break
    assert terminated and not truncated
    assert info["discount"] == 0.0 and info["inventory"]["health"] == 0


def test_death_on_the_last_step_is_termination_only():
    env = CrafterEnv(length=3)
    env.reset(seed=0)
    env.step(NOOP)
    env.step(NOOP)
    env._game._player.health = 0  # the third (last) step kills the player
    _, _, terminated, truncated, info = env.step(NOOP)
    assert (terminated, truncated) == (True, False) and info["discount"] == 0.0


def test_semantic_names_match_crafter_internals():
    env = CrafterEnv()
    env.reset(seed=0)
    material_ids = {("none" if name is None else name): i for name, i in env._game._world._mat_ids.items()}
    object_ids = {cls.__name__.lower(): i for cls, i in env._game._sem_view._obj_ids.items()}
    assert {**material_ids, **object_ids} == SEMANTIC_IDS
    assert SEMANTIC_NAMES[SEMANTIC_IDS["tree"]] == "tree" and len(SEMANTIC_NAMES) == 19


def test_info_contents_and_reward_formula():
    env = CrafterEnv()
    obs, info = env.reset(seed=4)
    assert set(info) == {
        "achievements", "inventory", "player_pos", "facing", "sleeping", "discount", "semantic", "unlocked"
    }  # fmt: skip
    assert tuple(info["achievements"]) == ACHIEVEMENTS and len(ACHIEVEMENTS) == 22
    assert tuple(info["inventory"]) == INVENTORY_ITEMS and info["inventory"]["health"] == 9
    assert info["unlocked"] == () and info["discount"] == 1.0 and info["sleeping"] is False
    assert info["player_pos"].dtype == np.int64 and info["semantic"].shape == (64, 64)
    explorer = ScriptedExplorer()
    explorer.reset(np.random.default_rng(0))
    health = info["inventory"]["health"]
    seen: set[str] = set()
    for _ in range(400):
        obs, reward, terminated, truncated, info = env.step(explorer.act(obs, info))
        x, y = info["player_pos"]
        assert info["semantic"][x, y] == SEMANTIC_IDS["player"]
        new_health = info["inventory"]["health"]
        # Crafter's reward: health change / 10, plus 1 on a step that unlocks anything for the first time.
        assert reward == pytest.approx((new_health - health) / 10 + (1.0 if info["unlocked"] else 0.0), abs=1e-9)
        health = new_health
        assert not seen & set(info["unlocked"])  # each achievement is "unlocked" once per episode
        assert all(info["achievements"][name] >= 1 for name in info["unlocked"])
        seen |= set(info["unlocked"])
        assert seen == {name for name, count in info["achievements"].items() if count > 0}
        if terminated or truncated:
            break
    assert "collect_wood" in seen


def test_render_modes():
    env = CrafterEnv(render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    frame = env.render()
    np.testing.assert_array_equal(frame, obs)
    assert frame is not obs
    big = CrafterEnv(render_mode="rgb_array", render_size=128)
    big.reset(seed=0)
    assert big.render().shape == (128, 128, 3) and big.render().dtype == np.uint8
    silent = CrafterEnv()
    silent.reset(seed=0)
    with pytest.warns(UserWarning, match="render_mode"):
        assert silent.render() is None
    with pytest.raises(ConfigError, match="human"):
        CrafterEnv(render_mode="human")
    with pytest.warns(UserWarning, match="HumanRendering"):  # Gymnasium wraps rgb_array in HumanRendering
        human = gym.make(ENV_ID, render_mode="human")
    wrapper = human
    while not isinstance(wrapper, HumanRendering) and isinstance(wrapper, gym.Wrapper):
        wrapper = wrapper.env
    assert isinstance(wrapper, HumanRendering) and human.unwrapped.render_mode == "rgb_array"


def test_rendering_at_night_does_not_change_the_rollout():
    # Crafter draws night noise from the world's RNG while rendering; render() must leave it untouched.
    plain, rendered = CrafterEnv(), CrafterEnv(render_mode="rgb_array", render_size=96)
    plain.reset(seed=2)  # the idle player survives the first night on this seed
    rendered.reset(seed=2)
    night_steps = 0
    for _ in range(190):
        obs_a, *_ = plain.step(NOOP)
        rendered.render()
        obs_b, *_ = rendered.step(NOOP)
        np.testing.assert_array_equal(obs_a, obs_b)
        night_steps += plain._game._world.daylight < 0.5
    assert night_steps > 10


@pytest.mark.parametrize("action", [17, -1, 2.5, "do", [1, 2], True, None])
def test_bad_actions_raise_action_error(action):
    env = CrafterEnv()
    env.reset(seed=0)
    with pytest.raises(ActionError, match="Crafter|action"):
        env.step(action)


def test_numpy_actions_are_accepted():
    env = CrafterEnv()
    env.reset(seed=0)
    env.step(np.int64(3))
    env.step(np.array(5))


def test_step_before_reset_and_bad_settings():
    with pytest.raises(ResetNeeded):
        CrafterEnv().step(NOOP)
    with pytest.raises(ConfigError, match="size"):
        CrafterEnv(size=0)
    with pytest.raises(ConfigError, match="length"):
        CrafterEnv(length=-5)
    env = CrafterEnv()
    with pytest.raises(ConfigError, match="options"):
        env.reset(seed=0, options={"scene": 1})


def test_crafter_score_matches_hand_computation():
    # Geometric mean of (1 + p) minus 1: (11 * 1 * 51) ** (1/3) - 1 for p = 10 %, 0 %, 50 %.
    assert crafter_score([10.0, 0.0, 50.0]) == pytest.approx((11 * 1 * 51) ** (1 / 3) - 1, rel=1e-12)
    assert crafter_score([10.0, float("nan"), 50.0]) == pytest.approx(math.sqrt(11 * 51) - 1, rel=1e-12)
    assert crafter_score([0.0] * 22) == 0.0 and crafter_score([100.0] * 22) == pytest.approx(100.0)
    rows = crafter_score([[10.0, 0.0, 50.0], [100.0, 100.0, 100.0]])
    np.testing.assert_allclose(rows, [(11 * 51) ** (1 / 3) - 1, 100.0])
    assert math.isnan(crafter_score([float("nan")] * 3))
    with pytest.raises(DataError, match="percent"):
        crafter_score([0.5, 120.0])
    with pytest.raises(DataError, match="scalar"):
        crafter_score(5.0)


def test_success_rates_from_episode_achievements():
    episodes = [{"collect_wood": 2, "place_table": 1}, {"collect_wood": 1}, {}, {"collect_wood": 0}]
    rates = success_rates(episodes)
    assert set(rates) == set(ACHIEVEMENTS)
    assert rates["collect_wood"] == 50.0 and rates["place_table"] == 25.0 and rates["eat_cow"] == 0.0
    with pytest.raises(DataError, match="episode"):
        success_rates([])


def test_world_is_crafters_first_world_for_the_drawn_seed():
    # Each reset plays the world a fresh crafter.Env(seed=world_seed) would generate first, whatever came before.
    env = CrafterEnv()
    env.reset(seed=1)
    obs, _ = env.reset(seed=9)
    game = crafter.Env(seed=env.world_seed)
    np.testing.assert_array_equal(game.reset(), obs)
    np.testing.assert_array_equal(game._world._mat_map, env._game._world._mat_map)
