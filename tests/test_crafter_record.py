"""rlir_env.crafter.policies and record: deterministic behaviour policies, an explorer that really crafts, and a
recorder whose shards replay exactly in a fresh environment and do not depend on the number of workers."""

from __future__ import annotations

import hashlib
import importlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from rlir_env.crafter.env import ACHIEVEMENTS, INVENTORY_ITEMS, CrafterEnv
from rlir_env.crafter.policies import (
    DecorrelatedPolicy,
    MixturePolicy,
    PersistentRandomPolicy,
    ScriptedExplorer,
    make_policy,
)
from rlir_env.crafter.record import record
from worldmodels.actions.crafter import ACTION_NAMES, N_ACTIONS
from worldmodels.data.shards import MANIFEST_NAME, ShardDataset
from worldmodels.errors import ConfigError

record_module = importlib.import_module("rlir_env.crafter.record")  # the package re-exports record() over it
RECORD = dict(n_frames=230, shard_frames=100, seed=5)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rec1")
    record(root, workers=1, **RECORD)
    return root


def play(policy, seed: int, steps: int) -> tuple[list[int], set[str]]:
    env = CrafterEnv()
    obs, info = env.reset(seed=seed)
    policy.reset(np.random.default_rng(seed))
    actions, unlocked = [], set()
    for _ in range(steps):
        action = policy.act(obs, info)
        actions.append(action)
        obs, _, terminated, truncated, info = env.step(action)
        unlocked |= set(info["unlocked"])
        if terminated or truncated:
            break
    return actions, unlocked


def test_persistent_random_holds_actions_geometrically():
    policy = PersistentRandomPolicy(repeat_p=0.75)
    policy.reset(np.random.default_rng(0))
    actions = np.array([policy.act(None, None) for _ in range(20000)])
    runs = np.diff(np.flatnonzero(np.diff(np.r_[-1, actions, -1]) != 0))
    # A new draw happens with probability 0.25 and differs from the held action with probability 16/17.
    assert runs.mean() == pytest.approx(1 / (0.25 * 16 / 17), rel=0.05)
    assert np.bincount(actions, minlength=N_ACTIONS).min() > 20000 / N_ACTIONS * 0.8
    policy.reset(np.random.default_rng(0))
    assert [policy.act(None, None) for _ in range(100)] == actions[:100].tolist()


def test_explorer_does_places_crafts_and_collects_wood():
    actions, unlocked = play(ScriptedExplorer(), seed=0, steps=300)
    names = Counter(ACTION_NAMES[a] for a in actions)
    assert names["do"] >= 10
    assert sum(n for name, n in names.items() if name.startswith("place_")) >= 1
    assert sum(n for name, n in names.items() if name.startswith("make_")) >= 1
    assert sum(n for name, n in names.items() if name.startswith("move_")) >= 50
    assert {"collect_wood", "place_table", "make_wood_pickaxe"} <= unlocked


def test_policies_are_deterministic_given_the_generator():
    for policy in (MixturePolicy(), make_policy("uniform")):  # the mixture runs the explorer and random play
        first, _ = play(policy, seed=3, steps=120)
        again, _ = play(policy, seed=3, steps=120)
        assert first == again


def test_mixture_switches_between_components_and_adds_random_actions():
    mixture = MixturePolicy(segment_mean=10, epsilon=0.0)
    env = CrafterEnv()
    obs, info = env.reset(seed=1)
    mixture.reset(np.random.default_rng(1))
    active = []
    for _ in range(150):
        action = mixture.act(obs, info)
        active.append(mixture.active)
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    assert set(active) == {0, 1}
    always_random = MixturePolicy([ScriptedExplorer()], epsilon=1.0)
    always_random.reset(np.random.default_rng(0))
    _, info = env.reset(seed=1)
    assert len({always_random.act(None, info) for _ in range(200)}) == N_ACTIONS


def test_decorrelated_policy_is_less_persistent_and_still_crafts():
    repeats = {}
    for name in ("mixture", "decorrelated"):
        actions, unlocked = play(make_policy(name), seed=0, steps=400)
        repeats[name] = np.mean(np.array(actions[1:]) == np.array(actions[:-1]))
        if name == "decorrelated":
            assert {"collect_wood", "place_table"} <= unlocked
            assert len(set(actions)) == N_ACTIONS
    assert repeats["decorrelated"] < 0.4 < repeats["mixture"]
    first, _ = play(DecorrelatedPolicy(), seed=3, steps=120)
    again, _ = play(DecorrelatedPolicy(), seed=3, steps=120)
    assert first == again
    always_explorer, _ = play(DecorrelatedPolicy(p_random=0.0, explorer={"random_ties": False, "p_turn": 0.15}),
                              seed=2, steps=80)  # fmt: skip
    explorer, _ = play(ScriptedExplorer(), seed=2, steps=80)
    assert always_explorer == explorer


def test_policy_settings_are_checked():
    with pytest.raises(ConfigError, match="p_random"):
        DecorrelatedPolicy(p_random=1.5)
    with pytest.raises(ConfigError, match="random_weights"):
        DecorrelatedPolicy(random_weights=[1.0] * 3)
    with pytest.raises(ConfigError, match="repeat_p"):
        PersistentRandomPolicy(repeat_p=1.0)
    with pytest.raises(ConfigError, match="weights"):
        MixturePolicy([ScriptedExplorer()], weights=[1.0, 2.0])
    with pytest.raises(ConfigError, match="unknown Crafter behaviour policy"):
        make_policy("greedy")
    with pytest.raises(ConfigError, match="reset"):
        ScriptedExplorer().act(None, {})


def test_recording_layout_and_manifest(recorded):
    manifest = (recorded / MANIFEST_NAME).read_text()
    ds = ShardDataset(recorded)
    assert len(ds) == 230 and [s.frames for s in ds.shards] == [100, 100, 30]
    assert ds.config["seed"] == 5 and ds.config["policy"] == "mixture" and ds.config["shard_frames"] == 100
    for shard in ds.shards:
        assert shard.sha256 == hashlib.sha256((recorded / shard.file).read_bytes()).hexdigest()
        assert shard.sha256 in manifest
    episode = ds.episode(0)
    assert episode.frames.shape[1:] == (64, 64, 3) and episode.extras["achievements"].shape[1] == len(ACHIEVEMENTS)
    assert episode.extras["inventory"][0].tolist() == [9, 9, 9, 9] + [0] * 12  # Crafter's starting inventory
    seeds = ds.manifest["metadata"]["episode_seeds"]
    assert sum(len(v) for v in seeds.values()) == ds.n_episodes


def test_recorded_episodes_replay_exactly_in_a_fresh_env(recorded):
    ds = ShardDataset(recorded)
    env = CrafterEnv()
    achievement_column = {name: k for k, name in enumerate(ACHIEVEMENTS)}
    last_of_shard = set(np.cumsum([len(shard.episode_lengths) for shard in ds.shards]) - 1)
    for episode in ds.episodes():
        obs, info = env.reset(seed=int(episode.episode_extras["episode_seeds"]))
        np.testing.assert_array_equal(episode.frames[0], obs)
        for t, action in enumerate(episode.actions[:-1]):
            obs, reward, terminated, truncated, info = env.step(int(action))
            # frame t + 1 is what action t led to
            np.testing.assert_array_equal(episode.frames[t + 1], obs)
            assert episode.rewards[t + 1] == np.float32(reward)
            assert bool(episode.terminated[t + 1]) == terminated
            flags = np.zeros(len(ACHIEVEMENTS), np.uint8)
            flags[[achievement_column[n] for n in info["unlocked"]]] = 1
            np.testing.assert_array_equal(episode.extras["achievements"][t + 1], flags)
            assert episode.extras["inventory"][t + 1].tolist() == [info["inventory"][n] for n in INVENTORY_ITEMS]
            assert episode.extras["player_pos"][t + 1].tolist() == info["player_pos"].tolist()
            assert episode.extras["daylight"][t + 1] == np.float32(env._game._world.daylight)
        if not episode.terminated[-1]:
            # Not a death, and Crafter's length (10000) is far away: the shard was full, so it is a shard's last.
            assert episode.index in last_of_shard and not truncated
    assert len(last_of_shard) == 3


@pytest.mark.slow
def test_recording_is_identical_with_two_workers(recorded, tmp_path):
    record(tmp_path, workers=2, **RECORD)
    assert (tmp_path / MANIFEST_NAME).read_bytes() == (recorded / MANIFEST_NAME).read_bytes()
    for name in sorted(p.name for p in recorded.glob("shard-*.npz")):
        assert (tmp_path / name).read_bytes() == (recorded / name).read_bytes()
    with np.load(tmp_path / "shard-00001.npz") as a, np.load(recorded / "shard-00001.npz") as b:
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])


def test_another_seed_records_other_data(recorded, tmp_path):
    record(tmp_path, n_frames=40, shard_frames=100, seed=6)
    with np.load(tmp_path / "shard-00000.npz") as other, np.load(recorded / "shard-00000.npz") as base:
        assert not np.array_equal(other["frames"][:40], base["frames"][:40])


def test_recorder_refuses_to_overwrite_and_checks_settings(tmp_path):
    record(tmp_path, n_frames=3, seed=0, policy="uniform")
    with pytest.raises(ConfigError, match="overwrite"):
        record(tmp_path, n_frames=3, seed=0)
    record(tmp_path, n_frames=4, seed=0, policy="explorer", overwrite=True)
    assert len(ShardDataset(tmp_path)) == 4
    for bad, message in [
        (dict(n_frames=0), "n_frames"),
        (dict(n_frames=5, workers=0), "workers"),
        (dict(n_frames=5, policy="greedy"), "policy"),
        (dict(n_frames=5, seed=-1), "seed"),
        (dict(n_frames=5, size=0), "size"),
    ]:
        with pytest.raises(ConfigError, match=message):
            record(tmp_path / "other", **bad)


def test_resumed_recording_equals_an_uninterrupted_one(recorded, tmp_path, monkeypatch):
    record(tmp_path, n_frames=100, shard_frames=100, seed=5)  # a shorter recording: shard 0 of RECORD
    calls = []
    original = record_module._record_shard
    monkeypatch.setattr(record_module, "_record_shard", lambda task, *a: calls.append(task["index"]) or
                        original(task, *a))  # fmt: skip
    record(tmp_path, workers=1, resume=True, **RECORD)
    assert calls == [1, 2]  # shard 0 was kept
    assert (tmp_path / MANIFEST_NAME).read_bytes() == (recorded / MANIFEST_NAME).read_bytes()
    (tmp_path / "shard-00001.npz").write_bytes(b"truncated")
    calls.clear()
    record(tmp_path, workers=1, resume=True, **RECORD)
    assert calls == [1]  # the unreadable shard is recorded again
    assert (tmp_path / "shard-00001.npz").read_bytes() == (recorded / "shard-00001.npz").read_bytes()
    with pytest.raises(ConfigError, match="seed=5 .now 6."):
        record(tmp_path, n_frames=230, shard_frames=100, seed=6, resume=True)
    with pytest.raises(ConfigError, match="not both"):
        record(tmp_path, resume=True, overwrite=True, **RECORD)
