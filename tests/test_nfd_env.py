"""NFD wherever MineWorld runs: `load_world_model` recognises an NFD file, `RLIR-NFD-v0` passes Gymnasium's checker,
and the evaluator scores a suite with it, with the same records whatever the number of envs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import rlir_env  # noqa: F401  (registers the env ids)
from evaluation.bundle import ModelInfo
from evaluation.evaluator import EvalSettings, evaluate
from evaluation.idm.crafter import CrafterIDM, CrafterIDMConfig
from evaluation.suites import SuiteItem, make_suite
from rlir_env.scenes import Scene
from tests.world_models import tiny_nfd
from worldmodels.errors import ConfigError
from worldmodels.mineworld import save_safetensors
from worldmodels.nfd import NFD, NFDSampling, save_nfd
from worldmodels.registry import load_world_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = tiny_nfd(seed=3)
    model.sampling = NFDSampling("euler", 4)
    return save_nfd(model, tmp_path_factory.mktemp("nfd") / "tiny-nfd.safetensors")


def scenes(n: int, seed: int = 0) -> list[Scene]:
    rng = np.random.default_rng(seed)
    return [Scene(frames=rng.integers(0, 256, (1, 16, 16, 3), dtype=np.uint8), actions=np.zeros(0, np.int64))
            for _ in range(n)]  # fmt: skip


def test_load_world_model_recognises_nfd_files(checkpoint, tmp_path):
    model = load_world_model(checkpoint, reference_frames=1)
    assert isinstance(model, NFD) and model.reference_frames == 1 and model.sampling == NFDSampling("euler", 4)
    assert isinstance(load_world_model(str(checkpoint), config=None, vae_config=None), NFD)  # as envs call it
    with pytest.raises(ConfigError, match="NFD checkpoint"):
        load_world_model(checkpoint, config="300M_16f")
    from tests.world_models import tiny_mineworld
    from worldmodels.mineworld import MineWorld

    mineworld = save_safetensors(tiny_mineworld(), tmp_path / "mw.safetensors")
    assert isinstance(load_world_model(mineworld), MineWorld)  # other safetensors still load as MineWorld


def test_registered_env_passes_the_checker(checkpoint):
    env = gym.make("RLIR-NFD-v0", checkpoint=str(checkpoint), scenes=scenes(3), max_episode_steps=5)
    check_env(env.unwrapped, skip_render_check=True)
    assert env.observation_space == gym.spaces.Box(0, 255, (16, 16, 3), np.uint8)
    assert env.action_space == gym.spaces.Discrete(17)
    first, _ = env.reset(seed=4)
    frames = [env.step(a)[0] for a in (1, 2, 3)]
    again, _ = env.reset(seed=4)
    assert np.array_equal(first, again)
    assert all(np.array_equal(f, env.step(a)[0]) for f, a in zip(frames, (1, 2, 3)))
    vector = gym.make_vec("RLIR-NFD-v0", num_envs=2, vectorization_mode="vector_entry_point",
                          checkpoint=str(checkpoint), scenes=scenes(3))  # fmt: skip
    obs, _ = vector.reset(seed=4)
    assert np.array_equal(obs[0], first)  # env 0 of a vector env is the single env with the same seed
    assert np.array_equal(vector.step(np.array([1, 5]))[0][0], frames[0])
    with pytest.raises(ConfigError, match="checkpoint="):
        gym.make("RLIR-NFD-v0")


def test_evaluator_runs_a_suite_with_nfd(checkpoint, tmp_path):
    rng = np.random.default_rng(1)
    items = [SuiteItem(id=f"clip_{i}", context_frames=rng.integers(0, 256, (1, 16, 16, 3), dtype=np.uint8),
                       context_actions=np.zeros(0, np.int64), actions=rng.integers(0, 17, 4),
                       ground_truth=rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8))
             for i in range(3)]  # fmt: skip
    suite = make_suite("tiny-crafter-16", 1, "crafter", items, description="NFD test suite")
    idm = CrafterIDM(CrafterIDMConfig(width=8, depth=0, frame_size=(16, 16), window=4, cell=4, cell_channels=8))
    model = NFD.from_checkpoint(checkpoint)
    info = ModelInfo(name="tiny-nfd")
    bundles = [evaluate(model, suite, idm, tmp_path / f"n{n}", model_info=info, progress=False,
                        settings=EvalSettings(num_envs=n, seed=5, save_videos=False)) for n in (1, 3)]  # fmt: skip
    a, b = bundles
    assert [r.id for r in a.items] == suite.item_ids and len(a.items[0].pred_labels) == 4
    assert len({r.video_sha256 for r in a.items}) == 3 and all(r.psnr is not None for r in a.items)
    assert [r.model_dump() for r in a.items] == [r.model_dump() for r in b.items]  # batching changes no frame


def test_nfd_sampler_is_a_choice_of_the_env_and_the_evaluator(checkpoint, tmp_path):
    from tests.world_models import tiny_mineworld

    stored = gym.make("RLIR-NFD-v0", checkpoint=str(checkpoint), scenes=scenes(2))
    chosen = gym.make("RLIR-NFD-v0", checkpoint=str(checkpoint), scenes=scenes(2), sampler="dpm-solver++",
                      sampling_steps=3)  # fmt: skip
    assert chosen.unwrapped.vector_env.nfd_sampling == NFDSampling("dpmpp2m", 3)
    assert stored.unwrapped.vector_env.nfd_sampling == NFDSampling("euler", 4)  # the checkpoint's own
    for env in (stored, chosen):
        env.reset(seed=1)
    assert not np.array_equal(stored.step(2)[0], chosen.step(2)[0])  # another sampler draws another frame from the same noise seed
    with pytest.raises(ConfigError, match=r"top_p=0\.9.*NFD.*sampler"):
        gym.make("RLIR-NFD-v0", checkpoint=str(checkpoint), scenes=scenes(2), top_p=0.9)
    with pytest.raises(ConfigError, match=r"unknown NFD sampler 'heun'"):
        gym.make("RLIR-NFD-v0", checkpoint=str(checkpoint), scenes=scenes(2), sampler="heun")
    with pytest.raises(ConfigError, match=r"sampler='euler'.*autoregressive"):
        gym.make("RLIR-MineWorld-v0", model=tiny_mineworld(), checkpoint=None, sampler="euler")

    # the evaluator runs RLIR's protocol unless told otherwise, and the bundle records what ran
    items = [SuiteItem(id="clip", context_frames=np.zeros((1, 16, 16, 3), np.uint8), context_actions=np.zeros(0, np.int64),
                       actions=np.array([1, 2]), ground_truth=None)]  # fmt: skip
    suite = make_suite("tiny-crafter-2", 1, "crafter", items)
    idm = CrafterIDM(CrafterIDMConfig(width=8, depth=0, frame_size=(16, 16), window=4, cell=4, cell_channels=8))
    model = NFD.from_checkpoint(checkpoint)
    default = evaluate(model, suite, idm, tmp_path / "a", model_info=ModelInfo(name="n"), progress=False)
    run = default.runtime
    assert (run.sampler, run.sampling_steps, run.decoding, run.window, run.top_p) == ("dpm-solver++", 18, None, None, None)
    euler = evaluate(model, suite, idm, tmp_path / "b", model_info=ModelInfo(name="n"), progress=False,
                     settings=EvalSettings(sampler="euler", sampling_steps=4))  # fmt: skip
    assert (euler.runtime.sampler, euler.runtime.sampling_steps) == ("euler", 4)
    assert euler.runtime.compiled is False  # nn.Module.compile is a method, not MineWorld's compile flag
    assert euler.items[0].video_sha256 != default.items[0].video_sha256
    with pytest.raises(ConfigError, match=r"decoding='diagonal'.*NFD model"):
        evaluate(model, suite, idm, tmp_path / "c", model_info=ModelInfo(name="n"), progress=False,
                 settings=EvalSettings(decoding="diagonal"))  # fmt: skip
