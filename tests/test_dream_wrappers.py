"""rlir_env.dream.wrappers and RLIR-CrafterDream-v0: frame rewards and terminations on the real game and on a tiny
world model, single and vector, in both autoreset modes, through the SB3 adapter; the registered dream env; and one
clear error for each bad classifier output or mismatched env."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded
from gymnasium.vector import AutoresetMode

import rlir_env  # noqa: F401  (registers the ids)
from rlir_env.dream.heads import CrafterHeads
from rlir_env.dream.wrappers import (
    FrameReward,
    FrameTermination,
    LearnedCrafterReward,
    VectorFrameReward,
    VectorFrameTermination,
)
from rlir_env.sb3 import SB3VecEnv, make_sb3_env
from rlir_env.vector import WorldModelVectorEnv
from tests.test_dream_setup import SIZE, crafter_data, heads_file, tiny_model  # noqa: F401  (fixtures)
from worldmodels.errors import ConfigError, FrameError, NumericalError


def brightness_gain(frames: np.ndarray, prev_frames: np.ndarray) -> np.ndarray:
    """A frame reward the test can recompute: mean brightness change."""
    return frames.reshape(len(frames), -1).mean(1) - prev_frames.reshape(len(frames), -1).mean(1)


class EndAfter:
    """Terminates environment ``i`` on the ``limits[i]``-th step of each of its episodes (a stateful frame function)."""

    def __init__(self, limits):
        self.limits = np.asarray(limits)
        self.steps = np.zeros(len(self.limits), dtype=np.int64)
        self.resets: list[list[int]] = []

    def __call__(self, frames, prev_frames):
        self.steps += 1
        return self.steps >= self.limits

    def reset(self, env_ids):
        self.steps[env_ids] = 0
        self.resets.append(sorted(int(i) for i in env_ids))


def test_frame_reward_and_termination_on_the_real_game():
    env = FrameTermination(FrameReward(gym.make("RLIR-CrafterReal-v0", size=SIZE), brightness_gain), EndAfter([3]))
    obs, _ = env.reset(seed=0)
    reference = gym.make("RLIR-CrafterReal-v0", size=SIZE)
    ref_obs, _ = reference.reset(seed=0)
    assert np.array_equal(obs, ref_obs)
    prev = obs
    for step in range(1, 4):
        obs, reward, terminated, truncated, info = env.step(5)
        ref_obs, ref_reward, *_ = reference.step(5)
        assert np.array_equal(obs, ref_obs) and info["env_reward"] == ref_reward
        assert reward == pytest.approx(obs.mean() - prev.mean())
        assert terminated == (step == 3) and not truncated and info["env_terminated"] is False
        prev = obs
    with pytest.raises(ResetNeeded, match="after the episode ended"):
        env.step(0)
    env.reset(seed=1)
    assert not env.step(0)[2]  # the counter restarted with the episode


@pytest.mark.parametrize("mode", [AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP])
def test_vector_wrappers_on_the_real_game(mode):
    venv = gym.make_vec("RLIR-CrafterReal-v0", num_envs=2, vectorization_mode="sync",
                        vector_kwargs={"autoreset_mode": mode}, size=SIZE)  # fmt: skip
    end = EndAfter([2, 3])
    env = VectorFrameTermination(VectorFrameReward(venv, brightness_gain), end)
    obs, _ = env.reset(seed=[10, 11])
    prev = obs.copy()
    ended_at = {0: [], 1: []}
    for step in range(1, 6):
        obs, rewards, terminated, truncated, info = env.step(np.array([5, 5]))
        assert not truncated.any() and not info["env_terminated"].any()
        for i in np.flatnonzero(terminated):
            ended_at[i].append(step)
        if mode == AutoresetMode.SAME_STEP:
            final = np.stack([info["final_obs"][i] if terminated[i] else obs[i] for i in range(2)])
            np.testing.assert_allclose(rewards, brightness_gain(final, prev))
            for i in np.flatnonzero(terminated):  # reset at once: a fresh world of the same env
                assert not np.array_equal(obs[i], info["final_obs"][i])
        else:
            scored = ~np.isin(np.arange(2), [i for i in range(2) if step - 1 in ended_at[i]])
            np.testing.assert_allclose(rewards[scored], brightness_gain(obs, prev)[scored])
            assert (rewards[~scored] == 0).all()
        prev = obs.copy()
    if mode == AutoresetMode.SAME_STEP:  # episodes of 2 and 3 steps back to back
        assert ended_at == {0: [2, 4], 1: [3]}
    else:  # the step after an ending returns the reset frame and is not counted
        assert ended_at == {0: [2, 5], 1: [3]}


@pytest.mark.parametrize("mode", [AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP])
def test_vector_wrappers_on_a_tiny_world_model(tiny_model, crafter_data, mode):
    from rlir_env.dream.env import ShardScenes

    scenes = ShardScenes(crafter_data, pool_size=16)
    base = WorldModelVectorEnv(2, model=tiny_model, scenes=scenes, max_episode_steps=4, autoreset_mode=mode)
    end = EndAfter([2, 10])
    env = VectorFrameTermination(VectorFrameReward(base, brightness_gain), end)
    obs, _ = env.reset(seed=3)
    prev = obs.copy()
    starts = {tuple(f.ravel()[:64]) for f in scenes.frames[:, 0]}
    history = []
    for step in range(5):
        obs, rewards, terminated, truncated, info = env.step(np.array([1, 2]))
        history.append((terminated.copy(), truncated.copy()))
        if mode == AutoresetMode.SAME_STEP:
            done = terminated | truncated
            if terminated[0]:
                assert tuple(obs[0].ravel()[:64]) in starts  # reset to a real start frame in the same step
                assert info["_final_obs"][0]
            final = np.stack([info["final_obs"][i] if done[i] else obs[i] for i in range(2)])
            np.testing.assert_allclose(rewards, brightness_gain(final, prev))
        elif step == 4:  # env 1 was truncated by the world model last step: this step returns its reset frame
            assert rewards[1] == 0.0 and brightness_gain(obs, prev)[1] != 0.0
            assert tuple(obs[1].ravel()[:64]) in starts
        prev = obs.copy()
    terminated = np.array([h[0] for h in history])
    truncated = np.array([h[1] for h in history])
    assert terminated[1, 0] and not terminated[:, 1].any()  # env 0 dies on its 2nd step; env 1 never
    assert truncated[3, 1]  # env 1 hits the world model's 4-step limit
    assert [0] in end.resets  # the learned ending restarted env 0's counter


def test_sb3_adapter_sees_learned_terminations(tiny_model, crafter_data):
    from rlir_env.dream.env import ShardScenes

    base = WorldModelVectorEnv(2, model=tiny_model, scenes=ShardScenes(crafter_data, pool_size=8),
                               autoreset_mode=AutoresetMode.SAME_STEP)  # fmt: skip
    env = SB3VecEnv(VectorFrameTermination(VectorFrameReward(base, brightness_gain), EndAfter([1, 3])))
    env.reset()
    _, rewards, dones, infos = env.step(np.array([0, 0]))
    assert dones.tolist() == [True, False] and rewards.dtype == np.float32
    assert infos[0]["terminal_observation"].shape == (SIZE, SIZE, 3) and not infos[0]["TimeLimit.truncated"]


def test_registered_dream_env(tiny_model, heads_file, crafter_data):
    spec = gym.spec("RLIR-CrafterDream-v0")
    assert spec.max_episode_steps == 1000 and spec.vector_entry_point.endswith("make_dream_vector_env")
    env = gym.make("RLIR-CrafterDream-v0", model=tiny_model, heads=heads_file, scenes=str(crafter_data),
                   max_episode_steps=3)  # fmt: skip
    obs, _ = env.reset(seed=0)
    assert obs.shape == (SIZE, SIZE, 3) and obs.dtype == np.uint8
    for step in range(1, 4):
        obs, reward, terminated, truncated, info = env.step(1)
        assert isinstance(reward, float) and info["env_reward"] == 0.0
        if terminated:
            break
    assert terminated or (truncated and step == 3)
    heads = CrafterHeads.load(heads_file)
    heads.death_threshold = 2.0  # never: only the time limit ends episodes
    venv = make_sb3_env("RLIR-CrafterDream-v0", n_envs=2, seed=0, model=tiny_model, heads=heads,
                        scenes=str(crafter_data), max_episode_steps=2)  # fmt: skip
    venv.reset()
    venv.step(np.array([1, 1]))
    _, rewards, dones, infos = venv.step(np.array([1, 1]))
    assert dones.all() and all(info["TimeLimit.truncated"] for info in infos)
    # VecMonitor (on by default) reports each finished episode: SB3 logs ep_len_mean / ep_rew_mean from these
    assert [info["episode"]["l"] for info in infos] == [2, 2]
    bare = make_sb3_env("RLIR-CrafterDream-v0", n_envs=1, model=tiny_model, heads=heads, scenes=str(crafter_data),
                        max_episode_steps=1, monitor=False)  # fmt: skip
    bare.reset()
    assert "episode" not in bare.step(np.array([1]))[3][0] and isinstance(bare, SB3VecEnv)


@pytest.mark.parametrize("env_id", ["RLIR-CrafterReal-v0", "Test-CrafterRealSingle-v0"])
def test_sb3_env_of_the_real_game_reports_episodes(env_id):
    """The real game has its own vector env; an id without a vector entry point becomes SB3's ``DummyVecEnv``."""
    from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

    if env_id not in gym.registry:
        gym.register(env_id, entry_point="rlir_env.crafter.env:CrafterEnv")
    venv = make_sb3_env(env_id, n_envs=2, seed=3, size=36, length=3)
    assert isinstance(venv, VecMonitor)
    assert isinstance(venv.venv, DummyVecEnv) == (gym.spec(env_id).vector_entry_point is None)
    first = venv.reset()
    assert first.shape == (2, 36, 36, 3) and not np.array_equal(first[0], first[1])  # seeds 3 and 4
    for _ in range(3):
        _, _, dones, infos = venv.step(np.array([0, 0]))
    assert dones.all() and [info["episode"]["l"] for info in infos] == [3, 3]
    with pytest.raises(ConfigError, match="'RLIR-Nope-v0'"):
        make_sb3_env("RLIR-Nope-v0")


def test_bad_classifier_outputs_raise_clear_errors(tiny_model, crafter_data):
    from rlir_env.dream.env import ShardScenes

    env = WorldModelVectorEnv(2, model=tiny_model, scenes=ShardScenes(crafter_data, pool_size=4))
    cases = [
        (VectorFrameReward, lambda f, p: np.array([0.0, np.nan]), NumericalError, r"reward nan for env 1"),
        (VectorFrameReward, lambda f, p: np.zeros((2, 1)), ConfigError, r"float64\[2, 1\].*shape \(2,\)"),
        (VectorFrameReward, lambda f, p: np.zeros(2, dtype=np.int64), ConfigError, r"int64\[2\].*float array"),
        (VectorFrameTermination, lambda f, p: np.full(2, 0.7), ConfigError, r"bool array.*p > 0.5"),
        (VectorFrameTermination, lambda f, p: [True], ConfigError, r"bool\[1\] for 2 frame"),
    ]
    for wrapper, fn, error, message in cases:
        wrapped = wrapper(env, fn)
        wrapped.reset(seed=0)
        with pytest.raises(error, match=message):
            wrapped.step(np.array([0, 0]))
    single = FrameReward(gym.make("RLIR-CrafterReal-v0", size=SIZE), lambda f, p: np.array([np.inf]))
    single.reset(seed=0)
    with pytest.raises(NumericalError, match="env 0"):
        single.step(0)
    with pytest.raises(ResetNeeded, match="before reset"):
        FrameReward(gym.make("RLIR-CrafterReal-v0", size=SIZE), brightness_gain).step(0)


def test_mismatched_envs_raise_clear_errors(heads_file):
    stacked = gym.wrappers.FrameStackObservation(gym.make("RLIR-CrafterReal-v0", size=SIZE), 2)
    with pytest.raises(FrameError, match=r"uint8 Box of shape \(H, W, 3\).*before frame stacking"):
        FrameReward(stacked, brightness_gain)
    with pytest.raises(FrameError, match=r"reads 36 x 36 frames but the env gives 72 x 72.*size"):
        LearnedCrafterReward(gym.make("RLIR-CrafterReal-v0", size=72), heads_file)
    with pytest.raises(ConfigError, match="callable"):
        FrameTermination(gym.make("RLIR-CrafterReal-v0", size=SIZE), "not a function")


def test_dream_env_refuses_a_minecraft_model(heads_file):
    from tests.world_models import tiny_mineworld

    with pytest.raises(ConfigError, match="needs a Crafter world model"):
        gym.make("RLIR-CrafterDream-v0", model=tiny_mineworld(), heads=heads_file, scenes=None)
