"""World-model envs over the real tiny MineWorld model: Gymnasium API, batching, seeding, autoreset, wrappers, SB3."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

import rlir_env  # noqa: F401  (registers the env ids)
from rlir_env.env import WorldModelEnv
from rlir_env.vector import WorldModelVectorEnv
from rlir_env.wrappers import (
    ActionRepeat,
    MineRLDictActions,
    NamedDiscreteActions,
    ResizeFrames,
    VectorMineRLDictActions,
    VectorNamedDiscreteActions,
    VectorResizeFrames,
)
from tests.world_models import tiny_mineworld, tiny_scenes
from worldmodels.actions import minecraft
from worldmodels.errors import ActionError, ConfigError, FrameError
from worldmodels.mineworld import save_safetensors


@pytest.fixture(scope="module")
def model():
    return tiny_mineworld()


@pytest.fixture(scope="module")
def scenes(model):
    return tiny_scenes(model, n=4)


def rollout(env, actions, seed):
    obs, _ = env.reset(seed=seed)
    frames = [obs]
    for action in actions:
        obs, *_ = env.step(action)
        frames.append(obs)
    return np.stack(frames)


def test_check_env_passes(model, scenes):
    env = WorldModelEnv(model=model, scenes=scenes, render_mode="rgb_array")
    check_env(env, skip_render_check=True)  # render is checked below; check_env's render check needs a spec
    assert env.observation_space == gym.spaces.Box(0, 255, (32, 48, 3), np.uint8)
    assert env.action_space == minecraft.COMPACT_SPACE


def test_same_seed_same_rollout_and_single_equals_vector(model, scenes):
    rng = np.random.default_rng(0)
    actions = minecraft.COMPACT_SPACE.nvec * rng.random((5, 3, 9))
    actions = actions.astype(np.int64)
    single = WorldModelEnv(model=model, scenes=scenes)
    a = rollout(single, actions[:, 1], seed=11)
    b = rollout(single, actions[:, 1], seed=11)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, rollout(single, actions[:, 1], seed=12))
    # env i of a vector env reset with seed s behaves as a single env reset with seed s + i
    venv = WorldModelVectorEnv(3, model=model, scenes=scenes)
    batched = rollout(venv, actions, seed=10)
    assert np.array_equal(batched[:, 1], a)


def test_reset_options_scene_and_errors(model):
    env = WorldModelEnv(model=model)
    with pytest.raises(ConfigError, match="no start scene"):
        env.reset(seed=0)
    frames = np.zeros((2, 32, 48, 3), dtype=np.uint8)
    obs, _ = env.reset(seed=0, options={"frames": frames, "actions": [minecraft.to_compact(minecraft.noop())]})
    assert np.array_equal(obs, frames[-1])
    with pytest.raises(FrameError, match=r"uint8\[T, 32, 48, 3\]"):
        env.reset(options={"frames": np.zeros((1, 64, 64, 3), dtype=np.uint8)})
    with pytest.raises(FrameError, match="uint8"):
        env.reset(options={"frames": frames.astype(np.float32)})
    with pytest.raises(ConfigError, match="need 1 actions"):
        env.reset(options={"frames": frames})
    env.reset(options={"frames": frames[:1]})
    with pytest.raises(ActionError, match="outside slot 'pitch'"):
        env.step(np.array([21, 0, 0, 0, 0, 0, 0, 0, 0]))
    with pytest.raises(ConfigError, match="unknown reset options"):
        env.reset(options={"scene": "x"})


def test_truncation_and_autoreset_modes(model, scenes):
    noop = minecraft.to_compact([minecraft.noop()] * 2)
    next_step = WorldModelVectorEnv(2, model=model, scenes=scenes, max_episode_steps=2)
    next_step.reset(seed=0)
    truncations = [next_step.step(noop)[3].tolist() for _ in range(5)]
    # step 3 is the reset step of Gymnasium's NEXT_STEP mode (no episode step, action ignored)
    assert truncations == [[False, False], [True, True], [False, False], [False, False], [True, True]]

    same_step = WorldModelVectorEnv(2, model=model, scenes=scenes, max_episode_steps=2, autoreset_mode="SameStep")
    same_step.reset(seed=0)
    same_step.step(noop)
    obs, _, terminated, truncated, info = same_step.step(noop)
    assert truncated.all() and not terminated.any()
    assert info["_final_obs"].all() and info["final_obs"][0].shape == (32, 48, 3)
    assert any(np.array_equal(obs[0], s.frames[-1]) for s in scenes)  # already restarted from a scene
    with pytest.raises(ConfigError, match="DISABLED"):
        WorldModelVectorEnv(2, model=model, scenes=scenes, autoreset_mode="Disabled")


def test_partial_reset_leaves_other_envs_untouched(model, scenes):
    actions = np.tile(minecraft.to_compact(minecraft.noop() | {"forward": 1}), (2, 1))
    plain = WorldModelVectorEnv(2, model=model, scenes=scenes)
    plain.reset(seed=3)
    reference = [plain.step(actions)[0][1] for _ in range(3)]

    venv = WorldModelVectorEnv(2, model=model, scenes=scenes)
    venv.reset(seed=3)
    venv.step(actions)
    obs, _ = venv.reset(options={"reset_mask": np.array([True, False])})
    assert np.array_equal(obs[1], reference[0])
    for expected in reference[1:]:
        assert np.array_equal(venv.step(actions)[0][1], expected)


def test_obs_resize_and_render(model, scenes):
    env = ResizeFrames(WorldModelEnv(model=model, scenes=scenes, render_mode="rgb_array"), (64, 64))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64, 64, 3) and env.render().shape == (32, 48, 3)
    with pytest.raises(ConfigError, match=r"ResizeFrames\(env, \(64, 64\)\)"):
        WorldModelEnv(model=model, scenes=scenes, obs_size=(64, 64))


def test_resize_wrappers_equal_torch_antialiased_bilinear(model, scenes):
    import torch
    import torch.nn.functional as F

    def reference(frames):  # the documented definition, computed independently of the wrapper
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(20, 30), mode="bilinear", align_corners=False, antialias=True)
        return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()

    env = ResizeFrames(WorldModelEnv(model=model, scenes=scenes, render_mode="rgb_array"), (20, 30))
    obs, _ = env.reset(seed=3)
    assert env.observation_space == gym.spaces.Box(0, 255, (20, 30, 3), np.uint8) and obs in env.observation_space
    assert np.array_equal(obs, reference(env.render()[None])[0]) and env.render().shape == (32, 48, 3)

    venv = VectorResizeFrames(WorldModelVectorEnv(3, model=model, scenes=scenes, max_episode_steps=2,
                                                  autoreset_mode=AutoresetMode.SAME_STEP), (20, 30))  # fmt: skip
    native = WorldModelVectorEnv(3, model=model, scenes=scenes, max_episode_steps=2,
                                 autoreset_mode=AutoresetMode.SAME_STEP)  # fmt: skip
    actions = np.zeros((3, 9), dtype=np.int64)
    assert np.array_equal(venv.reset(seed=5)[0], reference(native.reset(seed=5)[0]))
    venv.step(actions), native.step(actions)
    obs, _, _, truncated, info = venv.step(actions)
    native_obs, _, _, _, native_info = native.step(actions)
    assert truncated.all() and np.array_equal(obs, reference(native_obs))
    assert all(np.array_equal(info["final_obs"][i], reference(native_info["final_obs"][i][None])[0]) for i in range(3))
    with pytest.raises(ConfigError, match="size must be"):
        ResizeFrames(WorldModelEnv(model=model, scenes=scenes), (0, 30))


def test_dict_and_discrete_wrappers(model, scenes):
    env = MineRLDictActions(WorldModelEnv(model=model, scenes=scenes))
    assert env.action_space == minecraft.ACTION_SPACE
    env.reset(seed=0)
    env.step(minecraft.noop() | {"forward": 1, "camera": np.array([-5.0, 12.0], dtype=np.float32)})
    env.step(env.action_space.sample())

    discrete = NamedDiscreteActions(WorldModelEnv(model=model, scenes=scenes), "basic")
    assert "turn_left" in discrete.action_meanings()
    assert discrete.action(discrete.action_meanings().index("turn_right")).tolist()[:2] == [10, 14]  # 13.67 deg bin
    repeated = ActionRepeat(discrete, 3)
    repeated.reset(seed=0)
    repeated.step(0)
    with pytest.raises(ActionError, match="outside Discrete"):
        discrete.step(99)

    venv = VectorMineRLDictActions(WorldModelVectorEnv(2, model=model, scenes=scenes))
    venv.reset(seed=0)
    venv.step([minecraft.noop(), minecraft.noop() | {"jump": 1}])
    vdiscrete = VectorNamedDiscreteActions(WorldModelVectorEnv(2, model=model, scenes=scenes))
    vdiscrete.reset(seed=0)
    vdiscrete.step(np.array([1, 2]))


def test_make_and_make_vec_by_checkpoint_path(model, scenes, tmp_path):
    path = tmp_path / "tiny.safetensors"
    save_safetensors(model, path)
    env = gym.make("RLIR-MineWorld-v0", checkpoint=str(path), scenes=scenes)
    obs, _ = env.reset(seed=0)
    env.step(env.action_space.sample())
    venv = gym.make_vec("RLIR-MineWorld-v0", num_envs=2, checkpoint=str(path), scenes=scenes)
    assert isinstance(venv.unwrapped, WorldModelVectorEnv) and venv.num_envs == 2
    venv.reset(seed=0)


def test_an_env_samples_with_the_models_stored_default_unless_told_otherwise(model, scenes, tmp_path):
    from worldmodels.mineworld import MineWorld, SamplingConfig

    plain_file = save_safetensors(model, tmp_path / "plain.safetensors")
    path = save_safetensors(MineWorld.from_checkpoint(plain_file, sampling=SamplingConfig(top_p=0.3)),
                            tmp_path / "top-p.safetensors")  # fmt: skip
    actions = np.zeros((4, 2, 9), dtype=np.int64)
    stored = gym.make_vec("RLIR-MineWorld-v0", num_envs=2, checkpoint=str(path), scenes=scenes).unwrapped
    assert stored.sampling == {"decoding": "naive", "window": 2, "temperature": 1.0, "top_p": 0.3, "top_k": None}
    explicit = WorldModelVectorEnv(2, model=model, scenes=scenes, top_p=0.3)
    plain = WorldModelVectorEnv(2, model=model, scenes=scenes)
    untruncated = gym.make_vec("RLIR-MineWorld-v0", num_envs=2, checkpoint=str(path), scenes=scenes,
                               top_p=1.0).unwrapped  # fmt: skip
    assert untruncated.sampling["top_p"] is None
    default_frames = rollout(stored, actions, seed=5)
    np.testing.assert_array_equal(default_frames, rollout(explicit, actions, seed=5))
    np.testing.assert_array_equal(rollout(untruncated, actions, seed=5), rollout(plain, actions, seed=5))
    assert not np.array_equal(default_frames, rollout(plain, actions, seed=5))  # the default did change the draws


@pytest.mark.parametrize("env_id", ["RLIR-MineWorld-v0", "RLIR-NFD-v0", "RLIR-Crafter-v0", "RLIR-CrafterNFD-v0",
                                    "RLIR-CrafterDream-v0"])  # fmt: skip
def test_world_model_envs_have_the_documented_default_episode_limit(env_id):
    assert gym.spec(env_id).max_episode_steps == rlir_env.WORLD_MODEL_MAX_EPISODE_STEPS == 1000


def test_default_episode_limit_reaches_both_make_paths_and_is_overridable(model, scenes):
    assert gym.make_vec("RLIR-MineWorld-v0", num_envs=2, model=model, checkpoint=None, scenes=scenes).max_episode_steps == 1000
    short = gym.make_vec("RLIR-MineWorld-v0", num_envs=2, model=model, checkpoint=None, scenes=scenes,
                         max_episode_steps=2)
    short.reset(seed=0)
    truncated = [short.step(short.action_space.sample())[3] for _ in range(2)]
    assert not truncated[0].any() and truncated[1].all()
    single = gym.make("RLIR-MineWorld-v0", model=model, scenes=scenes, checkpoint=None, max_episode_steps=2)
    single.reset(seed=0)
    assert [single.step(single.action_space.sample())[3] for _ in range(2)] == [False, True]
    assert gym.make("RLIR-MineWorld-v0", model=model, scenes=scenes, checkpoint=None).spec.max_episode_steps == 1000


def test_sb3_ppo_trains_through_the_adapter(model, scenes, tmp_path):
    pytest.importorskip("stable_baselines3")
    from stable_baselines3 import PPO

    from rlir_env.sb3 import SB3VecEnv

    venv = VectorResizeFrames(
        WorldModelVectorEnv(4, model=model, scenes=scenes, max_episode_steps=16, autoreset_mode=AutoresetMode.SAME_STEP),
        (48, 48),
    )
    env = SB3VecEnv(venv)
    agent = PPO("CnnPolicy", env, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
    agent.learn(total_timesteps=256)
    agent.save(tmp_path / "ppo")
    assert (tmp_path / "ppo.zip").is_file()
    with pytest.raises(ConfigError, match="SAME_STEP"):
        SB3VecEnv(WorldModelVectorEnv(2, model=model, scenes=scenes))


def test_a_step_validates_its_action_once_and_encodes_it_once(model, scenes, monkeypatch):
    env = WorldModelEnv(model=model, scenes=scenes)
    env.reset(seed=0)
    calls = {"validate": 0, "tokens": 0}
    validate, tokens = minecraft.validate_compact, minecraft.compact_to_tokens

    def counting_validate(compact):
        calls["validate"] += 1
        return validate(compact)

    def counting_tokens(compact, offset=minecraft.ACTION_VOCAB_OFFSET, *, validate=True):
        calls["tokens"] += 1
        return tokens(compact, offset, validate=validate)

    monkeypatch.setattr(minecraft, "validate_compact", counting_validate)
    monkeypatch.setattr(minecraft, "compact_to_tokens", counting_tokens)
    env.step(np.array([10, 10, 0, 1, 0, 0, 0, 0, 0]))
    assert calls == {"validate": 1, "tokens": 1}
    with pytest.raises(ActionError, match="outside slot 'forward_back'"):
        env.step(np.array([10, 10, 0, 3, 0, 0, 0, 0, 0]))
    with pytest.raises(ActionError, match=r"shape \[1, 9\]"):
        env.vector_env.step(np.zeros((2, 9), dtype=np.int64))


def test_decode_stats_count_the_forwards_of_each_decoding(model, scenes):
    actions = np.zeros((2, 9), dtype=np.int64)
    naive = WorldModelVectorEnv(2, model=model, scenes=scenes)
    assert naive.decode_stats is None
    naive.reset(seed=0)
    for _ in range(3):
        naive.step(actions)
    grid = model.config.tokens_per_frame
    assert (naive.decode_stats.calls, naive.decode_stats.frames) == (3, 6)
    assert naive.decode_stats.forwards_per_frame == grid and naive.decode_stats.acceptance_rate == 0
    speculative = WorldModelVectorEnv(2, model=model, scenes=scenes, decoding="speculative")
    speculative.reset(seed=0)
    for _ in range(3):
        speculative.step(actions)
    stats = speculative.decode_stats
    assert stats.tokens == 6 * grid and stats.accepted > 0 and stats.forwards_per_frame <= grid  # random weights: few drafts kept
    speculative.close()
    assert speculative.decode_stats is None
    single = WorldModelEnv(model=model, scenes=scenes, decoding="speculative")
    single.reset(seed=0)
    single.step(actions[0])
    assert single.decode_stats.frames == 1 and single.decode_stats.tokens == grid
