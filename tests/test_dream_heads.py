"""rlir_env.dream.heads / train: Crafter's reward formula and labels pinned against the game itself, the AUC against
scikit-learn, a short training run that writes loadable heads and a summary, the CLI, the wrappers reproducing the
evaluation step by step on a replayed real episode, the bundled heads, and clear errors on bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from gymnasium.error import ResetNeeded
from sklearn.metrics import roc_auc_score

from rlir.cli import main as rlir_main
from rlir_env.crafter.env import ACHIEVEMENTS, INVENTORY_ITEMS, CrafterEnv
from rlir_env.dream.heads import BUNDLED_HEADS, CrafterHeads, CrafterHeadsConfig, CrafterReward, track_health
from rlir.agents.reward_heads import evaluate_heads, load_transitions, predict_rewards, roc_auc, train_heads
from rlir_env.dream.wrappers import LearnedCrafterReward, LearnedCrafterTermination
from tests.test_dream_setup import SIZE, crafter_data, heads_file, tiny_model  # noqa: F401  (fixtures)
from worldmodels.data.shards import ShardDataset, write_manifest, write_shard
from worldmodels.errors import CheckpointError, DataError, FrameError, MissingFileError
from worldmodels.mineworld.checkpoint import save_safetensors


def test_crafter_reward_is_unlock_bonus_plus_health_change():
    """The formula the heads learn, checked on the game: reward = 1[any first unlock] + (health - prev) / 10, one
    bonus however many achievements unlock at once, and death exactly when health is 0."""
    env = CrafterEnv(size=SIZE, length=300)
    rng = np.random.default_rng(0)
    _, info = env.reset(seed=3)
    health, seen_loss = info["inventory"]["health"], False
    for _ in range(300):
        _, reward, terminated, truncated, info = env.step(int(rng.integers(17)))
        new_health = info["inventory"]["health"]
        assert reward == pytest.approx(float(len(info["unlocked"]) > 0) + (new_health - health) / 10)
        assert terminated == (new_health == 0)
        seen_loss |= new_health < health
        health = new_health
        if terminated or truncated:
            break
    assert seen_loss  # the walk covered a health change, not only zeros


def test_labels_follow_the_recording(crafter_data):
    data = load_transitions(crafter_data)
    dataset = ShardDataset(crafter_data)
    assert len(data.frames) == len(dataset) and data.n_episodes == dataset.n_episodes
    health_column = INVENTORY_ITEMS.index("health")
    for episode in dataset.episodes():
        rows = np.flatnonzero(data.episode == episode.index)
        assert np.array_equal(data.health[rows], episode.extras["inventory"][:, health_column])
        achieved = episode.extras["achievements"].astype(bool)
        for t in range(len(rows)):  # eligible: not unlocked in any earlier frame of the episode
            assert np.array_equal(data.eligible[rows[t]], ~achieved[:t].any(0))
    t = data.transitions()
    assert not np.isin(t, data.episode_starts).any() and len(t) == len(data.frames) - data.n_episodes


def test_roc_auc_matches_sklearn():
    rng = np.random.default_rng(1)
    labels = rng.random(500) < 0.2
    scores = np.round(rng.random(500) + labels * 0.3, 1)  # many ties
    assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert roc_auc(np.zeros(5, bool), np.arange(5)) is None


def test_training_writes_heads_that_load_and_learn(crafter_data, tmp_path):
    out = tmp_path / "heads.safetensors"
    summary = train_heads(crafter_data, out, steps=40, batch_size=16, lr=3e-3, warmup=2, log_every=10,
                          val_transitions=64, eval_every=20, progress=False, log_path=tmp_path / "log.jsonl")
    assert summary["train_curve"][-1]["loss"] < summary["train_curve"][0]["loss"] * 0.7
    assert [v["step"] for v in summary["validations"]] == [20, 40]
    assert 0.05 <= summary["thresholds"]["unlock_threshold"] <= 0.95
    assert summary["metrics_on"] == "validation episodes" and summary["metrics"]["transitions"] > 0
    on_disk = json.loads(out.with_suffix(".json").read_text())
    assert on_disk["sha256"] == summary["sha256"] and on_disk["config"]["frame_size"] == [SIZE, SIZE]
    heads = CrafterHeads.load(out)
    assert heads.summary["thresholds"] == summary["thresholds"]
    assert heads.unlock_threshold == summary["thresholds"]["unlock_threshold"]
    frames = np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    probabilities = heads.predict(frames, frames[::-1])
    assert probabilities["unlock"].shape == (3, 22) and probabilities["health"].shape == (3, 10)
    np.testing.assert_allclose(probabilities["health"].sum(-1), 1.0, rtol=1e-5)
    # same seed, same machine: the same weights (the files differ only in their timings)
    train_heads(crafter_data, tmp_path / "again.safetensors", steps=40, batch_size=16, lr=3e-3, warmup=2,
                log_every=10, val_transitions=64, eval_every=20, progress=False)
    again = CrafterHeads.load(tmp_path / "again.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(heads.state_dict().values(), again.state_dict().values()))


def test_training_on_frames_the_world_model_reconstructs(crafter_data, tiny_model, tmp_path):
    """With the world model's tokenizer, batches mix real transitions with transitions passed through its VQ
    (encode + decode), and held-out episodes are also scored on reconstructed frames."""
    from rlir.agents.reward_heads import load_frame_tokenizer, reconstruct_frames

    checkpoint = tmp_path / "wm.safetensors"
    save_safetensors(tiny_model, checkpoint)
    tokenizer = load_frame_tokenizer(checkpoint)  # a world-model file: its tokenizer is used
    frames = ShardDataset(crafter_data).episode(0).frames[:4]
    expected = tiny_model.tokenizer.detokenize(tiny_model.tokenizer.tokenize(torch.from_numpy(frames))).numpy()
    assert np.array_equal(reconstruct_frames(tokenizer, frames), expected) and not np.array_equal(expected, frames)
    summary = train_heads(crafter_data, tmp_path / "h.safetensors", tokenizer=checkpoint, reconstruct_transitions=40,
                          heldout_reconstruct_episodes=1, steps=3, batch_size=8, val_transitions=16, progress=False)
    assert summary["transitions"]["reconstructed"] >= 20 and summary["tokenizer"]["sha256"] is not None
    reconstructed = summary["metrics_reconstructed"]
    assert reconstructed["episodes"] == 1 and reconstructed["transitions"] > 0
    assert summary["metrics"]["episodes"] >= 1


def test_cli_trains_reward_heads(crafter_data, tmp_path):
    out = tmp_path / "cli_heads.safetensors"
    code = rlir_main(["train", "reward-head", "--data", str(crafter_data), "--heldout", str(crafter_data),
                      "--out", str(out), "--steps", "4", "--batch-size", "8", "--no-progress"])
    assert code == 0
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["metrics_on"] == "heldout"
    assert summary["episodes"]["heldout"] == ShardDataset(crafter_data).n_episodes
    assert summary["settings"]["steps"] == 4


def test_wrappers_reproduce_the_evaluation_on_a_replayed_episode(crafter_data, heads_file):
    """Replaying a recorded episode in the real game under LearnedCrafterReward/Termination gives, step by step,
    the rewards and terminations the evaluation computes offline (the same per-episode credit memory)."""
    heads = CrafterHeads.load(heads_file)
    data = load_transitions(crafter_data)
    episode = ShardDataset(crafter_data).episode(0)
    with torch.no_grad():  # a barely trained health head reads one value everywhere: give it varied readings
        hidden = torch.nn.functional.gelu(heads.health_hidden(
            heads.health_reduce(heads.encode(torch.from_numpy(episode.frames))).flatten(1)))
        weight = torch.randn(heads.health_out.weight.shape, generator=torch.Generator().manual_seed(0))
        weight /= hidden.std(0).clamp_min(1e-6)  # random readout of the (centred) features that vary over the episode
        heads.health_out.weight.copy_(weight)
        heads.health_out.bias.copy_(-(weight @ hidden.mean(0)))
    probabilities = heads.predict(episode.frames[:-1], episode.frames[1:])
    # settings at which this model credits a few unlocks, reads health half of the time and dies mid-episode
    heads.unlock_threshold = float(np.sort(probabilities["unlock"].max(0))[-4])  # three achievements get credited
    heads.health_confidence = float(np.median(probabilities["health"].max(-1)))
    heads.death_threshold = float(np.quantile(probabilities["health"][:, 0], 0.98))
    offline = predict_rewards(heads, data, np.array([0]))
    assert offline["credited"].sum() >= 2 and offline["terminated"].any() and not offline["terminated"].all()
    death = int(np.argmax(offline["terminated"]))
    assert (offline["health_change"][:death + 1] != 0).sum() >= 2  # health changes are paid before the episode ends

    env = LearnedCrafterTermination(LearnedCrafterReward(CrafterEnv(size=SIZE, length=120), heads), heads)
    obs, _ = env.reset(seed=int(episode.episode_extras["episode_seeds"]))
    assert np.array_equal(obs, episode.frames[0])
    for t, action in enumerate(episode.actions[:-1]):
        obs, reward, terminated, truncated, info = env.step(int(action))
        assert np.array_equal(obs, episode.frames[t + 1])  # the replay is exact
        assert info["env_reward"] == pytest.approx(float(episode.rewards[t + 1]))
        assert reward == pytest.approx(offline["reward"][t], abs=1e-9)
        assert terminated == (info["env_terminated"] or bool(offline["terminated"][t]))
        if terminated or truncated:
            break
    assert t == int(np.argmax(offline["terminated"]))  # ended at the first predicted death
    with pytest.raises(ResetNeeded):
        env.step(0)


def test_credit_memory_pays_each_achievement_once_per_episode():
    heads = CrafterHeads(CrafterHeadsConfig(frame_size=(SIZE, SIZE)), unlock_threshold=0.0)
    reward = CrafterReward(heads)  # threshold 0: every achievement is detected on every step
    frames = np.zeros((2, SIZE, SIZE, 3), dtype=np.uint8)
    first = reward(frames, frames)
    second = reward(frames, frames)
    assert np.allclose(first, 1.0) and np.allclose(second, 0.0)  # same health: only the bonus, once
    assert reward.credited.all()
    reward.reset([1])
    assert np.allclose(reward(frames, frames), [0.0, 1.0])


def test_health_is_paid_between_confident_readings():
    def probs(*levels):  # one row per env: (most probable health, its probability)
        rows = np.full((len(levels), 10), 0.0)
        for row, (level, p) in zip(rows, levels):
            row[:] = (1 - p) / 9
            row[level] = p
        return rows

    tracked = np.array([-1, -1, 5])
    # env 0: previous frame sure (7) -> now sure 6: pays -1; env 1: nothing sure yet; env 2: unsure 9 is ignored
    change, tracked = track_health(tracked, probs((7, 0.99), (4, 0.5), (5, 0.99)), probs((6, 0.95), (3, 0.6),
                                                                                          (9, 0.6)), 0.9)
    assert change.tolist() == [-1, 0, 0] and tracked.tolist() == [6, -1, 5]
    # env 1's first sure reading sets its baseline without paying; env 2's sure 9 pays +4 from the last sure 5
    change, tracked = track_health(tracked, probs((6, 0.95), (3, 0.6), (9, 0.6)), probs((6, 0.99), (3, 0.97),
                                                                                        (9, 0.93)), 0.9)
    assert change.tolist() == [0, 0, 4] and tracked.tolist() == [6, 3, 9]


def test_evaluate_heads_counts_against_the_recorded_rewards(crafter_data, heads_file):
    heads = CrafterHeads.load(heads_file)
    data = load_transitions(crafter_data)
    metrics = evaluate_heads(heads, data)
    p = predict_rewards(heads, data)
    assert metrics["reward_mae"] == pytest.approx(np.abs(p["reward"] - data.rewards[p["t"]]).mean())
    assert metrics["reward_mae_zero_baseline"] == pytest.approx(np.abs(data.rewards[p["t"]]).mean())
    assert metrics["termination"]["count"] == int(data.terminated.sum())


def test_bundled_heads_are_small_and_scored():
    assert BUNDLED_HEADS.is_file(), "the dream env's bundled heads are missing (rlir train reward-head writes them)"
    assert BUNDLED_HEADS.stat().st_size < 2 * 1024 * 1024
    heads = CrafterHeads.load(BUNDLED_HEADS)
    assert heads.config.frame_size == (72, 72)
    metrics = heads.summary["metrics"]
    assert heads.summary["metrics_on"] == "heldout" and metrics["termination"]["auc"] is not None
    assert metrics["reward_mae"] < metrics["reward_mae_zero_baseline"]
    assert set(metrics["unlock_per_achievement"]) <= set(ACHIEVEMENTS)


def test_bad_inputs_raise_clear_errors(crafter_data, heads_file, tmp_path):
    heads = CrafterHeads.load(heads_file)
    with pytest.raises(FrameError, match=r"uint8\[B, 36, 36, 3\].*size"):
        heads.predict(np.zeros((1, 72, 72, 3), np.uint8), np.zeros((1, 72, 72, 3), np.uint8))
    with pytest.raises(FrameError, match="float32"):
        heads.predict_health(np.zeros((1, SIZE, SIZE, 3), np.float32))
    with pytest.raises(MissingFileError, match="rlir train reward-head"):
        CrafterHeads.load(tmp_path / "nothing.safetensors")
    from safetensors import safe_open
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="not a Crafter heads file"):
        CrafterHeads.load(tmp_path / "other.safetensors")
    narrow = tmp_path / "narrow.safetensors"
    CrafterHeads(CrafterHeadsConfig(frame_size=(SIZE, SIZE), width=8)).save(narrow)
    with safe_open(str(narrow), "pt") as f:
        meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    meta["config"] = json.dumps(CrafterHeadsConfig(frame_size=(SIZE, SIZE)).to_json())  # claims width 48
    save_file(state, str(narrow), metadata=meta)
    with pytest.raises(CheckpointError, match="do not fit"):
        CrafterHeads.load(narrow)
    # a recording without the Crafter extras, and one whose rewards contradict Crafter's formula
    episode = ShardDataset(crafter_data).episode(0)
    plain = dict(frames=episode.frames, actions=episode.actions, rewards=episode.rewards,
                 terminated=episode.terminated, episode_starts=np.array([0]))
    (tmp_path / "plain").mkdir()
    write_manifest(tmp_path / "plain", [write_shard(tmp_path / "plain" / "s.npz", **plain)])
    with pytest.raises(DataError, match="rlir record crafter"):
        load_transitions(tmp_path / "plain")
    wrong = dict(plain, rewards=episode.rewards + 0.5 * (np.arange(len(episode)) > 0), extras=episode.extras)
    (tmp_path / "wrong").mkdir()
    write_manifest(tmp_path / "wrong", [write_shard(tmp_path / "wrong" / "s.npz", **wrong)])
    with pytest.raises(DataError, match="Crafter's formula"):
        load_transitions(tmp_path / "wrong")
    with pytest.raises(DataError, match="frames but the heads take"):
        train_heads(crafter_data, tmp_path / "h.safetensors", config=CrafterHeadsConfig(), steps=1, progress=False)
