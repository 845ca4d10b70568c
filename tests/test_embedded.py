"""The embedded default as shipped: bundled world model, IDMs, start scenes and suite, RLIR-Crafter-v0, `rlir demo`."""

from __future__ import annotations

import shutil
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import rlir_env  # noqa: F401  (registers the ids)
from evaluation.idm.registry import BUNDLED_IDMS, HELDOUT_IDM, IDM_ENSEMBLES, REWARD_ENSEMBLE, REWARD_IDM, load_idm
from evaluation.suites import CRAFTER_SUITE, load_suite, suite_from_crafter
from worldmodels.bundled import bundled_dir, pin_of, read_pins
from worldmodels.errors import DataError, IntegrityError
from worldmodels.registry import (
    BUNDLED_MODELS,
    CRAFTER_MODEL_FILE,
    CRAFTER_MODEL_NAME,
    REGISTRY,
    load_world_model,
    resolve_files,
)


@pytest.fixture(scope="module")
def suite():
    return load_suite(CRAFTER_SUITE)


@pytest.fixture(scope="module")
def model():
    return load_world_model(CRAFTER_MODEL_NAME)


def test_every_bundled_weight_file_is_pinned_and_matches():
    model_files = [bundled_dir() / file for file, _ in BUNDLED_MODELS.values()]
    for name, path in zip(BUNDLED_MODELS, model_files):
        assert pin_of(path) is not None and resolve_files(name)["checkpoint"] == path  # resolve_files checks the pin
    idm_names = (REWARD_IDM, HELDOUT_IDM, *IDM_ENSEMBLES[REWARD_ENSEMBLE])
    for name in idm_names:
        path, sha256 = BUNDLED_IDMS[name]
        assert sha256 is not None and load_idm(name).sha256 == sha256
    assert len({load_idm(name).sha256 for name in idm_names}) == len(idm_names)
    from rlir_env.dream.heads import resolve_heads_path

    sizes = [p.stat().st_size for p in [*model_files, *(BUNDLED_IDMS[n][0] for n in BUNDLED_IDMS), resolve_heads_path(None)]]
    assert sum(sizes) <= 100 * 2**20  # the budget for all bundled weights (raised from 50 MB by issue 14)


def test_a_tampered_bundled_file_is_refused(tmp_path, monkeypatch):
    import worldmodels.registry as registry

    copy = tmp_path / CRAFTER_MODEL_FILE
    shutil.copy(bundled_dir() / CRAFTER_MODEL_FILE, copy)
    shutil.copy(bundled_dir() / "SHA256SUMS", tmp_path / "SHA256SUMS")
    data = bytearray(copy.read_bytes())
    data[-1] ^= 1  # one flipped bit in the last tensor
    copy.write_bytes(bytes(data))
    entry = REGISTRY[CRAFTER_MODEL_NAME]
    monkeypatch.setitem(registry.REGISTRY, CRAFTER_MODEL_NAME, type(entry)(**{**entry.__dict__, "root": tmp_path}))
    with pytest.raises(IntegrityError, match="sha256"):
        load_world_model(CRAFTER_MODEL_NAME)


def test_every_bundled_model_has_a_seed_bundle_of_its_own_weights():
    import json

    from evaluation.evaluator import model_info_for
    from leaderboard.seed import SEED_BUNDLES_DIR

    for name in BUNDLED_MODELS:
        bundle = json.loads((SEED_BUNDLES_DIR / f"{name}.json").read_text())
        info = model_info_for(load_world_model(name), name, resolve_files(name)["checkpoint"])
        assert bundle["model"]["name"] == name and bundle["model"]["weights_sha256"] == info.weights_sha256, name


def test_the_post_trained_model_is_its_base_with_other_weights():
    base, tuned = load_world_model(CRAFTER_MODEL_NAME), load_world_model("crafter-mineworld-rlir")
    assert tuned.config == base.config and tuned.spec.frame_size == base.spec.frame_size
    base_state, tuned_state = base.state_dict(), tuned.state_dict()
    assert base_state.keys() == tuned_state.keys()
    changed = [key for key in base_state if not torch.equal(base_state[key], tuned_state[key])]
    assert changed and all(key.startswith("transformer.") for key in changed)  # post-training leaves the tokenizer


def test_the_post_trained_models_summary_matches_the_shipped_files():
    """The model card's paired numbers come from the run summary: its post-trained side must be the leaderboard's own
    bundle, its base the shipped base's weights, both sampled as post-training sampled (the file's default)."""
    import json

    from evaluation.bundle import load_bundle
    from leaderboard.seed import SEED_BUNDLES_DIR

    summary = json.loads((bundled_dir() / "crafter-mineworld-rlir.json").read_text())
    shipped = summary["heldout_vs_base"]
    tuned = load_bundle(SEED_BUNDLES_DIR / "crafter-mineworld-rlir.json")
    base = load_bundle(SEED_BUNDLES_DIR / f"{summary['base']}.json")
    assert (shipped["suite"], shipped["idm"], shipped["seed"]) == (tuned.suite.name, tuned.idm.name, tuned.runtime.seed)
    # a new base ships with the post-training re-run on it (scripts/build_embedded.sh 6b), never under an old summary
    assert base.model.weights_sha256 == summary["base_weights_sha256"], "the base changed: re-run step 6b and 7"
    assert tuned.model.weights_sha256 == summary["weights_sha256"]
    sampling = load_world_model("crafter-mineworld-rlir").sampling
    assert shipped["sampling"] == {"decoding": sampling.decoding, "temperature": sampling.temperature,
                                   "top_p": sampling.top_p, "top_k": sampling.top_k}  # fmt: skip
    assert {name: getattr(tuned.runtime, name) for name in shipped["sampling"]} == shipped["sampling"]
    rows = {row["metric"]: row for row in shipped["rows"]}
    metrics = tuned.metrics
    assert rows["mean_macro_f1"]["rlir"] == pytest.approx(metrics.primary.value)
    for task, values in metrics.tasks.items():
        assert rows[f"f1_macro/{task}"]["rlir"] == pytest.approx(values["f1_macro"]), task
    assert (rows["psnr"]["rlir"], rows["ssim"]["rlir"]) == pytest.approx((metrics.psnr["mean"], metrics.ssim["mean"]))
    assert rows["mean_macro_f1"]["ci95"][0] > 0  # the shipped claim: it follows actions better than its base


def test_pin_file_reads_both_sha256sum_modes(tmp_path):
    (tmp_path / "SHA256SUMS").write_text("a" * 64 + "  text.bin\n" + "b" * 64 + " *binary.bin\n\n")
    assert read_pins(tmp_path) == {"text.bin": "a" * 64, "binary.bin": "b" * 64}


def test_malformed_pin_file_names_the_line(tmp_path):
    (tmp_path / "SHA256SUMS").write_text("0" * 64 + "  ok.bin\nnot a digest  x.bin\n")
    with pytest.raises(DataError, match="SHA256SUMS:2"):
        read_pins(tmp_path)


def test_suite_is_pinned_and_rebuilds_from_its_seeds(suite):
    assert len(suite) == 256 and suite.n_frames == 15 and suite.frame_size == (72, 72) and suite.has_ground_truth
    rebuilt = suite_from_crafter(n_items=3, seed=33)  # items depend only on (seed, index)
    for ours, theirs in zip(rebuilt, suite):
        assert ours.id == theirs.id
        np.testing.assert_array_equal(ours.actions, theirs.actions)
        np.testing.assert_array_equal(ours.ground_truth, theirs.ground_truth)
    with pytest.raises(DataError, match="unknown suite 'crafter-af-v9'"):
        load_suite("crafter-af-v9")


def test_heldout_idm_reads_the_real_game(suite):
    # The ceiling: on real frames the held-out IDM must recover most actions (majority class alone is far lower).
    from evaluation.evaluator import score_videos

    idm = load_idm(HELDOUT_IDM)
    items = [suite[i] for i in range(32)]
    records = score_videos([(item.id, item.ground_truth) for item in items], suite, idm, video_metrics=False)
    gt = np.concatenate([r.gt_labels for r in records])
    pred = np.concatenate([r.pred_labels for r in records])
    accuracy = (gt == pred).all(axis=1).mean()
    assert accuracy > 0.5, accuracy


def test_crafter_env_checks_and_is_deterministic(model):
    env = gym.make("RLIR-Crafter-v0", model=model, checkpoint=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped, skip_render_check=True)
    assert env.observation_space.shape == (72, 72, 3) and env.action_space == gym.spaces.Discrete(17)

    def rollout(seed):
        obs, _ = env.reset(seed=seed)
        frames = [obs]
        for action in [1, 1, 2, 3, 4, 5, 0, 1]:
            frames.append(env.step(action)[0])
        return np.stack(frames)

    first = rollout(3)
    np.testing.assert_array_equal(first, rollout(3))
    assert not np.array_equal(first, rollout(4))
    assert len({frame.tobytes() for frame in first}) > 1  # the world model moves


def test_sb3_ppo_smoke_run_in_the_bundled_world(model, tmp_path):
    from stable_baselines3 import PPO

    from rlir_env.sb3 import make_sb3_env

    venv = make_sb3_env("RLIR-Crafter-v0", n_envs=4, seed=0, model=model, checkpoint=None, max_episode_steps=16)
    agent = PPO("CnnPolicy", venv, n_steps=32, batch_size=64, n_epochs=1, seed=0, device="cpu",
                policy_kwargs={"normalize_images": True, "features_extractor_kwargs": {"features_dim": 64}})
    agent.learn(total_timesteps=128)
    agent.save(tmp_path / "ppo")
    assert (tmp_path / "ppo.zip").is_file() and agent.num_timesteps >= 128


def test_demo_command_on_a_small_suite(tmp_path, suite):
    from evaluation.suites import make_suite, save_suite
    from rlir.cli import main

    small = make_suite("crafter-demo-test", 1, "crafter", [suite[i] for i in range(4)], protocol=suite.manifest["protocol"],
                       fps=5.0, description="4 items of crafter-af-v1")  # fmt: skip
    save_suite(small, tmp_path / "suite")
    code = main(["demo", "--suite", str(tmp_path / "suite"), "--out", str(tmp_path / "out"), "--num-envs", "4",
                 "--db", str(tmp_path / "lb.db")])  # fmt: skip
    assert code == 0
    from evaluation.bundle import load_bundle

    bundle = load_bundle(tmp_path / "out" / CRAFTER_MODEL_NAME)
    ceiling = load_bundle(tmp_path / "out" / "ground-truth")
    assert [r.id for r in bundle.items] == small.item_ids == [r.id for r in ceiling.items]
    assert bundle.metrics.psnr is not None and bundle.metrics.throughput.frames_per_second > 0
    # the documented way to submit your own run of a bundled model: your own name; the bundled weights are public
    db = str(tmp_path / "lb.db")
    assert main(["leaderboard", "suite", "add", str(tmp_path / "suite"), "--idm", "crafter-idm-heldout", "--db", db]) == 0
    assert main(["leaderboard", "submit", str(tmp_path / "out" / CRAFTER_MODEL_NAME), "--db", db]) == 2  # seeded name
    assert main(["demo", "--suite", str(tmp_path / "suite"), "--out", str(tmp_path / "mine"), "--num-envs", "4",
                 "--model-name", "alice-crafter", "--no-leaderboard"]) == 0  # fmt: skip
    assert main(["leaderboard", "submit", str(tmp_path / "mine" / "alice-crafter"), "--db", db,
                 "--submitter", "alice"]) == 0  # fmt: skip
    from leaderboard.store import Store

    rows = {s.model_name: s for s in Store(db).submissions()}
    assert rows["alice-crafter"].tier == "verified" and rows[CRAFTER_MODEL_NAME].submitter == "rlir"


def test_bundled_nfd_env_checks():
    from worldmodels.nfd import NFD

    env = gym.make("RLIR-CrafterNFD-v0", max_episode_steps=4)
    assert isinstance(env.unwrapped.model, NFD) and env.unwrapped.model.spec.domain == "crafter"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped, skip_render_check=True)
